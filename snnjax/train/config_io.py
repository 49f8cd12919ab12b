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

REGIMES = ("dense", "finetune", "scratch", "lottery")
DATASETS = ("mnist1d", "digits", "cifar10", "cifar100")
MASK_SOURCES = ("prune_dense", "random", "erk")
# Fields that do not change a run's numbers; they may differ between a run and its resumption.
RUNTIME_FIELDS = ("progress", "checkpoint_keep", "prerequisites", "dense_config",
                  "distributed", "eval_batch_size")
# Fields left out of a run's identity while they hold these values (their defaults, which give the
# numbers of runs made before the field existed), so that adding them kept every run's identity.
# ``ensemble`` (``--config.ensemble=K``, see ``snnjax.train.ensemble``) exists only when given.
IDENTITY_DEFAULTS = {"nan_policy": "stop", "ensemble": 1}
NAN_POLICIES = ("stop", "skip_step")  # snnjax.train.step.NAN_POLICIES (no jax import here)
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
  return {k: v for k, v in d.items() if k not in RUNTIME_FIELDS
          and not (k in IDENTITY_DEFAULTS and v == IDENTITY_DEFAULTS[k])}


def needs_dense_run(config) -> bool:
  """Whether a run of ``config`` (a ConfigDict or its dict) starts from a Sol-D run."""
  regime = config["regime"]
  return regime in ("finetune", "lottery") or (
      regime == "scratch" and config["mask"]["source"] == "prune_dense")


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
  try:
    return math.isfinite(float(value))
  except (TypeError, ValueError):
    return False


def _check_number(value, name: str, low: float, high: float, *, low_open: bool = False,
                  high_open: bool = False) -> None:
  """``value`` must be a finite number in the interval from ``low`` to ``high``."""
  interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
  ok = _finite(value) and (low < value if low_open else low <= value) and (
      value < high if high_open else value <= high)
  _check(ok, f"config.{name} must be a finite number in {interval}, got {value}")


def validate_config(config: ml_collections.ConfigDict, model_names=()) -> None:
  """Raises ``UserError`` naming the first invalid field of a training config."""
  c = config
  _check(c.regime in REGIMES, f"config.regime must be one of {REGIMES}, got {c.regime!r}")
  _check(0.0 <= c.sparsity < 1.0, f"config.sparsity must be in [0, 1), got {c.sparsity}")
  _check(c.regime == "dense" or c.sparsity > 0.0,
         f"config.sparsity must be > 0 for the {c.regime} regime")
  d = c.dataset
  _check(d.name in DATASETS, f"config.dataset.name must be one of {DATASETS}, got {d.name!r}")
  _check(d.source in ("auto", "npz", "tfds"),
         f"config.dataset.source must be auto, npz or tfds, got {d.source!r}")
  _check(0.0 <= d.label_noise < 1.0, f"config.dataset.label_noise must be in [0, 1), got {d.label_noise}")
  _check(d.noise_kind in ("uniform", "flip"),
         f"config.dataset.noise_kind must be uniform or flip, got {d.noise_kind!r}")
  _check(d.imbalance_ratio >= 1.0, f"config.dataset.imbalance_ratio must be >= 1, got {d.imbalance_ratio}")
  _check(d.train_size >= 0, f"config.dataset.train_size must be >= 0, got {d.train_size}")
  if model_names:
    _check(c.model.name in model_names,
           f"config.model.name must be one of {tuple(model_names)}, got {c.model.name!r}")
  m = c.mask
  _check(m.source in MASK_SOURCES, f"config.mask.source must be one of {MASK_SOURCES}, got {m.source!r}")
  _check(m.scope in ("global", "layerwise"), f"config.mask.scope must be global or layerwise, got {m.scope!r}")
  _check(not needs_dense_run(c) or bool(c.dense_workdir),
         f"the {c.regime} regime needs a Sol-D run: set --config.dense_workdir=DIR"
         + (" (or --config.mask.source=random|erk)" if c.regime == "scratch" else ""))
  _check(c.prerequisites in ("error", "train"),
         f"config.prerequisites must be error or train, got {c.prerequisites!r}")
  o = c.optim
  _check_number(o.lr, "optim.lr", 0.0, MAX_LR, low_open=True)
  _check_number(o.momentum, "optim.momentum", 0.0, 1.0, high_open=True)
  _check_number(o.weight_decay, "optim.weight_decay", 0.0, 1.0, high_open=True)
  _check_number(o.decay, "optim.decay", 0.0, 1.0, low_open=True)
  _check(_finite(o.warmup_epochs) and o.warmup_epochs >= 0,
         f"config.optim.warmup_epochs must be a finite number >= 0, got {o.warmup_epochs}")
  _check(c.get("nan_policy", "stop") in NAN_POLICIES,
         f"config.nan_policy must be one of {NAN_POLICIES}, got {c.get('nan_policy')!r}")
  _check(c.num_epochs >= 1, f"config.num_epochs must be >= 1, got {c.num_epochs}")
  _check(c.batch_size >= 1, f"config.batch_size must be >= 1, got {c.batch_size}")
  _check(c.eval_batch_size >= 1, f"config.eval_batch_size must be >= 1, got {c.eval_batch_size}")
  _check(c.eval_every_epochs >= 1, f"config.eval_every_epochs must be >= 1, got {c.eval_every_epochs}")
  _check(c.checkpoint_every_epochs >= 1,
         f"config.checkpoint_every_epochs must be >= 1, got {c.checkpoint_every_epochs}")
  _check(c.checkpoint_keep >= 1, f"config.checkpoint_keep must be >= 1, got {c.checkpoint_keep}")
  _check(c.seed >= 0, f"config.seed must be >= 0, got {c.seed}")
  _check(c.train_eval_size >= 0, f"config.train_eval_size must be >= 0, got {c.train_eval_size}")
  if "fisher_reg" in c:
    _check_number(c.fisher_reg.weight, "fisher_reg.weight", 0.0, MAX_FISHER_WEIGHT)
    _check(c.fisher_reg.until_epoch >= 0,
           f"config.fisher_reg.until_epoch must be >= 0, got {c.fisher_reg.until_epoch}")
    _check(c.fisher_reg.num_examples >= 0,
           f"config.fisher_reg.num_examples must be >= 0, got {c.fisher_reg.num_examples}")
  if "curriculum" in c:
    _check(c.curriculum.kind in ("none", "low_first", "high_first"),
           f"config.curriculum.kind must be none, low_first or high_first, got {c.curriculum.kind!r}")
    _check(c.curriculum.kind == "none" or c.curriculum.until_epoch >= 1,
           "config.curriculum.until_epoch must be >= 1 when a curriculum is on")
    _check(_finite(c.curriculum.pool_factor) and c.curriculum.pool_factor >= 1.0,
           f"config.curriculum.pool_factor must be >= 1, got {c.curriculum.pool_factor}")
  _check(c.precision in ("float32", "bfloat16"),
         f"config.precision must be float32 or bfloat16, got {c.precision!r}")
  _check(c.num_devices >= 0, f"config.num_devices must be >= 0, got {c.num_devices}")
  ensemble = c.get("ensemble", 1)
  _check(isinstance(ensemble, int) and not isinstance(ensemble, bool) and ensemble >= 1,
         f"config.ensemble must be an integer >= 1, got {ensemble!r}")


def format_config(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config_to_dict(config), indent=2, sort_keys=True)
