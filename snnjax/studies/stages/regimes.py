"""The regimes stage: generalization vs optimization regime of each sparse solution.

A sparse solution is in the *generalization regime* when its train error is near the dense one
(it fits the training set as well as Sol-D; any test gap is a generalization gap) and in the
*optimization regime* when its train error is far above it (it fails to fit: an optimization
gap). "Near" means ``train_error - dense_train_error <= threshold`` (absolute, a fraction of the
train set), compared with the Sol-D of the same seed and family (settings ``config.regimes``; it reads the
table's train errors).
"""

from __future__ import annotations

import ml_collections

from snnjax.studies.stage import Stage
from snnjax.train import config_io


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True
  # The largest train-error gap to Sol-D (absolute, a fraction of the train set) still called
  # the generalization regime.
  s.threshold = 0.02
  return s


def validate(config) -> None:
  # a gap in train error: a fraction of the training set
  config_io.check_number(config.regimes.threshold, "study regimes.threshold", 0.0, 1.0)


def classify(train_error: float, dense_train_error: float, threshold: float) -> str:
  """``"generalization"`` or ``"optimization"`` (see the module doc)."""
  return "optimization" if train_error - dense_train_error > threshold else "generalization"


def classify_runs(specs, measured: dict, threshold: float) -> list[dict]:
  """One record per sparse clean run: its train error, the dense one, the gap and the regime.

  Args:
    specs: RunSpecs of the study.
    measured: ``{run name: measurement}`` holding ``train_error`` for every clean run.
    threshold: the largest gap (absolute train error) still called generalization.
  """
  out = []
  for spec in sorted(specs):
    if spec.family != "clean" or spec.regime == "dense":
      continue
    dense = measured.get(spec.dense().name)
    if dense is None or spec.name not in measured:
      continue
    err, dense_err = measured[spec.name]["train_error"], dense["train_error"]
    out.append({"run": spec.name, "label": spec.label, "regime": spec.regime,
                "sparsity": spec.sparsity, "seed": spec.seed, "train_error": err,
                "dense_train_error": dense_err, "gap": err - dense_err, "threshold": threshold,
                "classification": classify(err, dense_err, threshold)})
  return out


def compute(ctx) -> dict:
  threshold = float(ctx.config.regimes.threshold)
  return {"threshold": threshold,
          "runs": classify_runs(list(ctx.clean), ctx.results["table"]["per_run"], threshold)}


def report(rc, result) -> list[str]:
  md = ["## Regimes", "",
        f"A sparse solution is in the **optimization regime** when its train error exceeds "
        f"its Sol-D's (same seed) by more than {result['threshold']:g} "
        "(absolute), else in the **generalization regime**.", "",
        "| solution | seed | train error | Sol-D train error | gap | regime |",
        "|---|---|---|---|---|---|"]
  for r in result["runs"]:
    md.append(f"| {r['label']} | {r['seed']} | {r['train_error']:.4f} | "
              f"{r['dense_train_error']:.4f} | {r['gap']:+.4f} | {r['classification']} |")
  return md + [""]


STAGE = Stage(name="regimes", default_settings=default_settings, validate=validate,
              compute=compute, report=report, needs=("table",))
