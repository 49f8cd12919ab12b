"""``run_study(config, workdir)``: every stage of the study, cached, then the report.

Stages, in order: ``solutions`` (train or reuse every run), ``table`` (measure each clean
solution), ``regimes``, ``sanity`` (Tr(H) vs exact Tr(F)), ``fisher_trend``, ``label_noise``,
``disagreement``, ``interpolation``, ``closing_gap`` (Sol-S variants: Fisher penalty, data
scheduling), ``report``. Each analysis result is cached under
``DIR/results`` by a hash of its inputs, each run under ``DIR/runs`` by a hash of its config
(see :mod:`snnjax.studies.stages`); a rerun reuses what is there and computes the rest.
"""

from __future__ import annotations

import os
import time

import ml_collections

from snnjax.errors import UserError
from snnjax.studies import closing_gap as closing_gap_lib
from snnjax.studies import disagreement as disagreement_lib
from snnjax.studies import fisher_trend as trend_lib
from snnjax.studies import interpolation as interpolation_lib
from snnjax.studies import label_noise as label_noise_lib
from snnjax.studies import measure as measure_lib
from snnjax.studies import regimes as regimes_lib
from snnjax.studies import report as report_lib
from snnjax.studies import sanity as sanity_lib
from snnjax.studies import solutions
from snnjax.studies import stages
from snnjax.studies import table as table_lib

STAGES = ("solutions", "table", "regimes", "sanity", "fisher_trend", "label_noise",
          "disagreement", "interpolation", "closing_gap", "report")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ``UserError`` naming the first invalid study setting."""
  def check(cond, message):
    if not cond:
      raise UserError(message)
  check(len(config.seeds) >= 1, "study seeds must name at least one seed")
  check(all(int(s) >= 0 for s in config.seeds), "study seeds must be >= 0")
  for name in ("label_noise", "disagreement", "interpolation", "closing_gap"):
    if name in config and tuple(config[name].get("seeds", ())):
      chosen = {int(s) for s in config[name].seeds}
      check(chosen <= {int(s) for s in config.seeds},
            f"study {name}.seeds must be some of the study seeds {tuple(config.seeds)}")
  check(len(config.sparsities) >= 1, "study sparsities must name at least one sparsity")
  for name, values in (("sparsities", config.sparsities),
                       ("fisher_trend.sparsities", config.fisher_trend.sparsities)):
    check(all(0.0 < float(s) < 1.0 for s in values), f"study {name} must lie in (0, 1)")
  for name in ("label_noise", "disagreement", "interpolation"):
    check(0.0 < float(config[name].sparsity) < 1.0, f"study {name}.sparsity must lie in (0, 1)")
  check(0.0 < float(config.label_noise.rate) < 1.0, "study label_noise.rate must lie in (0, 1)")
  check(config.label_noise.kind in ("uniform", "flip"),
        "study label_noise.kind must be uniform or flip")
  check(float(config.disagreement.imbalance_ratio) >= 1.0,
        "study disagreement.imbalance_ratio must be >= 1")
  check(int(config.fisher_trend.every_epochs) >= 1, "study fisher_trend.every_epochs must be >= 1")
  check(int(config.fisher_trend.num_examples) >= 1, "study fisher_trend.num_examples must be >= 1")
  check(config.fisher_trend.kind in ("mc", "exact", "empirical"),
        "study fisher_trend.kind must be mc, exact or empirical")
  check(config.fisher_trend.params in measure_lib.PARAM_SUBSETS,
        "study fisher_trend.params must be all or kernels")
  check(len(config.interpolation.alphas) >= 2, "study interpolation.alphas needs >= 2 values")
  check(all(0.0 < float(a) < 1.0 for a in config.interpolation.cosine_alphas),
        "study interpolation.cosine_alphas must lie in (0, 1) (the direction flips beyond 1)")
  check(0.0 < float(config.interpolation.top_fraction) <= 1.0,
        "study interpolation.top_fraction must lie in (0, 1]")
  check(int(config.interpolation.num_examples) >= 1,
        "study interpolation.num_examples must be >= 1")
  check(int(config.sanity.num_examples) >= 2, "study sanity.num_examples must be >= 2")
  check(float(config.regime_threshold) >= 0.0, "study regime_threshold must be >= 0")
  check(int(config.get("sparse_epochs", 0)) >= 0, "study sparse_epochs must be >= 0 (0 = as "
        "the training configs)")
  name = str(config.get("report_dir", "report"))
  check(bool(name) and os.sep not in name and name not in (".", "..", "runs", "results"),
        f"study report_dir must be a plain folder name inside the study dir, got {name!r}")
  measure_lib.validate_settings(config.measure)
  closing_gap_lib.validate(config)


def run_study(config: ml_collections.ConfigDict, workdir: str, *,
              stages_to_run: tuple[str, ...] | None = None) -> dict:
  """Runs the study of ``config`` in ``workdir``; returns every number (also in results.json).

  Args:
    config: a study config (``configs/study.py``).
    workdir: the study directory (created; reused on a rerun).
    stages_to_run: a subset of :data:`STAGES` (default all; ``solutions`` always runs, as the
      others read its runs).
  Raises:
    UserError: an invalid setting or an unusable work dir; nothing is trained before the checks.
  """
  validate(config)
  stages_to_run = tuple(STAGES if stages_to_run is None else stages_to_run)
  unknown = sorted(set(stages_to_run) - set(STAGES))
  if unknown:
    raise UserError(f"unknown stages {unknown}; choose from {STAGES}")
  workdir = os.path.abspath(workdir)
  if config.compilation_cache:
    with stages.compilation_cache(os.path.join(workdir, "jax_cache")):
      return _run(config, workdir, stages_to_run)
  return _run(config, workdir, stages_to_run)


def _run(config: ml_collections.ConfigDict, workdir: str, stages_to_run: tuple[str, ...]
         ) -> dict:
  cache = stages.StageCache(workdir)
  datasets = solutions.DatasetCache()
  specs = solutions.plan(config)
  runs = solutions.resolve(config, cache, specs)
  for run in runs.values():  # every dataset loads (or fails) before anything is trained
    datasets.get(run.config.dataset)
  wall: dict[str, float] = {}
  results: dict = {"preset": config.preset, "workdir": workdir}
  t_total = time.time()

  def timed(name, fn):
    stages.log(f"stage {name}")
    t0 = time.time()
    value = fn()
    wall[name] = time.time() - t0
    return value

  results["runs"] = timed("solutions", lambda: solutions.train_all(runs, datasets))
  results["training_configs"] = {s.name: stages.to_json(r.config) for s, r in runs.items()}
  clean = {s: r for s, r in runs.items() if s.family == "clean"}
  want = lambda name: name in stages_to_run
  measured = {}
  if want("table") or want("regimes"):
    measured = timed("table", lambda: table_lib.measure_runs(clean, config.measure, cache,
                                                             datasets))
    rows = table_lib.aggregate(list(clean), measured)
    results["table"] = {"rows": rows, "per_run": measured,
                        "scratch_above_finetune": table_lib.scratch_vs_finetune(rows),
                        "settings": stages.to_json(config.measure),
                        "settings_text": measure_lib.describe_settings(config.measure)}
  if want("regimes") and measured:
    results["regimes"] = {"threshold": float(config.regime_threshold),
                          "runs": regimes_lib.classify_runs(list(clean), measured,
                                                            float(config.regime_threshold))}
  if want("sanity") and config.sanity.enabled:
    results["sanity"] = timed("sanity", lambda: sanity_lib.analyze(clean, config.sanity, cache,
                                                                   datasets))
  if want("fisher_trend") and config.fisher_trend.enabled:
    results["fisher_trend"] = timed("fisher_trend", lambda: trend_lib.run_trend(
        clean, config.fisher_trend, cache, datasets,
        lambda s: solutions.keeps_trend_checkpoints(config, s)))
    results["fisher_trend_runs"] = {
        s.name: {"label": s.label, "regime": s.regime, "sparsity": s.sparsity, "seed": s.seed}
        for s in clean if s.name in results["fisher_trend"]}
  if want("label_noise") and config.label_noise.enabled:
    results["label_noise"] = timed("label_noise", lambda: label_noise_lib.analyze(
        runs, cache, datasets))
  if want("disagreement") and config.disagreement.enabled:
    results["disagreement"] = timed("disagreement", lambda: disagreement_lib.analyze(
        runs, float(config.disagreement.sparsity), cache, datasets))
  if want("interpolation") and config.interpolation.enabled:
    results["interpolation"] = timed("interpolation", lambda: interpolation_lib.analyze(
        clean, config.interpolation, cache, datasets))
  if want("closing_gap") and closing_gap_lib.enabled(config):
    results["closing_gap"] = timed("closing_gap", lambda: closing_gap_lib.analyze(
        config, clean, cache, datasets, measured=measured))
  wall["total_before_report"] = time.time() - t_total
  results["wall_times_s"] = wall
  results["cache"] = {"computed": [os.path.relpath(p, workdir) for p in cache.computed],
                      "reused": [os.path.relpath(p, workdir) for p in cache.reused],
                      "compute_times_s": dict(cache.compute_times)}
  results["num_classes"] = _num_classes(runs, datasets)
  if want("report"):
    stages.log("stage report")
    report_lib.write_report(config, results, report_dir(config, workdir))
  stages.log(f"done in {time.time() - t_total:.1f}s: {report_dir(config, workdir)}")
  return results


def report_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """``DIR/<config.report_dir>`` (default ``DIR/report``)."""
  return os.path.join(os.path.abspath(workdir), str(config.get("report_dir", "report")))


def _num_classes(runs, datasets) -> int:
  for spec, run in runs.items():
    if spec.family == "clean":
      return int(datasets.get(run.config.dataset).num_classes)
  return 0
