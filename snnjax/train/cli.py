"""The ``scripts/train.py`` command line: ``--config FILE[:preset] [--config.field=value ...] --workdir DIR``.

Bad input (an unknown flag, a config value out of range, a missing file or prerequisite run, a corrupt
checkpoint) prints one ``error:`` line and exits with code 2 before anything is written; an unknown
field gets a "did you mean" from the config's own field names (:func:`suggest_fields`).

At start the resolved config and the run's identity hash are printed on stderr (they are saved as
``WORKDIR/config.json`` and ``WORKDIR/identity.json``); ``--help`` lists every field of the config
(the one given with ``--config``, else the defaults) with its value. A sparse run whose
``dense_workdir`` is not given on the command line first looks for its Sol-D beside its own work
dir (:func:`choose_dense_workdir`) and says which it uses.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

from snnjax import xla_cpu
from snnjax.errors import UserError
from snnjax.train import config_io
from snnjax.train.config_io import check_path, check_training_config, load_config_spec

def train_flags(argv: list[str]) -> flags.FlagValues:
  """Fresh flags for one ``argv``: ml_collections reads the ``--config.*`` overrides it accepts
  from the argv it is given (``sys.argv`` when none), so each call defines them anew."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "Training config file (path[:preset]).",
                                  flag_values=flag_values, lock_config=False, sys_argv=list(argv))
  flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>).",
                      flag_values=flag_values)
  return flag_values


def default_workdir(config_spec: str) -> str:
  path, _, arg = config_spec.partition(":")
  name = os.path.basename(path).removesuffix(".py")
  return os.path.join("runs", name + (f"-{arg}" if arg else ""))


def wants_help(argv: list[str], flag_values: flags.FlagValues, doc: str, *,
               fields: ml_collections.ConfigDict | None = None, fields_title: str = "") -> bool:
  """Prints ``doc`` and the flags' help when ``argv`` asks for it (``-h``/``--help``), and with
  ``fields`` every field of that config with its value (:func:`field_lines`)."""
  if not any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
    return False
  print(doc.strip() + "\n\nflags:\n" + flag_values.get_help(include_special_flags=False))
  print("  --config.FIELD=VALUE: override any field of the config file")
  if fields is not None:
    print(f"\n{fields_title or 'config fields'}:\n" + "\n".join(field_lines(fields)))
  return True


def field_lines(node, prefix: str = "") -> list[str]:
  """``  --config.a.b=value`` for every leaf of a config (nested blocks flattened, in order)."""
  lines = []
  for key, value in node.items():
    if hasattr(value, "items"):
      lines += field_lines(value, f"{prefix}{key}.")
    else:
      lines.append(f"  --config.{prefix}{key}={value}")
  return lines


def field_names(node, prefix: str = "") -> list[str]:
  """The dotted names of every field of a config, blocks included (``optim``, ``optim.lr``)."""
  names = []
  for key, value in node.items():
    names.append(prefix + key)
    if hasattr(value, "items"):
      names += field_names(value, f"{prefix}{key}.")
  return names


# Names people type for a field snnjax spells otherwise.
FIELD_ALIASES = {"learning_rate": "optim.lr", "lr": "optim.lr", "momentum": "optim.momentum",
                 "weight_decay": "optim.weight_decay", "wd": "optim.weight_decay",
                 "epochs": "num_epochs", "batch": "batch_size", "bs": "batch_size",
                 "model_name": "model.name", "dataset_name": "dataset.name",
                 "label_noise": "dataset.label_noise", "workdir": "--workdir (a flag)",
                 "dense_dir": "dense_workdir"}


def suggest_fields(field: str, config: ml_collections.ConfigDict, *, limit: int = 3) -> list[str]:
  """The known field names closest to ``field`` (a dotted name the config lacks): difflib over
  the dotted names, over their last components (``optim.l`` -> ``optim.lr``), and through
  :data:`FIELD_ALIASES` (``learning_rat`` -> ``optim.lr``)."""
  names = field_names(config)
  last = field.rsplit(".", 1)[-1]
  found = []

  def add(name):
    if name not in found:
      found.append(name)
  for alias in difflib.get_close_matches(last, FIELD_ALIASES, n=1, cutoff=0.8):
    target = FIELD_ALIASES[alias]
    if target in names or target.startswith("--"):
      add(target)
  for name in difflib.get_close_matches(field, names, n=limit, cutoff=0.6):
    if not field.startswith(name + "."):  # not the block the unknown field was looked up in
      add(name)
  by_last = {}
  for name in names:
    by_last.setdefault(name.rsplit(".", 1)[-1], []).append(name)
  same_block = [n for n in names if "." in field and n.startswith(field.rsplit(".", 1)[0] + ".")]
  for name in difflib.get_close_matches(last, [n.rsplit(".", 1)[-1] for n in same_block], n=limit,
                                        cutoff=0.3) if same_block else []:
    add(field.rsplit(".", 1)[0] + "." + name)
  for leaf in difflib.get_close_matches(last, by_last, n=limit, cutoff=0.6):
    for name in by_last[leaf]:
      add(name)
  return found[:limit]


def unknown_field_error(field: str, config: ml_collections.ConfigDict, *, prefix: str = ""
                        ) -> UserError:
  """``unknown config field in an override: PREFIX+FIELD; did you mean ...?`` (the closest
  names of ``config``, :func:`suggest_fields`)."""
  near = suggest_fields(field, config)
  hint = f"; did you mean {' or '.join(prefix + n for n in near)}?" if near else ""
  return UserError(f"unknown config field in an override: {prefix}{field}{hint}")


def override_fields(argv: list[str], name: str = "config") -> list[str]:
  """The dotted fields the ``--name.FIELD[=VALUE]`` overrides in ``argv`` set, in order."""
  return [re.sub(rf"^--?(no)?{re.escape(name)}\.", "", a).split("=", 1)[0]
          for a in argv if is_override(a, name)]


def check_override_fields(argv: list[str], config: ml_collections.ConfigDict,
                          name: str = "config", *, prefix: str = "") -> None:
  """UserError (with suggestions) for the first override of a field ``config`` lacks."""
  for path in override_fields(argv, name):
    node = config
    for key in path.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        raise unknown_field_error(path, config, prefix=prefix)
      node = node[key]


def config_file_arg(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
  return None


def caused_by_key_error(e: BaseException | None) -> bool:
  while e is not None:
    if isinstance(e, KeyError):
      return True
    e = e.__cause__ or e.__context__
  return False


def override_error(e: BaseException) -> UserError:
  """The one-line ``UserError`` for a failed ``--config.field=value`` parse (absl / ml_collections)."""
  if caused_by_key_error(e):  # ml_collections: an override of a field the config lacks
    field = str(e).strip().strip("\"'").splitlines()[0].strip().strip("\"'")
    return UserError(f"unknown config field in an override: {field}")
  text = " ".join(l.strip() for l in str(e).splitlines() if l.strip())
  return UserError(text[:400] or type(e).__name__)


def is_override(arg: str, name: str = "config") -> bool:
  """Whether ``arg`` is a ``--name.field[=value]`` (or ``--noname.field``) override."""
  return re.match(rf"^--?(no)?{re.escape(name)}\.", arg) is not None


def override_config(config: ml_collections.ConfigDict, overrides: list[str], *,
                    name: str = "config") -> ml_collections.ConfigDict:
  """``config`` with ``overrides`` (``["--config.a.b=1", "--config.c", "2", ...]``) applied, parsed
  as ``--config`` overrides are for a config file (ml_collections' parser: typed, nested fields).

  For settings that do not come from a config file (``scripts/measure.py``); raises ``UserError``
  (one line) for an unknown field, a badly typed value or anything else that is not an override.
  """
  for arg in overrides:
    if arg.startswith("-") and not is_override(arg, name):
      raise UserError(f"not a --{name}.FIELD=VALUE override: {arg}")
  check_override_fields(list(overrides), config, name, prefix=f"{name}.")
  argv = ["prog"] + list(overrides)
  flag_values = flags.FlagValues()
  try:
    config_flags.DEFINE_config_dict(name, config, flag_values=flag_values, lock_config=False,
                                    sys_argv=argv)
    rest = flag_values(argv)
  except (flags.Error, ImportError, AttributeError, TypeError, ValueError, KeyError) as e:
    raise override_error(e) from e
  if len(rest) > 1:
    raise UserError(f"unexpected argument {rest[1]!r} (overrides are --{name}.FIELD=VALUE)")
  return flag_values[name].value


ENSEMBLE_FLAG = re.compile(r"^--?config\.ensemble(=(.*))?$")
VECTORIZE_FLAG = re.compile(r"^--?config\.ensemble_vectorize=(true|false|True|False|1|0)$")


def split_ensemble(argv: list[str]) -> tuple[list[str], int | None]:
  """``argv`` without its ``--config.ensemble=K`` (or ``--config.ensemble K``) and that K.

  ``ensemble`` is not a field of snnjax's configs (so it leaves every run's config as it was):
  ``parse`` adds it to the loaded config when given (see ``snnjax.train.ensemble``).
  ``--config.ensemble_vectorize=true|false`` (the ensemble's execution, automatic without it) is
  left in ``argv`` here and read by :func:`ensemble_vectorize`.
  """
  out, value, i = [], None, 0
  while i < len(argv):
    m = ENSEMBLE_FLAG.match(argv[i])
    if m is None:
      out.append(argv[i])
      i += 1
      continue
    text = m.group(2)
    if m.group(1) is None:
      if i + 1 >= len(argv):
        raise UserError("--config.ensemble needs a value (an integer >= 1)")
      text, i = argv[i + 1], i + 1
    try:
      value = int(text)
    except ValueError as e:
      raise UserError(f"config.ensemble must be an integer >= 1, got {text!r}") from e
    i += 1
  return out, value


def ensemble_vectorize(argv: list[str]) -> bool | None:
  """The value of ``--config.ensemble_vectorize=...`` in ``argv`` (None without one)."""
  for arg in argv:
    m = VECTORIZE_FLAG.match(arg)
    if m is not None:
      return m.group(1).lower() in ("true", "1")
  return None


def parse(argv: list[str]):
  """Parses ``argv`` (program name first); returns ``(config, workdir)`` or raises UserError."""
  spec = config_file_arg(argv)
  if spec is None:
    raise UserError("--config is required, e.g. --config configs/scratch95.py:quick")
  if not os.path.isfile(spec.partition(":")[0]):
    raise UserError(f"config file not found: {spec.partition(':')[0]}")
  try:  # load it once ourselves: a bad preset or a broken file gets its own one-line message
    loaded = load_config_spec(spec)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (a user's file may raise anything)
    raise UserError(f"cannot load config {spec}: {type(e).__name__}: {_one_line(e)}") from e
  check_training_config(loaded)  # a study config, None, ...: before overrides are applied to it
  ensemble, vectorize = None, None
  if "ensemble" not in loaded:
    vectorize = ensemble_vectorize(argv)
    argv, ensemble = split_ensemble(argv)
    argv = [a for a in argv if VECTORIZE_FLAG.match(a) is None]
  check_override_fields(argv, loaded)  # an unknown field: named, with the closest known ones
  flag_values = train_flags(argv)
  try:
    rest = flag_values(argv)
    config = flag_values.config
  except (flags.Error, OSError, ImportError, AttributeError, TypeError, ValueError, KeyError) as e:
    raise override_error(e) from e
  if len(rest) > 1:
    raise UserError(f"unexpected argument {rest[1]!r} (settings are --config.FIELD=VALUE, the run "
                    "directory --workdir DIR)")
  if ensemble is not None and ensemble != 1:
    config.ensemble = ensemble
    if vectorize is not None:
      config.ensemble_vectorize = vectorize
  workdir = flag_values.workdir or default_workdir(spec)
  check_path(workdir, "--workdir")
  return config, workdir


def _one_line(e: BaseException) -> str:
  return " ".join(str(e).split())[:300]


def quiet_library_logs() -> None:
  """Orbax and friends log through absl; the CLIs report problems as one ``error:`` line instead."""
  from absl import logging  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.FATAL)


def _help_fields(argv: list[str]) -> tuple[ml_collections.ConfigDict, str]:
  """The config whose fields ``--help`` lists: the ``--config`` file's when it loads, else the
  defaults (``config_presets.base_config``; rigl / set configs add a ``dst`` block)."""
  spec = config_file_arg(argv)
  if spec is not None:
    try:
      return load_config_spec(spec), f"fields of {spec} (their values there)"
    except Exception:  # pylint: disable=broad-except  (the help still lists the defaults)
      pass
  from snnjax.train import config_presets  # pylint: disable=import-outside-toplevel
  return (config_presets.base_config(),
          "config fields (the defaults; rigl / set configs add dst.*, see configs/rigl95.py)")


def explicit_fields(argv: list[str]) -> set[str]:
  """The fields set on the command line (``--config.FIELD=...``)."""
  return set(override_fields(argv))


def choose_dense_workdir(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, str]:
  """Where a sparse run's Sol-D is: ``(path, why)``.

  A run beside ``workdir`` (a sibling directory) whose identity equals the Sol-D that
  ``config.dense_config`` describes is used first: moving or copying a set of runs keeps them
  together. Otherwise ``config.dense_workdir`` (a preset's ``runs/dense-<preset>``, relative to the
  current directory), whether a run is there or will be trained there.
  """
  default = config.dense_workdir
  if not config.get("dense_config", ""):
    return default, "config.dense_workdir"
  try:
    dense = load_config_spec(config.dense_config)
    want = config_io.identity_hash(dense)
  except Exception:  # pylint: disable=broad-except  (ensure_prerequisites reports a bad spec)
    return default, "config.dense_workdir"
  if default and os.path.isfile(os.path.join(default, "config.json")) and config_io.dense_run_identity(
      default) == want:
    return default, f"config.dense_workdir holds the Sol-D of {config.dense_config}"
  parent = os.path.dirname(os.path.abspath(workdir))
  mine = os.path.abspath(workdir)
  if os.path.isdir(parent):
    for name in sorted(os.listdir(parent)):
      path = os.path.join(parent, name)
      if path == mine or not os.path.isfile(os.path.join(path, "config.json")):
        continue
      try:
        found = config_io.dense_run_identity(path)
      except UserError:
        continue
      if found == want:
        return path, f"beside the work dir: the Sol-D of {config.dense_config} (identity {want})"
  return default, (f"config.dense_workdir (no Sol-D of {config.dense_config} beside the work dir"
                   f"{'' if os.path.isdir(default) else '; it will be trained there'})")


def describe_start(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """The lines printed at start: the resolved config and each run's identity hash."""
  from snnjax.train import ensemble as ensemble_lib  # pylint: disable=import-outside-toplevel
  lines = [f"[snnjax] config (resolved; saved as {os.path.join(workdir, 'config.json')}):"]
  lines += [f"[snnjax]   {l.strip().removeprefix('--config.')}" for l in field_lines(config)]
  members = (ensemble_lib.member_configs(config) if config.get("ensemble", 1) != 1 else [config])
  for c in members:
    where = (workdir if len(members) == 1 else ensemble_lib.member_workdir(workdir, c.seed))
    fields = config_io.run_identity(config_io.config_to_dict(c))
    pending = str(fields.get("dense_workdir", "")).startswith(config_io.UNRESOLVED)
    lines.append(f"[snnjax] run identity {config_io.digest(fields)}"
                 + (" (provisional: its Sol-D is not trained yet)" if pending else "")
                 + f"; saved as {os.path.join(where, config_io.IDENTITY_FILE)}")
  return lines


def main(argv: list[str] | None = None) -> int:
  from snnjax.train.ensemble import train_ensemble  # pylint: disable=import-outside-toplevel
  from snnjax.train.loop import train_and_evaluate  # pylint: disable=import-outside-toplevel
  argv = sys.argv if argv is None else argv
  if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
    fields, title = _help_fields(argv)
    wants_help(argv, train_flags(argv), __doc__, fields=fields, fields_title=title)
    return 0
  xla_cpu.tune()
  quiet_library_logs()
  try:
    config, workdir = parse(argv)
    lines = []
    if config_io.needs_dense_run(config) and "dense_workdir" not in explicit_fields(argv):
      config.dense_workdir, why = choose_dense_workdir(config, workdir)
      lines.append(f"[snnjax] Sol-D: {config.dense_workdir} ({why})")

    def announce():  # once every check has passed: a refused run prints its one error line only
      print("\n".join(lines + describe_start(config, workdir)), file=sys.stderr, flush=True)
    if config.get("ensemble", 1) != 1:
      result = train_ensemble(config, workdir, on_start=announce)
    else:
      result = train_and_evaluate(config, workdir, on_start=announce)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({"workdir": os.path.abspath(workdir), **result}))
  return 0
