"""Stage 2: the study's table. Each clean solution measured, then aggregated over seeds.

Per row (a regime and sparsity): train error, test accuracy, Tr(F), Tr(H) and the Jacobian norm.
With one seed each value carries its estimator's standard error; with several seeds the mean over
seeds and their standard deviation (the spread of the solutions, which includes the estimators'
noise). ``scratch_above_finetune`` marks, per sparsity and metric, whether Sol-S exceeds Sol-F.
"""

from __future__ import annotations

import numpy as np

from snnjax.studies import measure as measure_lib
from snnjax.studies import stages
from snnjax.train.solution import load_solution

METRICS = ("train_error", "test_accuracy", "tr_f", "tr_h", "jacobian")
ESTIMATES = ("tr_f", "tr_h", "jacobian")


def measure_runs(runs, settings, cache: stages.StageCache, datasets) -> dict:
  """``{run name: measure_solution(...) result}`` for ``runs`` (a dict RunSpec -> Run), cached per
  run by (run hash, settings)."""
  out = {}
  for spec, run in sorted(runs.items()):
    def compute(run=run):
      solution = load_solution(run.workdir)
      dataset = datasets.get(run.config.dataset)
      return measure_lib.measure_solution(
          solution, dataset, settings, log=lambda m, n=spec.name: stages.log(f"table: {n}: {m}"))
    out[spec.name] = cache.cached(f"measure-{spec.name}",
                                  {"run": run.hash, "settings": settings}, compute)
  return out


def _value(m: dict, metric: str) -> tuple[float | None, float | None]:
  if metric in ESTIMATES:
    est = m.get(metric)
    if est is None:
      return None, None
    return est["value"], est["stderr"]
  return m[metric], None


def aggregate(specs, measured: dict) -> list[dict]:
  """Rows of the table, one per (regime, sparsity) over seeds, dense first.

  Each metric gives ``{"mean", "spread", "stderr", "values", "spread_kind"}``: ``spread`` is the
  standard deviation over seeds (None with one seed); ``stderr`` the estimator's standard error
  (with one seed; with several, the root-mean-square of theirs divided by sqrt(seeds)).
  """
  groups: dict[tuple, list] = {}
  for spec in specs:
    if spec.family != "clean":
      continue
    groups.setdefault((spec.regime, spec.sparsity), []).append(spec)
  order = {"dense": 0, "finetune": 1, "scratch": 2}
  rows = []
  for (regime, sparsity), members in sorted(groups.items(),
                                            key=lambda kv: (kv[0][1], order[kv[0][0]])):
    row = {"regime": regime, "sparsity": sparsity, "label": members[0].label,
           "seeds": [s.seed for s in members], "runs": [s.name for s in members]}
    for metric in METRICS:
      values, errs = [], []
      for s in members:
        v, e = _value(measured[s.name], metric)
        if v is not None:
          values.append(v)
          errs.append(e)
      if not values:
        row[metric] = None
        continue
      arr = np.asarray(values, np.float64)
      spread = float(arr.std(ddof=1)) if arr.size > 1 else None
      known = [e for e in errs if e is not None]
      stderr = (float(np.sqrt(np.mean(np.square(known))) / np.sqrt(len(known)))
                if len(known) == len(errs) and known else None)
      row[metric] = {"mean": float(arr.mean()), "spread": spread, "stderr": stderr,
                     "values": values}
    rows.append(row)
  return rows


def scratch_vs_finetune(rows: list[dict]) -> dict:
  """Per sparsity and metric, whether Sol-S exceeds Sol-F (means): ``{sparsity: {metric: bool}}``."""
  by = {(r["regime"], r["sparsity"]): r for r in rows}
  out = {}
  for (regime, sparsity), r in by.items():
    if regime != "scratch" or ("finetune", sparsity) not in by:
      continue
    f = by[("finetune", sparsity)]
    out[f"{sparsity:.2f}"] = {
        m: (r[m] is not None and f[m] is not None and r[m]["mean"] > f[m]["mean"])
        for m in METRICS}
  return out
