"""Has a run's training error stopped moving? The study's plateau criterion, per run.

A run has **plateaued** when its train error (eval mode, on the labels it trains on, at the
evaluated epochs of ``metrics.jsonl``) ends at most ``tol_abs`` (it has **fitted** its train set:
the error cannot fall further) or moved by at most ``max(tol_abs, tol_rel * e0)`` over the last
``window`` fraction of its epochs (it is **stuck** at a floor), ``e0`` being the error at the last
evaluation at or before epoch ``(1 - window) * num_epochs`` and the movement ``|e0 - e_final|``.
With the default ``window=0.25``, ``tol_abs=0.005``, ``tol_rel=0.1``: a run whose train error
still fell from 0.08 to 0.05 over its last quarter has not plateaued; one that went 0.09 -> 0.0
has fitted; one that went 0.31 -> 0.30 is stuck.

The criterion is a statement about the budget: a run that has not plateaued would have fitted
further with more epochs, so a comparison that uses it mixes a budget effect into the result.
A run with too few evaluations to tell is reported as not plateaued (``reason`` says why).
"""

from __future__ import annotations

from typing import Sequence

DEFAULT_WINDOW = 0.25
DEFAULT_TOL_ABS = 0.005
DEFAULT_TOL_REL = 0.1


def check(epochs: Sequence[int], train_errors: Sequence[float], num_epochs: int, *,
          window: float = DEFAULT_WINDOW, tol_abs: float = DEFAULT_TOL_ABS,
          tol_rel: float = DEFAULT_TOL_REL) -> dict:
  """The plateau verdict of one run's curve.

  Args:
    epochs: the evaluated epochs (1-based, increasing).
    train_errors: the train error at each of them (same length).
    num_epochs: the run's length; the window is its last ``window`` fraction.
    window, tol_abs, tol_rel: the criterion (see the module doc).

  Returns:
    ``{"plateaued": bool, "how": "fitted" | "stuck" | "", "from_epoch", "to_epoch",
    "error_from", "error_to", "change" (e_final - e0), "tolerance", "reason"}`` (``reason`` is ""
    for a verdict from the data).
  """
  if len(epochs) != len(train_errors):
    raise ValueError(f"{len(epochs)} epochs but {len(train_errors)} errors")
  if not 0.0 < window < 1.0:
    raise ValueError(f"window must be in (0, 1), got {window}")
  out = {"plateaued": False, "how": "", "from_epoch": None, "to_epoch": None, "error_from": None,
         "error_to": None, "change": None, "tolerance": None, "reason": ""}
  pairs = [(int(e), float(v)) for e, v in zip(epochs, train_errors) if v is not None]
  if not pairs or pairs[-1][0] != int(num_epochs):
    out["reason"] = "the final epoch was not evaluated (unfinished run?)"
    return out
  start = (1.0 - window) * num_epochs
  before = [p for p in pairs if p[0] <= start]
  if not before:
    out["reason"] = f"no evaluation at or before epoch {start:g}"
    return out
  (e0_epoch, e0), (e1_epoch, e1) = before[-1], pairs[-1]
  tolerance = max(tol_abs, tol_rel * e0)
  how = "fitted" if e1 <= tol_abs else "stuck" if abs(e1 - e0) <= tolerance else ""
  out.update(from_epoch=e0_epoch, to_epoch=e1_epoch, error_from=e0, error_to=e1,
             change=e1 - e0, tolerance=tolerance, plateaued=bool(how), how=how)
  return out


def check_records(records: Sequence[dict], num_epochs: int, **criterion) -> dict:
  """:func:`check` on the epoch records of a ``metrics.jsonl`` (``train_accuracy`` present at the
  evaluated epochs)."""
  evaluated = [r for r in records if r.get("train_accuracy") is not None]
  return check([r["epoch"] for r in evaluated], [1.0 - r["train_accuracy"] for r in evaluated],
               num_epochs, **criterion)
