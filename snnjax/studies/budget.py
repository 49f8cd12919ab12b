"""The head-start check: does the Sol-F / Sol-S gap survive once both have plateaued?

A budget sweep reruns the table's comparison at one sparsity with the sparse runs' epochs scaled
(``configs/study.py:<base>_budget`` with ``sparse_epochs=E``: Sol-D unchanged, Sol-F and Sol-S
each ``E`` epochs, their schedules rescaled), each budget a study report of its own in
``DIR/report-epochs<E>``, the runs shared with the base study where a budget equals its own.
:func:`summarize` reads those reports back into one table: per budget and seed, Sol-F's and
Sol-S's test accuracy, train error and plateau verdict (:mod:`snnjax.studies.plateau`), the gap
and its spread over seeds, and whether the gap is beyond the spread at the budgets where every
run plateaued.
"""

from __future__ import annotations

import os
import statistics
from typing import Callable, Sequence

from snnjax.errors import UserError
from snnjax.studies import cache as cache_lib


def report_dir_name(epochs: int) -> str:
  return f"report-epochs{int(epochs)}"


def sweep_config(base_config, epochs: int, seeds: Sequence[int] = ()):
  """The ``<base>_budget`` study config at ``epochs`` sparse epochs (and ``seeds`` if given)."""
  config = base_config.copy_and_resolve_references()
  config.sparse_epochs = int(epochs)
  config.report_dir = report_dir_name(epochs)
  if seeds:
    config.seeds = tuple(int(s) for s in seeds)
  return config


def run_sweep(base_config, workdir: str, epochs: Sequence[int], *, seeds: Sequence[int] = (),
              run_study: Callable | None = None, log=cache_lib.log) -> dict:
  """Runs the budget study at each of ``epochs`` in ``workdir`` and returns :func:`summarize`."""
  if not epochs or any(int(e) < 1 for e in epochs):
    raise UserError(f"budget sweep: epochs must be positive integers, got {tuple(epochs)}")
  if run_study is None:
    from snnjax.studies.study import run_study  # pylint: disable=import-outside-toplevel
  for e in epochs:
    log(f"budget sweep: sparse runs at {e} epochs")
    run_study(sweep_config(base_config, e, seeds), workdir)
  return summarize(workdir, epochs)


def _per_seed(results: dict) -> dict:
  """``{seed: {regime: {...}}}`` of the sparse clean runs of one budget report."""
  measured = results["table"]["per_run"]
  plateau = {p["run"]: p for p in (results.get("regimes") or {}).get("plateau", [])}
  out: dict = {}
  for row in results["table"]["rows"]:
    if row["regime"] not in ("finetune", "scratch"):
      continue
    for seed, name in zip(row["seeds"], row["runs"]):
      m = measured[name]
      p = plateau.get(name, {})
      out.setdefault(seed, {})[row["regime"]] = {
          "run": name, "test_accuracy": m["test_accuracy"], "train_error": m["train_error"],
          "plateaued": p.get("plateaued"), "plateau_change": p.get("change"),
          "tr_f": (m.get("tr_f") or {}).get("value")}
  return out


def summarize(workdir: str, epochs: Sequence[int]) -> dict:
  """The sweep's table from ``DIR/report-epochs<E>/results.json`` for each budget found."""
  budgets = []
  for e in sorted(int(x) for x in epochs):
    path = os.path.join(workdir, report_dir_name(e), "results.json")
    if not os.path.isfile(path):
      continue
    results = cache_lib.read_json(path)
    seeds = []
    for seed, regimes in sorted(_per_seed(results).items()):
      if "finetune" not in regimes or "scratch" not in regimes:
        continue
      f, s = regimes["finetune"], regimes["scratch"]
      seeds.append({"seed": seed, "finetune": f, "scratch": s,
                    "gap": f["test_accuracy"] - s["test_accuracy"],
                    "all_plateaued": bool(f["plateaued"] and s["plateaued"])})
    gaps = [x["gap"] for x in seeds]
    f_acc = [x["finetune"]["test_accuracy"] for x in seeds]
    s_acc = [x["scratch"]["test_accuracy"] for x in seeds]
    budgets.append({
        "epochs": e, "seeds": seeds,
        "gap_mean": statistics.fmean(gaps) if gaps else None,
        "gap_sd": statistics.stdev(gaps) if len(gaps) > 1 else None,
        # Beyond the spread: every seed's Sol-S below every seed's Sol-F (ranges do not overlap).
        "separated": bool(seeds) and max(s_acc) < min(f_acc),
        "all_plateaued": bool(seeds) and all(x["all_plateaued"] for x in seeds)})
  plateaued = [b for b in budgets if b["all_plateaued"]]
  verdict = ("no budget where every run plateaued" if not plateaued else
             "the gap survives at every budget where both plateaued"
             if all(b["separated"] for b in plateaued) else
             "the gap is within the seed spread at a budget where both plateaued")
  return {"budgets": budgets, "verdict": verdict}


def markdown(summary: dict) -> list[str]:
  """The sweep's table and verdict as Markdown lines."""
  md = ["| sparse epochs | seed | Sol-F test acc | Sol-S test acc | gap (F - S) | Sol-F train err "
        "| Sol-S train err | plateaued (F / S) |", "|---|---|---|---|---|---|---|---|"]
  for b in summary["budgets"]:
    for x in b["seeds"]:
      f, s = x["finetune"], x["scratch"]
      yes = lambda p: "yes" if p else "**no**"
      md.append(f"| {b['epochs']} | {x['seed']} | {f['test_accuracy']:.4f} | "
                f"{s['test_accuracy']:.4f} | {x['gap']:+.4f} | {f['train_error']:.4f} | "
                f"{s['train_error']:.4f} | {yes(f['plateaued'])} / {yes(s['plateaued'])} |")
    if b["gap_mean"] is not None:
      sd = f" ± {b['gap_sd']:.4f} (sd)" if b["gap_sd"] is not None else ""
      md.append(f"| {b['epochs']} | mean | | | **{b['gap_mean']:+.4f}{sd}** | | | "
                f"{'all' if b['all_plateaued'] else 'not all'}; "
                f"{'beyond' if b['separated'] else 'within'} the seed spread |")
  md += ["", f"Verdict: {summary['verdict']}."]
  return md
