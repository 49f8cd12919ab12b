"""Stage 3: generalization vs optimization regime of each sparse solution.

A sparse solution is in the *generalization regime* when its train error is near the dense one
(it fits the training set as well as Sol-D; any test gap is a generalization gap) and in the
*optimization regime* when its train error is far above it (it fails to fit: an optimization
gap). "Near" means ``train_error - dense_train_error <= threshold`` (absolute, a fraction of the
train set), compared with the Sol-D of the same seed and family.
"""

from __future__ import annotations


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
