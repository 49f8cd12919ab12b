"""The study's measurements of each run as TensorBoard scalars (study config ``tensorboard=True``).

With ``--config.tensorboard=True`` every run the study trains has ``config.tensorboard`` on (a
runtime field: no run's hash changes, cached runs are reused), so its training curves are in
``DIR/runs/<name>-<hash>/tensorboard/`` (:mod:`snnjax.train.summaries`; a run finished before
gets them from its ``metrics.jsonl``). After the stages, :func:`write_study_events` adds to that
same folder one more event file, ``summaries.STUDY_EVENTS``, with what the study measured on the
run, so that ``tensorboard --logdir DIR`` shows each run once, its curves and its curvature
together:

* the table (``table`` stage, :func:`snnjax.studies.measure.measure_solution`), at the run's
  final epoch: ``curvature/trace_fisher``, ``curvature/trace_hessian``,
  ``curvature/jacobian_norm`` (each estimate's value; ``..._stderr`` its standard error where it
  has one) and ``table/train_error``, ``table/train_accuracy``, ``table/train_loss``,
  ``table/test_accuracy``, ``table/test_loss`` (whole splits, eval-mode BatchNorm);
* the Fisher trend (``fisher_trend`` stage), at each measured epoch (0: the init):
  ``fisher_trend/trace_fisher`` (and ``fisher_trend/trace_fisher_stderr``).

The step is the epoch, the x axis of the training curves. The file is rewritten from the results
of this session's stages on every study run (a run none of them measured keeps its file).
"""

from __future__ import annotations

import os

from snnjax.train import summaries
from snnjax.train.run_dir import RunDir

# measure_solution's keys -> tags
ESTIMATE_TAGS = {"tr_f": "curvature/trace_fisher", "tr_h": "curvature/trace_hessian",
                 "jacobian": "curvature/jacobian_norm"}
TABLE_TAGS = {k: f"table/{k}" for k in ("train_error", "train_accuracy", "train_loss",
                                        "test_accuracy", "test_loss")}
TREND_TAG = "fisher_trend/trace_fisher"


def _estimate(points: list, tag: str, estimate: dict | None, step: int) -> None:
  if estimate is None or estimate.get("value") is None:
    return
  points.append((tag, float(estimate["value"]), step))
  if estimate.get("stderr") is not None:
    points.append((f"{tag}_stderr", float(estimate["stderr"]), step))


def table_points(measured: dict, final_epoch: int) -> list[tuple[str, float, int]]:
  """``(tag, value, step)`` of one run's table measurement (``results["table"]["per_run"][name]``)
  at ``final_epoch``."""
  points: list = []
  for key, tag in ESTIMATE_TAGS.items():
    _estimate(points, tag, measured.get(key), final_epoch)
  for key, tag in TABLE_TAGS.items():
    if measured.get(key) is not None:
      points.append((tag, float(measured[key]), final_epoch))
  return points


def trend_points(trend: list[dict]) -> list[tuple[str, float, int]]:
  """``(tag, value, epoch)`` of one run's Fisher trend
  (``results["fisher_trend"]["points"][name]``)."""
  points: list = []
  for p in trend:
    _estimate(points, TREND_TAG, p.get("tr_f"), int(p["epoch"]))
  return points


def run_points(results: dict, name: str, workdir: str) -> list[tuple[str, float, int]]:
  """Every scalar the study's ``results`` hold for the run ``name`` (a RunSpec's name)."""
  points: list = []
  measured = ((results.get("table") or {}).get("per_run") or {}).get(name)
  if measured is not None:
    records = RunDir(workdir).epoch_records()
    points += table_points(measured, int(records[-1]["epoch"]) if records else 0)
  trend = ((results.get("fisher_trend") or {}).get("points") or {}).get(name)
  if trend:
    points += trend_points(trend)
  return points


def write_study_events(results: dict, runs: dict, workdir: str) -> dict[str, str]:
  """Writes ``summaries.STUDY_EVENTS`` into the event folder of each run of ``runs`` (``{RunSpec:
  Run}``) that the study measured; returns ``{run name: the file, relative to workdir}``."""
  out = {}
  for spec, run in sorted(runs.items()):
    points = run_points(results, spec.name, run.workdir)
    if not points:
      continue
    path = summaries.write_file(
        os.path.join(summaries.events_dir(run.workdir), summaries.STUDY_EVENTS), points)
    out[spec.name] = os.path.relpath(path, workdir)
  return out
