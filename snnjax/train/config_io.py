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
import tempfile
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
                  "distributed", "eval_batch_size", "tensorboard", "save_steps", "grad_norm_every")
# Fields left out of a run's identity while they hold these values (their defaults, which give the
# numbers of runs made before the field existed), so that adding them kept every run's identity.
# ``ensemble`` (``--config.ensemble=K``, see ``snnjax.train.ensemble``) exists only when given.
# A dotted name is a nested field (``dataset.downsample``: 16x16 inputs; ``optim.schedule``).
IDENTITY_DEFAULTS = {"nan_policy": "stop", "ensemble": 1, "dataset.downsample": 1,
                     "optim.schedule": "step",
                     # SET's original rule as options (configs/set95.py:mocanu; dynamic.Rule)
                     "dst.drop_rule": "magnitude", "dst.grow_init": "zero", "dst.grow_std": 0.1,
                     "dst.update_every_epochs": 0,
                     # issue 22's options: sparse-aware init, masks at init, rewinding, data order
                     "mask.init": "dense", "mask.shuffle": False, "mask.score_examples": 256,
                     "mask.synflow_rounds": 100, "mask.rewind_step": 0, "order_seed": -1}
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
MAX_COUNT = 10_000_000  # examples, chunk and batch sizes of a measurement: more is a typo
MAX_PROBES = 100_000    # probes, sampled labels, projections: bounded so nothing runs for days
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
  try:
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (a config file may raise anything)
    first = (str(e).strip().splitlines() or [""])[0]
    raise UserError(f"cannot load config {spec}: {type(e).__name__}: {first}") from e


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
  replaced by the identity hash of the Sol-D run it names ("" when the regime needs none) and
  ``curriculum.scores_path`` by the file's name (a study names its scores files by the hash of
  what they hold; the content itself is compared through ``identity.json``'s ``scores_digest``).

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


def scores_digest(path: str) -> str | None:
  """16 hex digits of sha256 of the bytes of the scores file ``path``; None when it is unreadable."""
  try:
    with open(path, "rb") as f:
      return hashlib.sha256(f.read()).hexdigest()[:16]
  except (OSError, TypeError, ValueError):
    return None


def curriculum_scores_path(d: dict) -> str:
  """The scores file a config dict's curriculum reads ("" without one)."""
  cur = d.get("curriculum")
  if not isinstance(cur, dict) or cur.get("kind", "none") == "none":
    return ""
  return str(cur.get("scores_path") or "")


def check_config_identity(workdir: str, d: Any) -> None:
  """Refuses a ``workdir/config.json`` (as dict ``d``) that is not the run ``identity.json`` names
  (a config edited after training: its numbers would be reported under the edited fields).
  Nothing to compare without an identity.json (a run whose Sol-D was never resolved)."""
  stored = read_json(os.path.join(workdir, IDENTITY_FILE))
  if not isinstance(stored, dict) or not stored.get("identity") or not isinstance(d, dict):
    return
  dense = stored.get("dense_identity")
  dense = None if dense is None else str(dense)
  try:
    candidates = {digest(_run_identity(d, dense, 0, legacy=legacy)) for legacy in (False, True)}
  except (KeyError, TypeError, AttributeError) as e:
    raise UserError(f"{os.path.join(workdir, 'config.json')} is not a snnjax run's config "
                    f"({type(e).__name__}: {e})") from e
  if str(stored["identity"]) not in candidates:
    raise UserError(f"{os.path.join(workdir, 'config.json')} does not match the run's identity "
                    f"({os.path.join(workdir, IDENTITY_FILE)}): the config was changed after the run "
                    "was trained; restore it, or train the changed config in a fresh --workdir")


def _run_identity(d: dict, dense_identity: str | None, depth: int, *, legacy: bool = False) -> dict:
  out = result_fields(d)
  cur = out.get("curriculum")
  if not legacy and isinstance(cur, dict) and cur.get("scores_path"):
    # Location-free: the name only (``legacy``: the path as written, as identities were before).
    out["curriculum"] = {**cur, "scores_path": os.path.basename(str(cur["scores_path"]))}
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
  check_number(value, f"config.{name}", low, high, low_open=low_open, high_open=high_open)


def check_number(value, name: str, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False) -> None:
  """``value`` must be a finite number (not a bool) in the interval from ``low`` to ``high``;
  ``name`` is the setting's full name (``measure.hessian.rtol``)."""
  interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
  ok = _finite(value) and (low < value if low_open else low <= value) and (
      value < high if high_open else value <= high)
  _check(ok, f"{name} must be a finite number in {interval}, got {value!r}")


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _check_int(value, name: str, low: int, high: int = MAX_INT) -> None:
  check_int(value, f"config.{name}", low, high)


def check_int(value, name: str, low: int, high: int = MAX_INT) -> None:
  """``value`` must be an integer (not a bool; an integral float counts) in ``[low, high]``;
  ``name`` is the setting's full name. Every count, seed and probe number is bounded this way, so
  a 20-digit integer is refused instead of running for hours or overflowing."""
  integral = _is_int(value) or (isinstance(value, float) and math.isfinite(value)
                                and value.is_integer())
  _check(integral and low <= value <= high,
         f"{name} must be an integer in [{low}, {high}], got {value!r}")


def check_numbers(node: Any, where: str) -> None:
  """Every number anywhere in ``node`` (a ConfigDict, dict, list or tuple, nested): finite, and an
  integer within +-``MAX_INT``. The first NaN, inf or out-of-range integer is named
  (``where.field.sub``); the fields' own ranges are the validators' business."""
  if isinstance(node, (ml_collections.ConfigDict, dict)):
    for key, value in node.items():
      check_numbers(value, f"{where}.{key}")
  elif isinstance(node, (list, tuple)):
    for i, value in enumerate(node):
      check_numbers(value, f"{where}[{i}]")
  elif isinstance(node, bool):
    return
  elif isinstance(node, int):
    _check(-MAX_INT <= node <= MAX_INT, f"{where} is out of range (|value| <= {MAX_INT}), got {node}")
  elif isinstance(node, float):
    _check(math.isfinite(node), f"{where} must be a finite number, got {node}")


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
  _check(list(boundaries) == sorted(boundaries),
         f"config.optim.boundaries_epochs must be in increasing order, got {tuple(boundaries)}")
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
    _check(c.dst.get("drop_rule", "magnitude") in ("magnitude", "signed"),
           f"config.dst.drop_rule must be magnitude or signed, got {c.dst.get('drop_rule')!r}")
    _check(c.dst.get("grow_init", "zero") in ("zero", "normal"),
           f"config.dst.grow_init must be zero or normal, got {c.dst.get('grow_init')!r}")
    _check_number(c.dst.get("grow_std", 0.1), "dst.grow_std", 0.0, 10.0)
    _check_int(c.dst.get("update_every_epochs", 0), "dst.update_every_epochs", 0)
  _check(c.precision in ("float32", "bfloat16"),
         f"config.precision must be float32 or bfloat16, got {c.precision!r}")
  _check_int(c.num_devices, "num_devices", 0)
  if needs_dense_run(c):
    check_path(c.dense_workdir, "config.dense_workdir", read_only_ok=True)
  if "distributed" in c:
    _validate_distributed(c.distributed)
  ensemble = c.get("ensemble", 1)
  _check(isinstance(ensemble, int) and not isinstance(ensemble, bool) and ensemble >= 1,
         f"config.ensemble must be an integer >= 1, got {ensemble!r}")
  check_numbers(c, "config")  # last: the fields' own checks above name their ranges


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


def check_path(path: str, what: str, *, read_only_ok: bool = False) -> None:
  """A path that may be created as a directory: no component too long, not a file, not under a
  file, no symlink loop, its nearest existing ancestor writable (or, unless ``read_only_ok``, the
  directory itself when it exists). Writability is tried (a file created and removed), not read
  from mode bits: root passes those everywhere, also under /sys or /proc."""
  _check(isinstance(path, str) and path != "", f"{what} must be a directory path, got {path!r}")
  absolute = os.path.abspath(path)
  _check(all(len(part.encode()) <= 255 for part in absolute.split(os.sep)) and len(absolute) < 4000,
         f"{what}: path too long ({len(absolute)} characters)")
  if os.path.lexists(absolute) and not os.path.exists(absolute):
    raise UserError(f"{what}: {path} is a broken symlink or a symlink loop")
  if os.path.exists(absolute):
    _check(os.path.isdir(absolute), f"{what}: {path} is a file, not a directory")
    if not read_only_ok:
      _check(_can_create_in(absolute), f"{what}: cannot write into {path} (creating a file there "
                                       "failed)")
    return
  parent = os.path.dirname(absolute)
  while not os.path.exists(parent):
    _check(not os.path.lexists(parent), f"{what}: {parent} is a broken symlink or a symlink loop")
    parent = os.path.dirname(parent)
  _check(os.path.isdir(parent), f"{what}: {path} is under {parent}, which is a file")
  _check(os.access(parent, os.W_OK | os.X_OK) and _can_create_in(parent),
         f"{what}: cannot create {path} ({parent} is not writable)")


def check_types(node: Any, defaults: Any, where: str) -> None:
  """Every field of ``node`` (a ConfigDict, nested) that ``defaults`` has holds a value of the
  default's kind: a bool for a bool, a number for a float, an integer for an int (an integral
  float counts), text for text, a tuple or list for a tuple, a block for a block. The first
  other value is named (``where.field``); fields ``defaults`` lacks are the validators' business."""
  for key, value in node.items():
    if key not in defaults:
      continue
    default, name = defaults[key], f"{where}.{key}"
    if isinstance(default, (ml_collections.ConfigDict, dict)):
      _check(isinstance(value, (ml_collections.ConfigDict, dict)),
             f"{name} is a block of settings, got {value!r}")
      check_types(value, default, name)
    elif isinstance(default, bool):
      _check(isinstance(value, bool), f"{name} must be True or False, got {value!r}")
    elif isinstance(default, int):
      _check(_is_int(value) or (isinstance(value, float) and math.isfinite(value)
                                and value.is_integer()),
             f"{name} must be an integer, got {value!r}")
    elif isinstance(default, float):
      _check(isinstance(value, (int, float)) and not isinstance(value, bool),
             f"{name} must be a number, got {value!r}")
    elif isinstance(default, str):
      _check(isinstance(value, str), f"{name} must be text, got {value!r}")
    elif isinstance(default, (tuple, list)):
      _check(isinstance(value, (tuple, list)), f"{name} must be a tuple, got {value!r}")


def is_run_dir(path: str) -> bool:
  """Whether ``path`` holds a training run (its config.json, metrics.jsonl or checkpoints/)."""
  return any(os.path.lexists(os.path.join(path, name))
             for name in ("config.json", "metrics.jsonl", "checkpoints", IDENTITY_FILE))


def is_study_dir(path: str) -> bool:
  """Whether ``path`` holds a study (``runs/`` beside ``results/`` or ``jax_cache/``)."""
  return os.path.isdir(os.path.join(path, "runs")) and any(
      os.path.isdir(os.path.join(path, name)) for name in ("results", "jax_cache"))


def _can_create_in(directory: str) -> bool:
  """Whether a file can be created in ``directory`` (tried: created and removed at once)."""
  try:
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".snnjax-write-check-"):
      return True
  except OSError:
    return False


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
