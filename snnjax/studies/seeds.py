"""One aggregation over seeds, for every stage that reports a value per seed.

A cell is ``{"mean", "sd", "stderr", "values"}``: the mean over seeds, their standard deviation
``sd`` (ddof=1; None with one seed: the spread between seeds is unknown), the estimator's standard
error of the mean ``stderr`` (with one seed its own; with several the root-mean-square of theirs
divided by sqrt(seeds); None when any value has none, e.g. exact values) and the values, in order.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def over_seeds(values: Sequence[float], stderrs: Sequence[float | None] = ()) -> dict | None:
  """The cell of ``values`` (one per seed) with their estimators' ``stderrs`` (or None)."""
  values = [float(v) for v in values if v is not None]
  if not values:
    return None
  arr = np.asarray(values, np.float64)
  errs = list(stderrs)
  stderr = None
  if errs and len(errs) == len(values) and all(e is not None for e in errs):
    stderr = float(np.sqrt(np.mean(np.square(errs))) / np.sqrt(len(errs)))
  return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else None,
          "stderr": stderr, "values": values}


def error_bar(cell: dict | None) -> float | None:
  """What a figure or table shows as ± for ``cell``: the sd over seeds, else the stderr."""
  if cell is None:
    return None
  return cell["sd"] if cell["sd"] is not None else cell.get("stderr")
