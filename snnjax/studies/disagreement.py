"""Stage 6: where Sol-S and Sol-F disagree.

On a split, the examples whose predicted classes differ between Sol-S and Sol-F (same sparsity,
same mask, same seed): how many, their distribution over the (true) classes, and the fraction of
them each model gets right. On the long-tailed training set (the ``longtail`` family, trained on an
exponentially imbalanced train split) the tail classes are where memorization is needed; the
per-class counts are given beside the class sizes.
"""

from __future__ import annotations

import numpy as np

from snnjax.studies import stages
from snnjax.train import evaluate
from snnjax.train.solution import load_solution
from snnjax.train.step import make_predict_fn


def compare(preds_scratch: np.ndarray, preds_finetune: np.ndarray, labels: np.ndarray,
            num_classes: int) -> dict:
  """Disagreement between two prediction vectors (N,) on examples with labels (N,).

  Returns:
    ``num_examples``, ``num_disagree``, ``fraction_disagree``, ``class_counts`` (K,) of the
    disagreeing examples by label, ``class_sizes`` (K,) of all examples, and over the disagreeing
    examples the fractions ``scratch_correct``, ``finetune_correct`` and ``neither_correct``
    (they sum to 1: where the two differ, at most one is right); over all examples the accuracies
    ``scratch_accuracy`` and ``finetune_accuracy``.
  """
  preds_scratch = np.asarray(preds_scratch)
  preds_finetune = np.asarray(preds_finetune)
  labels = np.asarray(labels)
  differ = preds_scratch != preds_finetune
  n_diff = int(differ.sum())
  out = {"num_examples": int(labels.size), "num_disagree": n_diff,
         "fraction_disagree": float(differ.mean()) if labels.size else 0.0,
         "class_counts": np.bincount(labels[differ], minlength=num_classes).tolist(),
         "class_sizes": np.bincount(labels, minlength=num_classes).tolist(),
         "scratch_accuracy": float(np.mean(preds_scratch == labels)),
         "finetune_accuracy": float(np.mean(preds_finetune == labels))}
  if n_diff:
    s_ok = preds_scratch[differ] == labels[differ]
    f_ok = preds_finetune[differ] == labels[differ]
    out.update(scratch_correct=float(s_ok.mean()), finetune_correct=float(f_ok.mean()),
               neither_correct=float((~s_ok & ~f_ok).mean()))
  else:
    out.update(scratch_correct=None, finetune_correct=None, neither_correct=None)
  return out


def predictions(solution, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
  predict = make_predict_fn(solution.apply_fn)
  return evaluate.predict_logits(predict, solution.params, solution.batch_stats, x,
                                 batch_size).argmax(1)


def tail_share(counts, sizes) -> dict:
  """Share of the disagreements that falls in the smaller half of the classes (by size) beside
  that half's share of the examples; > 1 ratio = disagreements concentrate on the tail."""
  counts, sizes = np.asarray(counts, float), np.asarray(sizes, float)
  order = np.argsort(sizes, kind="stable")
  tail = order[:len(order) // 2]
  share = counts[tail].sum() / counts.sum() if counts.sum() else 0.0
  base = sizes[tail].sum() / sizes.sum() if sizes.sum() else 0.0
  return {"tail_classes": tail.tolist(), "tail_share_of_disagreements": float(share),
          "tail_share_of_examples": float(base),
          "concentration": float(share / base) if base else None}


def analyze_pair(scratch_run, finetune_run, dataset) -> dict:
  """Train (true labels) and test disagreement of one Sol-S / Sol-F pair on ``dataset``."""
  s = load_solution(scratch_run.workdir)
  f = load_solution(finetune_run.workdir)
  out = {}
  for split, x, y in (("train", dataset.x_train, dataset.y_train_true),
                      ("test", dataset.x_test, dataset.y_test)):
    result = compare(predictions(s, x), predictions(f, x), y, dataset.num_classes)
    result.update(tail_share(result["class_counts"], result["class_sizes"]))
    out[split] = result
  out["class_names"] = list(dataset.class_names) if dataset.class_names else None
  return out


def analyze(runs, sparsity: float, cache: stages.StageCache, datasets) -> dict:
  """``{"clean-seedS" / "longtail-seedS": analyze_pair(...)}`` for the runs at ``sparsity``."""
  out = {}
  by = {(s.family, s.regime, round(s.sparsity, 6), s.seed): r for s, r in runs.items()}
  for (family, regime, sp, seed), scratch in sorted(by.items()):
    if regime != "scratch" or sp != round(float(sparsity), 6) or family == "noisy":
      continue
    finetune = by.get((family, "finetune", sp, seed))
    if finetune is None:
      continue
    key = f"{family}-seed{seed}"
    def compute(scratch=scratch, finetune=finetune):
      return analyze_pair(scratch, finetune, datasets.get(scratch.config.dataset))
    out[key] = cache.cached(f"disagreement-{key}-{sp:.2f}",
                            {"scratch": scratch.hash, "finetune": finetune.hash}, compute)
    out[key]["family"], out[key]["sparsity"], out[key]["seed"] = family, sp, seed
  return out
