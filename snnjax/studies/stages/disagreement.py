"""The disagreement stage: where Sol-S and Sol-F disagree.

On a split, the examples whose predicted classes differ between Sol-S and Sol-F (same sparsity,
same mask, same seed): how many, their distribution over the (true) classes, and the fraction of
them each model gets right. On the long-tailed training set (the ``longtail`` family, trained on an
exponentially imbalanced train split) the tail classes are where memorization is needed; the
per-class counts are given beside the class sizes. The stage owns the ``longtail`` family of
runs (settings ``config.disagreement``). With ``study.sol_r`` each Sol-R (RigL from the same Init-S
and mask) is compared with the same Sol-F too (keys ``<family>-rigl-seed<s>``); the findings read
the Sol-S pairs.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from snnjax.errors import UserError
from snnjax.studies import figures
from snnjax.studies import findings as findings_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies.markdown import fmt
from snnjax.studies.stage import Stage
from snnjax.train.run_dir import RunDir


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True
  s.sparsity = 0.96             # the study used 0.97 (CIFAR-100)
  s.long_tailed = True          # also the longtail family: Sol-D / Sol-F / Sol-S on a long tail
  s.imbalance_ratio = 10.0      # largest / smallest class of the long-tailed train set
  s.seeds = ()                  # seeds of the long-tailed runs (() = every study seed)
  return s


def validate(config) -> None:
  d = config.disagreement
  if not 0.0 < float(d.sparsity) < 1.0:
    raise UserError("study disagreement.sparsity must lie in (0, 1)")
  if float(d.imbalance_ratio) < 1.0:
    raise UserError("study disagreement.imbalance_ratio must be >= 1")


def plan(config) -> set:
  d = config.disagreement
  regimes = runs_lib.sparse_regimes(config)
  out = runs_lib.sparse_runs([d.sparsity], config.seeds, regimes=regimes)
  if d.long_tailed:
    out |= runs_lib.sparse_runs([d.sparsity], runs_lib.stage_seeds(config, "disagreement"),
                                family="longtail", regimes=regimes)
  return out


def adjust_run(study, spec, config) -> None:
  if spec.family == "longtail":
    config.dataset.imbalance_ratio = float(study.disagreement.imbalance_ratio)


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
  s = RunDir(scratch_run.workdir).solution()
  f = RunDir(finetune_run.workdir).solution()
  out = {}
  for split, x, y in (("train", dataset.x_train, dataset.y_train_true),
                      ("test", dataset.x_test, dataset.y_test)):
    result = compare(s.predict(x).argmax(1), f.predict(x).argmax(1), y, dataset.num_classes)
    result.update(tail_share(result["class_counts"], result["class_sizes"]))
    out[split] = result
  out["class_names"] = list(dataset.class_names) if dataset.class_names else None
  return out


# The sparse-from-init regimes compared with Sol-F, and the infix of their pairs' keys.
SPARSE_SIDE = {"scratch": "", "rigl": "rigl-"}


def _pairs(runs, sparsity: float) -> list:
  """``[(key, family, sparsity, seed, Sol-S (or Sol-R) run, Sol-F run)]`` of the clean and
  longtail families at ``sparsity``: keys ``clean-seed0`` (Sol-S), ``clean-rigl-seed0`` (Sol-R)."""
  by = {(s.family, s.regime, round(s.sparsity, 6), s.seed): r for s, r in runs.items()}
  out = []
  for (family, regime, sp, seed), scratch in sorted(by.items()):
    if regime not in SPARSE_SIDE or sp != round(float(sparsity), 6) or family == "noisy":
      continue
    finetune = by.get((family, "finetune", sp, seed))
    if finetune is not None:
      out.append((f"{family}-{SPARSE_SIDE[regime]}seed{seed}", family, sp, seed, scratch,
                  finetune))
  return out


def _side(r: dict) -> str:
  """``Sol-S`` or ``Sol-R``: the solution compared with Sol-F in a pair's result."""
  return "Sol-R" if r.get("regime") == "rigl" else "Sol-S"


def compute(ctx) -> dict:
  """``{"clean-seedS" / "longtail-seedS": analyze_pair(...)}`` at the stage's sparsity."""
  out = {}
  for key, family, sp, seed, scratch, finetune in _pairs(ctx.runs,
                                                          ctx.config.disagreement.sparsity):
    def compute_one(scratch=scratch, finetune=finetune):
      return analyze_pair(scratch, finetune, ctx.dataset(scratch))
    out[key] = ctx.cache.cached(f"disagreement-{key}-{sp:.2f}",
                                {"scratch": scratch.hash, "finetune": finetune.hash}, compute_one)
    out[key]["family"], out[key]["sparsity"], out[key]["seed"] = family, sp, seed
    out[key]["regime"] = scratch.spec.regime
  return out


def disagreement_figure(results: dict, path: str) -> str:
  """Per key (balanced / long-tailed) and split: class distribution of the disagreements (bars)
  beside the class sizes (line, right axis), and the fraction each model gets right."""
  keys = sorted(results)
  fig, axes = figures.plt.subplots(len(keys), 3, figsize=(15, 3.4 * len(keys)), squeeze=False)
  for row, key in zip(axes, keys):
    r = results[key]
    names = r.get("class_names")
    for ax, split in zip(row[:2], ("train", "test")):
      s = r[split]
      k = len(s["class_counts"])
      ax.bar(np.arange(k), s["class_counts"], color="#9467bd", label="disagreements")
      ax.set_xlabel("class (true label)")
      ax.set_ylabel(f"examples where {_side(r)} != Sol-F")
      ax.set_title(f"{key}, {split}: {s['num_disagree']} of {s['num_examples']} "
                   f"({100 * s['fraction_disagree']:.1f}%)")
      if names and k <= 20:
        ax.set_xticks(np.arange(k))
        ax.set_xticklabels(names, rotation=60, fontsize=7)
      twin = ax.twinx()
      twin.plot(np.arange(k), s["class_sizes"], color="#2ca02c", marker=".", label="class size")
      twin.set_ylabel("examples in the class")
      twin.set_ylim(bottom=0)
    ax = row[2]
    splits = ("train", "test")
    width = 0.27
    for j, (field, label, color) in enumerate(
        (("scratch_correct", f"{_side(r)} right", figures.COLORS[r.get("regime", "scratch")]),
         ("finetune_correct", "Sol-F right", figures.COLORS["finetune"]),
         ("neither_correct", "neither right", "#7f7f7f"))):
      vals = [r[s][field] or 0.0 for s in splits]
      ax.bar(np.arange(2) + (j - 1) * width, vals, width, color=color, label=label)
    ax.set_xticks(np.arange(2))
    ax.set_xticklabels(splits)
    ax.set_ylabel("fraction of the disagreements")
    ax.set_ylim(0, 1)
    ax.set_title(f"{key}: who is right where they differ")
    ax.legend(loc="best")
  return figures.save(fig, path)


def report(rc, result) -> list[str]:
  if not result:
    return []
  path = disagreement_figure(result, os.path.join(rc.outdir, "disagreement.png"))
  d = rc.config.disagreement
  md = ["## Disagreement between Sol-S and Sol-F", "",
        f"Sparsity {d.sparsity:.2f}; `clean`: the balanced train set, "
        f"`longtail`: a long-tailed train set (imbalance ratio "
        f"{d.imbalance_ratio:g}) with its own Sol-D / Sol-F / Sol-S. Classes "
        "by true label.", "",
        *(["Rows `*-rigl-*` compare Sol-R (RigL from the same Init-S and mask) with Sol-F, "
           "under the Sol-S headings.", ""] if any(_side(r) == "Sol-R" for r in result.values())
          else []),
        "| setup | split | disagree | Sol-S right | Sol-F right | neither | Sol-S acc | "
        "Sol-F acc | tail share (disagree / examples) |",
        "|---|---|---|---|---|---|---|---|---|"]
  for key, r in sorted(result.items()):
    for split in ("train", "test"):
      s = r[split]
      md.append(f"| {key} | {split} | {s['num_disagree']} / {s['num_examples']} | "
                f"{fmt(s['scratch_correct'])} | {fmt(s['finetune_correct'])} | "
                f"{fmt(s['neither_correct'])} | {fmt(s['scratch_accuracy'])} | "
                f"{fmt(s['finetune_accuracy'])} | {fmt(s['tail_share_of_disagreements'], 2)}"
                f" / {fmt(s['tail_share_of_examples'], 2)} |")
  return md + ["", f"![disagreement]({os.path.basename(path)})", ""]


def findings(rc, result) -> list[dict]:
  """Disagreements concentrate on the tail (long-tailed set); Sol-F right more often (test)."""
  result = result or {}
  out = []
  result = {k: v for k, v in result.items() if v.get("regime", "scratch") == "scratch"}
  lt = [v for k, v in result.items() if k.startswith("longtail")]
  if lt:
    t = lt[0]["train"]
    ok = t["concentration"] is not None and t["concentration"] > 1.0
    out.append(findings_lib.finding(
        "disagreement_tail",
        "Sol-S and Sol-F disagree mostly on long-tailed / hard examples (long-tailed train set: "
        "tail classes over-represented among the disagreements)",
        "CIFAR-100 at 0.97: concentrated on the people classes (long-tailed, hard)",
        f"tail share of disagreements {t['tail_share_of_disagreements']:.2f} vs of examples "
        f"{t['tail_share_of_examples']:.2f}", findings_lib.verdict(ok)))
  bal = [v for k, v in result.items() if k.startswith("clean")]
  if bal:
    t = bal[0]["test"]
    ok = (t["finetune_correct"] is not None and t["scratch_correct"] is not None
          and t["finetune_correct"] > t["scratch_correct"])
    out.append(findings_lib.finding(
        "disagreement_who_right",
        "where they disagree on the test set, Sol-F is right more often than Sol-S",
        "implied by the accuracy gap",
        f"F right {findings_lib.percent(t['finetune_correct'])}, S right "
        f"{findings_lib.percent(t['scratch_correct'])} of {t['num_disagree']} test disagreements",
        findings_lib.verdict(ok)))
  return out


def estimate(costs) -> float:
  seconds = 0.0
  for key, family, sp, seed, scratch, finetune in _pairs(costs.runs,
                                                          costs.config.disagreement.sparsity):
    if not costs.has(f"disagreement-{key}-{sp:.2f}", scratch.hash, finetune.hash):
      d, _, f = costs.unit(scratch.spec.name)
      seconds += 2 * (d.num_train + d.num_test) * f
  return seconds


STAGE = Stage(name="disagreement", default_settings=default_settings, validate=validate,
              plan=plan, compute=compute, report=report, findings=findings, estimate=estimate,
              adjust_run=adjust_run)
