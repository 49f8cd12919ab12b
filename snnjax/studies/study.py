"""``run_study(config, workdir)``: train the runs every stage needs, run the stages, write the report.

The stages are :data:`snnjax.studies.stages.REGISTRY`, in order (see :mod:`snnjax.studies.stage`
for what a stage is). ``solutions`` trains (or reuses, or resumes) the union of the enabled
stages' planned runs under ``DIR/runs``; then each enabled stage computes its result (cached under
``DIR/results`` by the hash of its inputs) and the report concatenates their sections. A rerun
reuses what is there and computes the rest.
"""

from __future__ import annotations

import os
import tempfile
import time

import ml_collections

from snnjax.errors import UserError, check
from snnjax.studies import cache as cache_lib
from snnjax.studies import events as events_lib
from snnjax.studies import report as report_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies import stages as stages_lib
from snnjax.studies.stage import Context
from snnjax.train import config_io
from snnjax.train import lock as lock_lib
from snnjax.train import summaries

STAGES = ("solutions",) + stages_lib.NAMES + ("report",)


def default_config() -> ml_collections.ConfigDict:
  """A study config with every stage's default settings (``configs/study.py`` starts here)."""
  config = ml_collections.ConfigDict()
  config.preset = "custom"
  config.seeds = (0,)
  config.sparsities = (0.90, 0.94, 0.96)
  config.configs_dir = ""
  # > 0: every sparse run (Sol-F, Sol-S) trains this many epochs, its lr schedule rescaled to the
  # same fractions of the run (Sol-D keeps its own); 0 = the training configs' epochs.
  config.sparse_epochs = 0
  # Sol-R: RigL from Init-S (Sol-S's init and mask, as many epochs) beside Sol-S in the table,
  # regimes, label noise, disagreement and closing the gap; the dynamic_sparsity stage reads it.
  config.sol_r = False
  config.report_dir = "report"              # DIR/<report_dir>: report.md, figures, results.json
  # JAX's persistent compilation cache in DIR/jax_cache (runs share programs; saves compiles).
  config.compilation_cache = True
  # TensorBoard event files (needs tensorboardX): every run's training curves in its work dir's
  # tensorboard/ (the runs' config.tensorboard, not part of their identity) and the study's
  # measurements of each run beside them (snnjax.studies.events); `tensorboard --logdir DIR`.
  config.tensorboard = False
  config.train = ml_collections.ConfigDict()
  for regime, path in (("dense", "dense.py"), ("finetune", "finetune95.py"),
                       ("scratch", "scratch95.py"), ("rigl", "rigl95.py")):
    config.train[f"clean_{regime}"] = path
    config.train[f"noisy_{regime}"] = f"{path}:noisy"
  config.train.overrides = ml_collections.ConfigDict()
  config.train.progress = False             # per-epoch lines of each run on stderr
  for stage in stages_lib.REGISTRY:
    config[stage.key] = stage.default_settings()
  config.departures = ()                    # departures from the study's protocol (reported)
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ``UserError`` naming the first invalid study setting (the study's own, then each
  stage's)."""
  check(isinstance(config.seeds, (tuple, list)) and len(config.seeds) >= 1,
        "study seeds must name at least one seed")
  for s in config.seeds:
    config_io.check_int(s, "study seeds", 0, config_io.MAX_SEED)
  check(isinstance(config.sparsities, (tuple, list)) and len(config.sparsities) >= 1,
        "study sparsities must name at least one sparsity")
  for s in config.sparsities:
    config_io.check_number(s, "study sparsities", 0.0, 1.0, low_open=True, high_open=True)
  config_io.check_int(config.get("sparse_epochs", 0), "study sparse_epochs", 0,
                      config_io.MAX_EPOCHS)
  name = str(config.get("report_dir", "report"))
  check(bool(name) and os.sep not in name and name not in (".", "..", "runs", "results"),
        f"study report_dir must be a plain folder name inside the study dir, got {name!r}")
  config_io.check_numbers(config, "study")  # no NaN, inf or 20-digit integer anywhere
  config_io.check_types(config, default_config(), "study")  # each setting of its default's kind
  summaries.check_available(config)  # tensorboard=True without tensorboardX: refused up front
  for stage in stages_lib.REGISTRY:
    check(stage.key in config, f"the study config has no {stage.key} settings (stage "
          f"{stage.name}); start from snnjax.studies.study.default_config()")
    settings = config[stage.key]
    if tuple(settings.get("seeds", ())):
      chosen = {int(s) for s in settings.seeds}
      check(chosen <= {int(s) for s in config.seeds},
            f"study {stage.key}.seeds must be some of the study seeds {tuple(config.seeds)}")
    try:
      stage.validate(config)
    except UserError:
      raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
      raise UserError(f"study {stage.key}: a setting of the wrong kind ({type(e).__name__}: "
                      f"{' '.join(str(e).split())})") from e
  validate_training_configs(config)


def validate_training_configs(config: ml_collections.ConfigDict) -> None:
  """Every run the enabled stages plan gets a valid training config: each ``train.*`` spec loads,
  is a config of its slot's regime (no finetune or scratch config in a dense slot, nor the reverse)
  and, with ``train.overrides`` and the stages' hooks applied, passes
  ``config_io.validate_config``: known before anything is written."""
  from snnjax import models  # pylint: disable=import-outside-toplevel
  loaded = {}
  for spec in plan(config):
    key = f"{'noisy' if spec.family == 'noisy' else 'clean'}_{spec.regime}"
    if key not in loaded:
      check(key in config.train, f"study train.{key} is not set: name the training config of "
            f"{spec.label}")
      slot = runs_lib.load_slot_config(config, key)
      check(slot.get("regime") == spec.regime,
            f"study train.{key}={config.train[key]} is a {slot.get('regime')} config; the "
            f"{key} slot takes a {spec.regime} config")
      loaded[key] = True
    # A placeholder Sol-D (an existing directory): the real one is only known when planned.
    train_config = training_config(config, spec, dense_workdir=tempfile.gettempdir())
    try:
      config_io.validate_config(train_config, models.model_names())
    except UserError as e:
      raise UserError(f"study run {spec.name} ({config.train[key]}): {e}") from e


def plan(config: ml_collections.ConfigDict) -> list:
  """Every run the enabled stages need (:func:`snnjax.studies.runs.plan`)."""
  return runs_lib.plan(config, stages_lib.REGISTRY)


def training_config(config: ml_collections.ConfigDict, spec, dense_workdir: str = ""
                    ) -> ml_collections.ConfigDict:
  """The training config of the run ``spec`` (:func:`snnjax.studies.runs.training_config` with
  every stage's hooks)."""
  return runs_lib.training_config(config, spec, dense_workdir, adjust=stages_lib.run_hooks())


def resolve(config: ml_collections.ConfigDict, cache: cache_lib.StageCache) -> dict:
  """``{RunSpec: Run}`` of :func:`plan`, with every stage's hooks on the training configs."""
  return runs_lib.resolve(config, cache, plan(config), adjust=stages_lib.run_hooks())


def run_study(config: ml_collections.ConfigDict, workdir: str, *,
              stages_to_run: tuple[str, ...] | None = None) -> dict:
  """Runs the study of ``config`` in ``workdir``; returns every number (also in results.json).

  Args:
    config: a study config (``configs/study.py``).
    workdir: the study directory (created; reused on a rerun).
    stages_to_run: a subset of :data:`STAGES` (default all; ``solutions`` always runs, as the
      others read its runs; a stage runs the stages it needs too).
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
    with cache_lib.compilation_cache(os.path.join(workdir, "jax_cache")):
      return _run(config, workdir, stages_to_run)
  return _run(config, workdir, stages_to_run)


def _selected(config, stages_to_run) -> list:
  """The enabled stages asked for, with the stages they need, in registry order."""
  wanted = {name for name in stages_to_run if name in stages_lib.NAMES}
  for stage in reversed(stages_lib.REGISTRY):
    if stage.name in wanted:
      wanted |= set(stage.needs)
  return [s for s in stages_lib.REGISTRY if s.name in wanted and s.enabled(config)]


def _run(config: ml_collections.ConfigDict, workdir: str, stages_to_run: tuple[str, ...]
         ) -> dict:
  cache = cache_lib.StageCache(workdir)
  datasets = runs_lib.DatasetCache()
  runs = resolve(config, cache)
  for run in runs.values():  # every dataset loads (or fails) before anything is trained
    datasets.get(run.config.dataset)
  wall: dict[str, float] = {}
  results: dict = {"preset": config.preset, "workdir": workdir}
  t_total = time.time()

  def timed(name, fn):
    cache_lib.log(f"stage {name}")
    t0 = time.time()
    value = fn()
    wall[name] = time.time() - t0
    return value

  results["runs"] = timed("solutions", lambda: runs_lib.train_all(runs.values(), datasets))
  results["training_configs"] = {s.name: cache_lib.to_json(r.config) for s, r in runs.items()}
  ctx = Context(config, cache, datasets, runs, results)
  for stage in _selected(config, stages_to_run):
    results[stage.name] = timed(stage.name, lambda stage=stage: stage.compute(ctx))
  wall["total_before_report"] = time.time() - t_total
  results["wall_times_s"] = wall
  results["cache"] = {"computed": [os.path.relpath(p, workdir) for p in cache.computed],
                      "reused": [os.path.relpath(p, workdir) for p in cache.reused],
                      "compute_times_s": dict(cache.compute_times)}
  results["num_classes"] = _num_classes(runs, datasets)
  if summaries.enabled(config):
    results["tensorboard"] = events_lib.write_study_events(results, runs, workdir)
  if "report" in stages_to_run:
    cache_lib.log("stage report")
    out = report_dir(config, workdir)
    os.makedirs(out, exist_ok=True)
    with lock_lib.hold(os.path.join(out, "report.lock"), wait=True):  # one writer at a time
      report_lib.write_report(config, results, out)
  cache_lib.log(f"done in {time.time() - t_total:.1f}s: {report_dir(config, workdir)}")
  return results


def report_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """``DIR/<config.report_dir>`` (default ``DIR/report``)."""
  return os.path.join(os.path.abspath(workdir), str(config.get("report_dir", "report")))


def _num_classes(runs, datasets) -> int:
  for spec, run in runs.items():
    if spec.family == "clean":
      return int(datasets.get(run.config.dataset).num_classes)
  return 0
