"""Stage 1 of a study: the training runs (Sol-D, Sol-F, Sol-S) it needs, planned and trained.

A run is named by a :class:`RunSpec`: its family (``clean``: the table and analyses; ``noisy``:
label noise; ``longtail``: the clean setup on a long-tailed train set, for disagreement), its
regime (``dense``, ``finetune``, ``scratch``), sparsity and seed. Its training config is the
family's config spec from the study config with the study's settings applied
(:func:`training_config`); its work dir is ``DIR/runs/<name>-<hash of that config>``. Sparse runs
name their Sol-D work dir in ``dense_workdir``, so a change to Sol-D changes their hash too.
Sol-S uses the very mask of Sol-F (global magnitude pruning of the same Sol-D), from a fresh init.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Iterable

import ml_collections

from snnjax import data as data_lib
from snnjax.errors import UserError
from snnjax.studies import stages
from snnjax.train import config_io

FAMILIES = ("clean", "noisy", "longtail")
REGIMES = ("dense", "finetune", "scratch")
LABELS = {"dense": "Sol-D", "finetune": "Sol-F", "scratch": "Sol-S"}


@dataclasses.dataclass(frozen=True, order=True)
class RunSpec:
  """One training run of the study."""

  family: str
  regime: str
  sparsity: float
  seed: int

  @property
  def name(self) -> str:
    sp = "" if self.regime == "dense" else f"-{self.sparsity:.2f}"
    return f"{self.family}-{self.regime}{sp}-seed{self.seed}"

  @property
  def label(self) -> str:
    """E.g. ``Sol-F 0.90`` (the study's names)."""
    sp = "" if self.regime == "dense" else f" {self.sparsity:.2f}"
    return f"{LABELS[self.regime]}{sp}"

  def dense(self) -> "RunSpec":
    """The Sol-D run this run starts from (itself for a dense run)."""
    return RunSpec(self.family, "dense", 0.0, self.seed)


def _merge(config: ml_collections.ConfigDict, overrides, path: str = "") -> None:
  """Merges the nested dict ``overrides`` into ``config``; new keys only under ``*.kwargs``."""
  for key, value in dict(overrides).items():
    where = f"{path}{key}"
    if key not in config and not path.endswith("kwargs."):
      raise UserError(f"study train.overrides: the training config has no field {where!r}")
    if isinstance(value, (dict, ml_collections.ConfigDict)) and key in config:
      _merge(config[key], value, where + ".")
    else:
      with config.ignore_type():
        config[key] = value


def _trend_sparsities(study: ml_collections.ConfigDict) -> set:
  if not study.fisher_trend.enabled:
    return set()
  return {round(float(s), 6) for s in study.fisher_trend.sparsities}


def rescale_epochs(config: ml_collections.ConfigDict, num_epochs: int) -> None:
  """Sets ``config.num_epochs`` and moves the lr boundaries (and warmup) to the same fractions of
  the new run: boundary b of an E-epoch run goes to round(b * num_epochs / E), kept inside it."""
  old = int(config.num_epochs)
  scale = num_epochs / old
  bounds = sorted({min(num_epochs - 1, max(1, round(b * scale)))
                   for b in config.optim.boundaries_epochs}) if num_epochs > 1 else []
  config.num_epochs = int(num_epochs)
  config.optim.boundaries_epochs = tuple(bounds)
  config.optim.warmup_epochs = float(config.optim.warmup_epochs) * scale


def closing_gap_sparsity(study: ml_collections.ConfigDict) -> float | None:
  """The sparsity of the closing-the-gap stage (None when it is off): ``closing_gap.sparsity``,
  or with 0 there the middle of ``study.sparsities``."""
  if "closing_gap" not in study or not study.closing_gap.enabled:
    return None
  if float(study.closing_gap.sparsity) > 0.0:
    return round(float(study.closing_gap.sparsity), 6)
  ordered = sorted(round(float(s), 6) for s in study.sparsities)
  return ordered[len(ordered) // 2]


def stage_seeds(study: ml_collections.ConfigDict, stage: str) -> tuple[int, ...]:
  """The seeds a stage uses: ``study.<stage>.seeds`` where set (non-empty), else ``study.seeds``.

  The table always uses every study seed; an analysis can use fewer (a budget preset trains its
  label-noise, long-tailed and closing-the-gap runs for one seed only).
  """
  chosen = tuple(study[stage].get("seeds", ())) if stage in study else ()
  return tuple(int(s) for s in (chosen or study.seeds))


def keeps_trend_checkpoints(study: ml_collections.ConfigDict, spec: RunSpec) -> bool:
  """Whether the run keeps a checkpoint every ``fisher_trend.every_epochs`` epochs.

  Independent of ``fisher_trend.enabled``: the cadence is part of the run's config (its hash), and
  turning the trend stage on or off must not retrain the runs it would read.
  """
  if spec.family != "clean":
    return False
  trend = {round(float(x), 6) for x in study.fisher_trend.sparsities}
  return spec.regime == "dense" or round(spec.sparsity, 6) in trend


def training_config(study: ml_collections.ConfigDict, spec: RunSpec, dense_workdir: str
                    ) -> ml_collections.ConfigDict:
  """The training config of ``spec``: its family's spec with the study's settings applied."""
  if spec.family not in FAMILIES or spec.regime not in REGIMES:
    raise UserError(f"unknown run {spec}")
  family = "noisy" if spec.family == "noisy" else "clean"
  spec_str = study.train[f"{family}_{spec.regime}"]
  path, sep, arg = spec_str.partition(":")
  if not os.path.isabs(path):
    path = os.path.join(study.configs_dir, path)
  config = config_io.load_config_spec(path + sep + arg)
  _merge(config, study.train.overrides)
  sparse_epochs = int(study.get("sparse_epochs", 0))
  if sparse_epochs and spec.regime != "dense":
    rescale_epochs(config, sparse_epochs)
  config.seed = int(spec.seed)
  config.regime = spec.regime
  config.sparsity = float(spec.sparsity)
  if spec.family == "noisy":
    config.dataset.label_noise = float(study.label_noise.rate)
    config.dataset.noise_kind = str(study.label_noise.kind)
  if spec.family == "longtail":
    config.dataset.imbalance_ratio = float(study.disagreement.imbalance_ratio)
  if spec.regime == "dense":
    config.dense_workdir = ""
  else:
    config.dense_workdir = dense_workdir
    config.mask.source = "prune_dense"
  config.prerequisites = "error"
  config.dense_config = ""
  config.progress = bool(study.train.progress)
  if keeps_trend_checkpoints(study, spec):
    every = int(study.fisher_trend.every_epochs)
    config.checkpoint_every_epochs = every
    config.checkpoint_keep = config.num_epochs // every + 2
  return config


def plan(study: ml_collections.ConfigDict) -> list[RunSpec]:
  """Every run the enabled stages need, each Sol-D before the sparse runs that prune it."""
  specs: set[RunSpec] = set()
  sparse = {round(float(s), 6) for s in study.sparsities}
  if study.interpolation.enabled:
    sparse.add(round(float(study.interpolation.sparsity), 6))
  if study.disagreement.enabled:
    sparse.add(round(float(study.disagreement.sparsity), 6))
  sparse |= _trend_sparsities(study)
  if closing_gap_sparsity(study) is not None:
    sparse.add(closing_gap_sparsity(study))
  for seed in study.seeds:
    seed = int(seed)
    specs.add(RunSpec("clean", "dense", 0.0, seed))
    for s in sparse:
      for regime in ("finetune", "scratch"):
        specs.add(RunSpec("clean", regime, s, seed))
    if study.label_noise.enabled and seed in stage_seeds(study, "label_noise"):
      specs.add(RunSpec("noisy", "dense", 0.0, seed))
      for regime in ("finetune", "scratch"):
        specs.add(RunSpec("noisy", regime, round(float(study.label_noise.sparsity), 6), seed))
    if (study.disagreement.enabled and study.disagreement.long_tailed
        and seed in stage_seeds(study, "disagreement")):
      specs.add(RunSpec("longtail", "dense", 0.0, seed))
      for regime in ("finetune", "scratch"):
        specs.add(RunSpec("longtail", regime, round(float(study.disagreement.sparsity), 6), seed))
  return sorted(specs, key=lambda r: (r.family, r.seed, r.regime != "dense", r.sparsity,
                                      r.regime))


@dataclasses.dataclass
class Run:
  """A planned run: its spec, training config and work dir."""

  spec: RunSpec
  config: ml_collections.ConfigDict
  workdir: str

  @property
  def hash(self) -> str:
    return stages.run_hash(self.config)


def resolve(study: ml_collections.ConfigDict, cache: stages.StageCache,
            specs: Iterable[RunSpec]) -> dict[RunSpec, Run]:
  """Training configs and work dirs of ``specs`` (dense runs first, their paths feed the rest)."""
  runs: dict[RunSpec, Run] = {}
  for spec in sorted(specs, key=lambda r: r.regime != "dense"):
    dense_dir = ""
    if spec.regime != "dense":
      dense_spec = spec.dense()
      if dense_spec not in runs:
        runs.update(resolve(study, cache, [dense_spec]))
      dense_dir = runs[dense_spec].workdir
    config = training_config(study, spec, dense_dir)
    config_io.validate_config(config)
    runs[spec] = Run(spec, config, cache.run_workdir(spec.name, config))
  return runs


class DatasetCache:
  """Loads each distinct dataset config once per study session."""

  def __init__(self):
    self._store: dict[str, data_lib.Dataset] = {}

  def get(self, dataset_config: ml_collections.ConfigDict) -> data_lib.Dataset:
    key = stages.digest(dataset_config)
    if key not in self._store:
      self._store[key] = data_lib.load_dataset(dataset_config)
    return self._store[key]


def train_all(runs: dict[RunSpec, Run], datasets: DatasetCache, *, log=stages.log) -> dict:
  """Trains (or reuses, or resumes) every run; returns ``{name: {workdir, hash, final, wall_s}}``."""
  from snnjax.train.loop import train_and_evaluate  # pylint: disable=import-outside-toplevel
  out = {}
  ordered = sorted(runs.values(), key=lambda r: (r.spec.regime != "dense", r.spec.family,
                                                r.spec.seed, r.spec.sparsity, r.spec.regime))
  for i, run in enumerate(ordered):
    log(f"solutions: [{i + 1}/{len(ordered)}] {run.spec.name} ({os.path.basename(run.workdir)})")
    t0 = time.time()
    final = train_and_evaluate(run.config, run.workdir, dataset=datasets.get(run.config.dataset))
    elapsed = time.time() - t0
    shown = {k: round(final[k], 4) for k in ("train_accuracy", "test_accuracy") if k in final}
    log(f"solutions: {run.spec.name} done in {elapsed:.1f}s {shown}")
    out[run.spec.name] = {"workdir": run.workdir, "hash": run.hash, "final": final,
                          "wall_s": elapsed, "train_s": _epoch_seconds(run.workdir)}
  return out


def _epoch_seconds(workdir: str) -> float:
  """Seconds of training the run's epochs took (from its metrics.jsonl), evaluation excluded."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0.0
  with open(path) as f:
    return float(sum(json.loads(l).get("epoch_time_s", 0.0) for l in f if l.strip()))
