"""The study's training runs (Sol-D, Sol-F, Sol-S): named, configured, placed and trained.

A run is named by a :class:`RunSpec`: its family (``clean``: the table and analyses; ``noisy``:
label noise; ``longtail``: the clean setup on a long-tailed train set, for disagreement), its
regime (``dense``, ``finetune``, ``scratch``; ``rigl`` for Sol-R, with ``config.sol_r``), sparsity and
seed. Each stage plans the runs it
reads (:func:`plan` takes their union). A run's training config is the family's config spec from
the study config with the study's settings and the stages' hooks applied (:func:`training_config`);
its work dir is ``DIR/runs/<name>-<hash>``, the hash taken over the config with the Sol-D's hash in
place of its path (:class:`Run`): a change to Sol-D changes its sparse runs' hashes, a moved study
directory changes none. Sol-S uses the very mask of Sol-F (global magnitude pruning of the same
Sol-D), from a fresh init; Sol-R (RigL dynamic sparse training, ``configs/rigl95.py``) starts from
exactly Sol-S's init and mask and trains as many epochs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Iterable, Sequence

import ml_collections

from snnjax import data as data_lib
from snnjax.errors import UserError
from snnjax.studies import cache as cache_lib
from snnjax.train import config_io
from snnjax.train import lock as lock_lib
from snnjax.train.run_dir import RunDir

FAMILIES = ("clean", "noisy", "longtail")
REGIMES = ("dense", "finetune", "scratch", "rigl")
LABELS = {"dense": "Sol-D", "finetune": "Sol-F", "scratch": "Sol-S", "rigl": "Sol-R"}
# The sparse regimes every stage that compares solutions trains; Sol-R only with config.sol_r.
SPARSE_REGIMES = ("finetune", "scratch")


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


def stage_seeds(study: ml_collections.ConfigDict, stage: str) -> tuple[int, ...]:
  """The seeds a stage uses: ``study.<stage>.seeds`` where set (non-empty), else ``study.seeds``.

  The table always uses every study seed; an analysis can use fewer (a budget preset trains its
  label-noise, long-tailed and closing-the-gap runs for one seed only).
  """
  chosen = tuple(study[stage].get("seeds", ())) if stage in study else ()
  return tuple(int(s) for s in (chosen or study.seeds))


def training_config(study: ml_collections.ConfigDict, spec: RunSpec, dense_workdir: str, *,
                    adjust: Sequence[Callable] = ()) -> ml_collections.ConfigDict:
  """The training config of ``spec``: its family's spec with the study's settings applied.

  ``adjust``: the stages' ``adjust_run(study, spec, config)`` hooks (a family's dataset, the
  Fisher trend's checkpoint cadence), applied last in order.
  """
  if spec.family not in FAMILIES or spec.regime not in REGIMES:
    raise UserError(f"unknown run {spec}")
  family = "noisy" if spec.family == "noisy" else "clean"
  key = f"{family}_{spec.regime}"
  if key not in study.train:
    raise UserError(f"study train.{key} is not set: name the training config of {spec.label}")
  config = load_slot_config(study, key)
  _merge(config, study.train.overrides)
  sparse_epochs = int(study.get("sparse_epochs", 0))
  if sparse_epochs and spec.regime != "dense":
    rescale_epochs(config, sparse_epochs)
  config.seed = int(spec.seed)
  config.regime = spec.regime
  config.sparsity = float(spec.sparsity)
  if spec.regime == "dense":
    config.dense_workdir = ""
  else:
    config.dense_workdir = dense_workdir
    config.mask.source = "prune_dense"
  config.prerequisites = "error"
  config.dense_config = ""
  config.progress = bool(study.train.progress)
  # A runtime field (config_io.RUNTIME_FIELDS): the run's hash, hence its work dir, is unchanged.
  config.tensorboard = bool(study.get("tensorboard", False))
  for hook in adjust:
    hook(study, spec, config)
  return config


def load_slot_config(study: ml_collections.ConfigDict, key: str) -> ml_collections.ConfigDict:
  """The training config ``study.train[key]`` names (``clean_dense``: ``dense.py:quick``, a path
  relative to ``study.configs_dir``), as its file gives it; UserError for what is no training
  config."""
  spec_str = str(study.train[key])
  path, sep, arg = spec_str.partition(":")
  if not os.path.isabs(path):
    path = os.path.join(study.configs_dir, path)
  config = config_io.load_config_spec(path + sep + arg)
  try:
    config_io.check_training_config(config)
  except UserError as e:
    raise UserError(f"study train.{key}={spec_str}: {e}") from e
  return config


def sparse_regimes(study: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The sparse regimes of the study's comparisons: Sol-F, Sol-S and, with ``study.sol_r``, Sol-R."""
  return SPARSE_REGIMES + (("rigl",) if bool(study.get("sol_r", False)) else ())


def sparse_runs(sparsities, seeds, family: str = "clean", regimes=SPARSE_REGIMES
                ) -> set[RunSpec]:
  """Sol-D and the sparse ``regimes`` (Sol-F and Sol-S by default; see :func:`sparse_regimes`)
  of ``family`` at each sparsity, for each seed (a stage's plan)."""
  out = set()
  for seed in seeds:
    out.add(RunSpec(family, "dense", 0.0, int(seed)))
    for s in sparsities:
      for regime in regimes:
        out.add(RunSpec(family, regime, round(float(s), 6), int(seed)))
  return out


def plan(study: ml_collections.ConfigDict, stages: Iterable) -> list[RunSpec]:
  """Every run the enabled ``stages`` need (the union of their plans), plus the Sol-D of each
  sparse run; sorted by family and seed, each Sol-D before the runs that prune it."""
  specs: set[RunSpec] = set()
  for stage in stages:
    if stage.enabled(study):
      specs.update(stage.plan(study))
  specs |= {s.dense() for s in specs}
  return sorted(specs, key=lambda r: (r.family, r.seed, r.regime != "dense", r.sparsity,
                                      r.regime))


@dataclasses.dataclass
class Run:
  """A planned run: its spec, training config, work dir and identity hash.

  ``hash`` is location-free: the hash of the run's result-determining config fields with its
  Sol-D's *hash* in place of the Sol-D work dir path, so a moved or copied study directory names
  the very same runs.
  """

  spec: RunSpec
  config: ml_collections.ConfigDict
  workdir: str
  hash: str


def make_run(cache: cache_lib.StageCache, name: str, spec: RunSpec,
             config: ml_collections.ConfigDict, dense: "Run | None") -> Run:
  """The run ``name`` of ``config`` in the study's ``runs/`` (``dense``: the Sol-D it prunes)."""
  digest = cache_lib.run_hash(config, dense_hash=dense.hash if dense else "")
  return Run(spec, config, cache.run_workdir(name, digest), digest)


def resolve(study: ml_collections.ConfigDict, cache: cache_lib.StageCache,
            specs: Iterable[RunSpec], *, adjust: Sequence[Callable] = ()) -> dict[RunSpec, Run]:
  """Training configs and work dirs of ``specs`` (dense runs first, their paths feed the rest)."""
  runs: dict[RunSpec, Run] = {}
  for spec in sorted(specs, key=lambda r: r.regime != "dense"):
    dense = None
    if spec.regime != "dense":
      if spec.dense() not in runs:
        runs.update(resolve(study, cache, [spec.dense()], adjust=adjust))
      dense = runs[spec.dense()]
    config = training_config(study, spec, dense.workdir if dense else "", adjust=adjust)
    config_io.validate_config(config)
    runs[spec] = make_run(cache, spec.name, spec, config, dense)
  return runs


class DatasetCache:
  """Loads each distinct dataset config once per study session."""

  def __init__(self):
    self._store: dict[str, data_lib.Dataset] = {}

  def get(self, dataset_config: ml_collections.ConfigDict) -> data_lib.Dataset:
    key = cache_lib.digest(dataset_config)
    if key not in self._store:
      self._store[key] = data_lib.load_dataset(dataset_config)
    return self._store[key]


def train_all(runs: Iterable[Run], datasets: DatasetCache, *, log=cache_lib.log,
              what: str = "solutions", poll_s: float = 2.0) -> dict:
  """Trains (or reuses, or resumes) ``runs`` (Sol-D first); returns ``{name: {workdir, hash,
  final, wall_s, train_s}}`` keyed by the work dir's run name (``train_s``: the epochs' training
  steps, evaluation excluded).

  Several workers (``scripts/study.py`` processes on one study directory) share the work: a run
  whose work dir another live worker holds (its ``lock.json``) or whose Sol-D is not finished yet
  is left for later, the next one is taken; a worker with nothing it can take waits ``poll_s`` and
  looks again. Every run is trained once, by whoever claims it first; a dead worker's lock is
  taken over (``snnjax.train.lock``) and its run resumed from its last checkpoint.
  """
  from snnjax.train.loop import train_and_evaluate  # pylint: disable=import-outside-toplevel
  out = {}
  pending = sorted(runs, key=lambda r: (r.spec.regime != "dense", r.spec.family, r.spec.seed,
                                        r.spec.sparsity, r.spec.regime, r.workdir))
  order = [run_name(r) for r in pending]
  total, waiting = len(pending), None
  while pending:
    run = next((r for r in pending if _claimable(r, pending)), None)
    if run is None:
      if waiting != len(pending):
        log(f"{what}: {len(pending)} runs are held by other workers (or wait for their Sol-D)")
        waiting = len(pending)
      time.sleep(poll_s)
      continue
    name = run_name(run)
    log(f"{what}: [{total - len(pending) + 1}/{total}] {name} ({os.path.basename(run.workdir)})")
    t0 = time.time()
    try:
      final = train_and_evaluate(run.config, run.workdir, dataset=datasets.get(run.config.dataset))
    except lock_lib.LockedError:  # claimed by another worker between the check and the lock
      continue
    elapsed = time.time() - t0
    shown = {k: round(final[k], 4) for k in ("train_accuracy", "test_accuracy") if k in final}
    log(f"{what}: {name} done in {elapsed:.1f}s {shown}")
    out[name] = {"workdir": run.workdir, "hash": run.hash, "final": final, "wall_s": elapsed,
                 "train_s": RunDir(run.workdir).train_seconds}
    pending.remove(run)
  return {name: out[name] for name in order}


def _claimable(run: Run, pending: Sequence[Run]) -> bool:
  """Whether this worker can take ``run`` now: finished (nothing to do), or its work dir free of
  a live owner and its Sol-D (if it needs one) ready. A Sol-D is waited for only while a worker is
  going to train it (it is among ``pending`` or held by a live owner); any other missing Sol-D is
  left to ``train_and_evaluate`` (its ``prerequisites`` setting: an error, or train it first)."""
  workdir = RunDir(run.workdir)
  if workdir.final_metrics(verify=False) is not None:  # train_and_evaluate verifies it
    return True
  if _held(workdir):
    return False
  if config_io.needs_dense_run(run.config) and run.config.dense_workdir:
    dense = RunDir(run.config.dense_workdir)
    if dense.final_metrics(verify=False) is not None:
      return True
    return not (_held(dense) or any(RunDir(r.workdir).path == dense.path for r in pending))
  return True


def _held(workdir: RunDir) -> bool:
  record = lock_lib.owner(workdir.lock_path)
  return record is not None and not lock_lib.is_stale(record)


def run_name(run: Run) -> str:
  """The run's name: its work dir's name without the hash."""
  return os.path.basename(run.workdir).rsplit("-", 1)[0]
