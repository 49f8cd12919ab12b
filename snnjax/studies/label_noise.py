"""Stage 5: label noise and memorization (Sol-D, Sol-F and Sol-S trained on noisy labels).

Per epoch (eval-mode BatchNorm, the whole training set unless the run's ``train_eval_size`` says
otherwise), read from each run's ``metrics.jsonl``: accuracy on the labels trained on
(``train_accuracy``, noisy ones included), clean test accuracy, accuracy on the clean training
examples and, over the noisy examples, the fractions ``correct`` (predicts the true label),
``memorized`` (predicts the noisy label) and ``other`` (neither), which sum to 1. The final
breakdown is also recomputed from the final checkpoint (``final``), over the whole training set.
"""

from __future__ import annotations

import json
import os

import numpy as np

from snnjax.studies import stages
from snnjax.train import evaluate
from snnjax.train.solution import load_solution
from snnjax.train.step import make_predict_fn

CURVE_KEYS = ("train_accuracy", "test_accuracy", "train_clean_accuracy", "train_noisy_correct",
              "train_noisy_memorized", "train_noisy_other")


def read_curves(workdir: str) -> dict:
  """``{"epoch": [...], key: [...]}`` for the keys of :data:`CURVE_KEYS` (None where missing)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  records = [r for r in records if "train_accuracy" in r]
  out = {"epoch": [r["epoch"] for r in records]}
  for k in CURVE_KEYS:
    out[k] = [r.get(k) for r in records]
  return out


def final_breakdown(solution, dataset, *, batch_size: int = 500) -> dict:
  """The memorization breakdown of ``solution`` over the whole (noisy) training set."""
  predict = make_predict_fn(solution.apply_fn)
  logits = evaluate.predict_logits(predict, solution.params, solution.batch_stats,
                                   dataset.x_train, batch_size)
  preds = logits.argmax(1)
  out = evaluate.label_noise_breakdown(preds, dataset.y_train, dataset.y_train_true,
                                       dataset.noisy)
  out["train_accuracy"] = float(np.mean(preds == dataset.y_train))
  out["num_train"] = int(dataset.num_train)
  out["effective_noise_rate"] = float(np.mean(dataset.noisy))
  test_logits = evaluate.predict_logits(predict, solution.params, solution.batch_stats,
                                        dataset.x_test, batch_size)
  out["test_accuracy"] = float(np.mean(test_logits.argmax(1) == dataset.y_test))
  return out


def analyze(runs, cache: stages.StageCache, datasets) -> dict:
  """``{run name: {"label", "curves", "final"}}`` for the noisy runs."""
  out = {}
  for spec, run in sorted(runs.items()):
    if spec.family != "noisy":
      continue
    def compute(run=run):
      dataset = datasets.get(run.config.dataset)
      return {"curves": read_curves(run.workdir),
              "final": final_breakdown(load_solution(run.workdir), dataset)}
    result = cache.cached(f"label_noise-{spec.name}", {"run": run.hash}, compute)
    out[spec.name] = {"label": spec.label, "regime": spec.regime, "seed": spec.seed, **result}
  return out
