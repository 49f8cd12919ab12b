"""Config files and validation.

Config files are Python modules with ``get_config()`` or ``get_config(arg)`` (big_vision style presets:
``configs/scratch95.py:quick``). Validation turns every out-of-range value into one ``UserError`` line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from typing import Any

import ml_collections

from snnjax.errors import UserError

REGIMES = ("dense", "finetune", "scratch", "lottery", "rigl", "set")
DST_REGIMES = ("rigl", "set")  # dynamic sparse training: a config.dst block (snnjax.train.dst)
DST_DECAYS = ("cosine", "constant")
DATASETS = ("mnist1d", "digits", "cifar10", "cifar100")
MASK_SOURCES = ("prune_dense", "random", "erk", "snip", "grasp", "synflow")
INIT_SOURCES = ("snip", "grasp", "synflow")  # masks found at init (snnjax.sparsity.init_scores)
MASK_INITS = ("dense", "sparse_aware")
# Fields that do not change a run's numbers; they may differ between a run and its resumption.
RUNTIME_FIELDS = ("progress", "checkpoint_keep", "prerequisites", "dense_config",
                  "distributed", "eval_batch_size", "save_steps", "grad_norm_every")
# Fields left out of a run's identity while they hold these values (their defaults, which give the
# numbers of runs made before the field existed), so that adding them kept every run's identity.
# ``ensemble`` (``--config.ensemble=K``, see ``snnjax.train.ensemble``) exists only when given.
# A dotted name is a nested field (``dataset.downsample``: 16x16 inputs; ``optim.schedule``).
IDENTITY_DEFAULTS = {"nan_policy": "stop", "ensemble": 1, "dataset.downsample": 1,
                     "optim.schedule": "step", "mask.init": "dense", "mask.shuffle": False,
                     "mask.score_examples": 256, "mask.synflow_rounds": 100,
                     "mask.rewind_step": 0, "order_seed": -1}
SCHEDULES = ("step", "linear", "cosine")  # snnjax.train.optim.SCHEDULES (no jax import here)
NAN_POLICIES = ("stop", "skip_step")  # snnjax.train.step.NAN_POLICIES (no jax import here)
# Fields every training config has (config_presets.base_config): a config without them is another kind.
TRAINING_FIELDS = ("regime", "sparsity", "dataset", "model", "mask", "optim", "num_epochs",
                   "batch_size", "seed")
VECTOR_DATASETS = ("mnist1d",)  # examples are (features,) vectors, not images
VECTOR_MODELS = ("mlp",)  # the models that take vectors
MAX_SEED = 2**31 - 1
MAX_EPOCHS = 100_000
MAX_INT = 2**31 - 1
MAX_LR = 10.0
MAX_FISHER_WEIGHT = 1e3
HASH_LENGTH = 12
# WORKDIR/identity.json: the run's identity as resolved when it was first trained (its Sol-D's
# identity included), so a run stays the same run after its Sol-D moves away.
IDENTITY_FILE = "identity.json"
UNRESOLVED = "unresolved:"  # prefix of a dense_workdir identity whose Sol-D run is not (yet) there
_MAX_DEPTH = 8


def load_config_spec(spec: str) -> ml_collections.ConfigDict:
  """Loads ``path/to/config.py`` or ``path/to/config.py:arg`` and calls its ``get_config``."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise UserError(f"config file not found: {path}")
  if not path.endswith(".py"):
    raise UserError(f"config file {path} is not a Python file (a .py defining get_config())")
  module_spec = importlib.util.spec_from_file_location(
      "_snnjax_config_" + os.path.basename(path).removesuffix(".py"), path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  """A JSON-serializable dict of ``config`` (tuples become lists)."""
  return json.loads(config.to_json())


def config_from_dict(d: dict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(d)


def result_fields(d: dict) -> dict:
  """The part of a config dict that determines a run's numbers (``IDENTITY_DEFAULTS`` at their
  default values left out)."""
  out = {k: v for k, v in d.items() if k not in RUNTIME_FIELDS
         and not (k in IDENTITY_DEFAULTS and v == IDENTITY_DEFAULTS[k])}
  for name, default in IDENTITY_DEFAULTS.items():
    if "." in name:
      block, field = name.split(".", 1)
      if isinstance(out.get(block), dict) and out[block].get(field, default) == default:
        out[block] = {k: v for k, v in out[block].items() if k != field}
  return out


def needs_dense_run(config) -> bool:
  """Whether a run of ``config`` (a ConfigDict or its dict) starts from a Sol-D run."""
  regime = config["regime"]
  return regime in ("finetune", "lottery") or (
      regime in ("scratch",) + DST_REGIMES and config["mask"]["source"] == "prune_dense")


def run_identity(d: dict, *, dense_identity: str | None = None) -> dict:
  """The location-free identity of a run of config dict ``d``: its result fields, ``dense_workdir``
  replaced by the identity hash of the Sol-D run it names ("" when the regime needs none).

  That hash is read from ``DENSE/identity.json`` or computed from ``DENSE/config.json`` (itself
  location-free). ``dense_identity`` gives it instead, for a caller that plans a run before its
  Sol-D exists; without it a missing Sol-D leaves ``"unresolved:<absolute path>"``.
  """
  return _run_identity(d, dense_identity, 0)


def identity_hash(config, *, dense_identity: str | None = None) -> str:
  """12 hex digits: sha256 of the sorted JSON of ``run_identity`` of ``config`` (ConfigDict or dict)."""
  d = config if isinstance(config, dict) else config_to_dict(config)
  return _identity_hash(d, dense_identity, 0)


def dense_run_identity(dense_workdir: str) -> str | None:
  """The identity hash of the run in ``dense_workdir``; None when no run (config.json) is there."""
  return _workdir_identity(dense_workdir, 0)


def digest(value: Any) -> str:
  text = json.dumps(value, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def _run_identity(d: dict, dense_identity: str | None, depth: int) -> dict:
  out = result_fields(d)
  if "dense_workdir" not in out:
    return out
  if not needs_dense_run(d):
    out["dense_workdir"] = ""
  elif dense_identity is not None:
    out["dense_workdir"] = dense_identity
  else:
    found = _workdir_identity(d["dense_workdir"], depth + 1)
    out["dense_workdir"] = found if found is not None else (
        UNRESOLVED + os.path.abspath(d["dense_workdir"]))
  return out


def _identity_hash(d: dict, dense_identity: str | None, depth: int) -> str:
  return digest(_run_identity(d, dense_identity, depth))


def _workdir_identity(workdir: str, depth: int) -> str | None:
  if depth > _MAX_DEPTH:
    raise UserError(f"{workdir}: dense_workdir references nest deeper than {_MAX_DEPTH} runs")
  if not workdir:
    return None
  stored = read_json(os.path.join(workdir, IDENTITY_FILE))
  if stored is not None and stored.get("identity"):
    return str(stored["identity"])
  d = read_json(os.path.join(workdir, "config.json"))
  return None if d is None else _identity_hash(d, None, depth)


def read_json(path: str) -> Any:
  """The JSON in ``path``; None when there is no file; UserError when it is unreadable."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"{path} is unreadable ({e})") from e


def _check(cond: bool, message: str) -> None:
  if not cond:
    raise UserError(message)


def _finite(value) -> bool:
  """A finite int or float (not a bool, not a numeric string)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return False
  try:
    return math.isfinite(value)
  except OverflowError:  # an int beyond float range
    return False


def _check_number(value, name: str, low: float, high: float, *, low_open: bool = False,
                  high_open: bool = False) -> None:
  """``value`` must be a finite number in the interval from ``low`` to ``high``."""
  interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
  ok = _finite(value) and (low < value if low_open else low <= value) and (
      value < high if high_open else value <= high)
  _check(ok, f"config.{name} must be a finite number in {interval}, got {value}")


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _check_int(value, name: str, low: int, high: int = MAX_INT) -> None:
  _check(_is_int(value) and low <= value <= high,
         f"config.{name} must be an integer in [{low}, {high}], got {value!r}")


def check_training_config(config) -> None:
  """Refuses what is not a training config at all (a study config, None, a dict missing the
  fields every training config has), before its fields are read."""
  _check(isinstance(config, ml_collections.ConfigDict),
         f"the config is not a ConfigDict (get_config() returned {type(config).__name__})")
  missing = [k for k in TRAINING_FIELDS if k not in config]
  if missing:
    hint = (" (a study config? use scripts/study.py)" if "measure" in config or "regimes" in config
            else "")
    raise UserError(f"not a training config: it has no field {missing[0]}{hint}")


def validate_config(config: ml_collections.ConfigDict, model_names=()) -> None:
  """Raises ``UserError`` naming the first invalid field of a training config."""
  check_training_config(config)
  c = config
  _check(c.regime in REGIMES, f"config.regime must be one of {REGIMES}, got {c.regime!r}")
  _check(_finite(c.sparsity) and 0.0 <= c.sparsity < 1.0,
         f"config.sparsity must be in [0, 1), got {c.sparsity}")
  _check(c.regime == "dense" or c.sparsity > 0.0,
         f"config.sparsity must be > 0 for the {c.regime} regime")
  _check(c.regime != "dense" or c.sparsity == 0.0,
         f"config.sparsity={c.sparsity} on a dense run: a dense run prunes nothing (use "
         "--config.regime=finetune|scratch|lottery, or a sparse config such as configs/scratch90.py)")
  _check(c.regime not in ("finetune", "lottery") or c.mask.source == "prune_dense",
         f"config.mask.source={c.mask.source} does not apply to the {c.regime} regime, which prunes "
         "its Sol-D run (prune_dense); random and erk masks are for --config.regime=scratch")
  _check_int(c.seed, "seed", 0, MAX_SEED)
  d = c.dataset
  _check(d.name in DATASETS, f"config.dataset.name must be one of {DATASETS}, got {d.name!r}")
  _check(d.source in ("auto", "npz", "tfds"),
         f"config.dataset.source must be auto, npz or tfds, got {d.source!r}")
  _check(_finite(d.label_noise) and 0.0 <= d.label_noise < 1.0,
         f"config.dataset.label_noise must be in [0, 1), got {d.label_noise}")
  _check(d.noise_kind in ("uniform", "flip"),
         f"config.dataset.noise_kind must be uniform or flip, got {d.noise_kind!r}")
  _check_number(d.imbalance_ratio, "dataset.imbalance_ratio", 1.0, 1e6)
  _check_int(d.train_size, "dataset.train_size", 0)
  _check_int(d.get("downsample", 1), "dataset.downsample", 1, 8)
  _check(d.get("downsample", 1) == 1 or d.name not in VECTOR_DATASETS,
         f"config.dataset.downsample={d.get('downsample')} pools images; {d.name} examples are vectors")
  if model_names:
    _check(c.model.name in model_names,
           f"config.model.name must be one of {tuple(model_names)}, got {c.model.name!r}")
  _check(d.name not in VECTOR_DATASETS or c.model.name in VECTOR_MODELS,
         f"config.model.name={c.model.name} needs images, but {d.name} examples are vectors "
         f"(use one of {VECTOR_MODELS}, or an image dataset)")
  m = c.mask
  _check(m.source in MASK_SOURCES, f"config.mask.source must be one of {MASK_SOURCES}, got {m.source!r}")
  _check(m.scope in ("global", "layerwise"), f"config.mask.scope must be global or layerwise, got {m.scope!r}")
  _validate_mask_extras(c)
  _check(not needs_dense_run(c) or bool(c.dense_workdir),
         f"the {c.regime} regime needs a Sol-D run: set --config.dense_workdir=DIR"
         + (" (or --config.mask.source=random|erk)" if c.regime in ("scratch",) + DST_REGIMES else ""))
  _check(c.prerequisites in ("error", "train"),
         f"config.prerequisites must be error or train, got {c.prerequisites!r}")
  o = c.optim
  _check_number(o.lr, "optim.lr", 0.0, MAX_LR, low_open=True)
  _check_number(o.momentum, "optim.momentum", 0.0, 1.0, high_open=True)
  _check_number(o.weight_decay, "optim.weight_decay", 0.0, 1.0, high_open=True)
  _check_number(o.decay, "optim.decay", 0.0, 1.0, low_open=True)
  _check_number(o.warmup_epochs, "optim.warmup_epochs", 0.0, MAX_EPOCHS)
  _check(o.get("schedule", "step") in SCHEDULES,
         f"config.optim.schedule must be one of {SCHEDULES}, got {o.get('schedule')!r}")
  boundaries = o.boundaries_epochs
  _check(isinstance(boundaries, (tuple, list)),
         f"config.optim.boundaries_epochs must be a tuple of epochs, got {boundaries!r}")
  for b in boundaries:
    _check(not isinstance(b, bool) and _finite(b) and 0 <= b <= MAX_EPOCHS,
           f"config.optim.boundaries_epochs must hold numbers in [0, {MAX_EPOCHS}], got {b!r}")
  _check(c.get("nan_policy", "stop") in NAN_POLICIES,
         f"config.nan_policy must be one of {NAN_POLICIES}, got {c.get('nan_policy')!r}")
  _check_int(c.num_epochs, "num_epochs", 1, MAX_EPOCHS)
  _check_int(c.batch_size, "batch_size", 1)
  _check_int(c.eval_batch_size, "eval_batch_size", 1)
  _check_int(c.eval_every_epochs, "eval_every_epochs", 1)
  _check_int(c.checkpoint_every_epochs, "checkpoint_every_epochs", 1)
  _check_int(c.checkpoint_keep, "checkpoint_keep", 1)
  _check_int(c.train_eval_size, "train_eval_size", 0)
  if "fisher_reg" in c:
    _check_number(c.fisher_reg.weight, "fisher_reg.weight", 0.0, MAX_FISHER_WEIGHT)
    _check_int(c.fisher_reg.until_epoch, "fisher_reg.until_epoch", 0)
    _check_int(c.fisher_reg.num_examples, "fisher_reg.num_examples", 0)
  if "curriculum" in c:
    _check(c.curriculum.kind in ("none", "low_first", "high_first"),
           f"config.curriculum.kind must be none, low_first or high_first, got {c.curriculum.kind!r}")
    _check(c.curriculum.kind == "none" or c.curriculum.until_epoch >= 1,
           "config.curriculum.until_epoch must be >= 1 when a curriculum is on")
    _check(c.curriculum.kind == "none" or bool(c.curriculum.scores_path),
           f"config.curriculum.kind={c.curriculum.kind} needs per-example scores: set "
           "--config.curriculum.scores_path=FILE.npy")
    _check(_finite(c.curriculum.pool_factor) and c.curriculum.pool_factor >= 1.0,
           f"config.curriculum.pool_factor must be >= 1, got {c.curriculum.pool_factor}")
  if c.regime in DST_REGIMES:
    _check("dst" in c, f"the {c.regime} regime needs a config.dst block (see configs/rigl95.py)")
    _check(c.dst.update_every >= 1, f"config.dst.update_every must be >= 1, got {c.dst.update_every}")
    _check_number(c.dst.end_fraction, "dst.end_fraction", 0.0, 1.0)
    _check_number(c.dst.drop_fraction, "dst.drop_fraction", 0.0, 1.0)
    _check(c.dst.decay in DST_DECAYS,
           f"config.dst.decay must be one of {DST_DECAYS}, got {c.dst.decay!r}")
    _check(c.dst.seed >= 0, f"config.dst.seed must be >= 0, got {c.dst.seed}")
  _check(c.precision in ("float32", "bfloat16"),
         f"config.precision must be float32 or bfloat16, got {c.precision!r}")
  _check_int(c.num_devices, "num_devices", 0)
  if needs_dense_run(c):
    check_path(c.dense_workdir, "config.dense_workdir")
  if "distributed" in c:
    _validate_distributed(c.distributed)
  ensemble = c.get("ensemble", 1)
  _check(isinstance(ensemble, int) and not isinstance(ensemble, bool) and ensemble >= 1,
         f"config.ensemble must be an integer >= 1, got {ensemble!r}")


def _validate_mask_extras(c) -> None:
  """The mask fields of issue 22 (init, shuffle, masks found at init, rewinding, save_steps)."""
  m = c.mask
  scratch_like = c.regime in ("scratch",) + DST_REGIMES
  init = m.get("init", "dense")
  _check(init in MASK_INITS, f"config.mask.init must be one of {MASK_INITS}, got {init!r}")
  _check(init == "dense" or scratch_like,
         f"config.mask.init={init} re-initializes the kept weights: it applies to scratch, rigl "
         f"and set runs (a fresh init), not to the {c.regime} regime")
  _check(isinstance(m.get("shuffle", False), bool),
         f"config.mask.shuffle must be True or False, got {m.get('shuffle')!r}")
  _check(not m.get("shuffle", False) or scratch_like,
         f"config.mask.shuffle applies to scratch, rigl and set runs, not to the {c.regime} regime")
  _check(m.source not in INIT_SOURCES or scratch_like,
         f"config.mask.source={m.source} scores the run's own init: use it with "
         "--config.regime=scratch|rigl|set")
  _check_int(m.get("score_examples", 256), "mask.score_examples", 1)
  _check_int(m.get("synflow_rounds", 100), "mask.synflow_rounds", 1, 10_000)
  rewind = m.get("rewind_step", 0)
  _check_int(rewind, "mask.rewind_step", 0)
  _check(rewind == 0 or c.regime == "lottery",
         f"config.mask.rewind_step={rewind} rewinds a lottery run; this is a {c.regime} run")
  steps = c.get("save_steps", ())
  _check(isinstance(steps, (tuple, list)) and all(_is_int(s) and s >= 1 for s in steps),
         f"config.save_steps must be a tuple of steps >= 1, got {steps!r}")
  _check_int(c.get("grad_norm_every", 0), "grad_norm_every", 0)
  _check_int(c.get("order_seed", -1), "order_seed", -1, MAX_SEED)
  _check(c.get("ensemble", 1) == 1 or c.get("order_seed", -1) == -1,
         "config.order_seed is not supported with config.ensemble > 1")
  _check(c.get("ensemble", 1) == 1 or not (tuple(steps) or c.get("grad_norm_every", 0)),
         "config.save_steps and config.grad_norm_every are not supported with config.ensemble > 1")


def check_path(path: str, what: str) -> None:
  """A path that may be created as a directory: no component too long, not a file, not under a
  file, no symlink loop, its nearest existing ancestor writable."""
  _check(isinstance(path, str) and path != "", f"{what} must be a directory path, got {path!r}")
  absolute = os.path.abspath(path)
  _check(all(len(part.encode()) <= 255 for part in absolute.split(os.sep)) and len(absolute) < 4000,
         f"{what}: path too long ({len(absolute)} characters)")
  if os.path.lexists(absolute) and not os.path.exists(absolute):
    raise UserError(f"{what}: {path} is a broken symlink or a symlink loop")
  if os.path.exists(absolute):
    _check(os.path.isdir(absolute), f"{what}: {path} is a file, not a directory")
    return
  parent = os.path.dirname(absolute)
  while not os.path.exists(parent):
    _check(not os.path.lexists(parent), f"{what}: {parent} is a broken symlink or a symlink loop")
    parent = os.path.dirname(parent)
  _check(os.path.isdir(parent), f"{what}: {path} is under {parent}, which is a file")
  _check(os.access(parent, os.W_OK | os.X_OK), f"{what}: cannot create {path} ({parent} is not "
                                               "writable)")


def _validate_distributed(dist) -> None:
  _check(isinstance(dist, ml_collections.ConfigDict),
         "config.distributed is a block: use --config.distributed.enabled=True (and, outside SLURM, "
         ".coordinator_address, .num_processes, .process_id)")
  for name in ("heartbeat_timeout_s", "initialization_timeout_s"):
    _check_number(dist[name], f"distributed.{name}", 0.0, 86400.0, low_open=True)
  if dist.enabled and dist.coordinator_address:
    _check(":" in str(dist.coordinator_address),
           f"config.distributed.coordinator_address must be HOST:PORT, got {dist.coordinator_address!r}")
    _check(dist.num_processes >= 1, "config.distributed.num_processes must be >= 1 with a "
           f"coordinator_address, got {dist.num_processes}")
    _check(0 <= dist.process_id < dist.num_processes,
           f"config.distributed.process_id must be in [0, {dist.num_processes}), got {dist.process_id}")


def format_config(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config_to_dict(config), indent=2, sort_keys=True)
