"""The ``scripts/train.py`` command line: ``--config FILE[:preset] [--config.field=value ...] --workdir DIR``.

Bad input (an unknown flag, a config value out of range, a missing file or prerequisite run, a corrupt
checkpoint) prints one ``error:`` line and exits with code 2 before anything is written.
"""

from __future__ import annotations

import json
import os
import re
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

from snnjax import xla_cpu
from snnjax.errors import UserError
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


def wants_help(argv: list[str], flag_values: flags.FlagValues, doc: str) -> bool:
  """Prints ``doc`` and the flags' help when ``argv`` asks for it (``-h``/``--help``)."""
  if not any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
    return False
  print(doc.strip() + "\n\nflags:\n" + flag_values.get_help(include_special_flags=False))
  print("  --config.FIELD=VALUE: override any field of the config file")
  return True


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
    if not arg.startswith("-"):
      continue
    if not is_override(arg, name):
      raise UserError(f"not a --{name}.FIELD=VALUE override: {arg}")
    path = re.sub(rf"^--?(no)?{re.escape(name)}\.", "", arg).split("=", 1)[0]
    node = config
    for key in path.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        raise UserError(f"unknown config field in an override: {name}.{path}")
      node = node[key]
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


def main(argv: list[str] | None = None) -> int:
  from snnjax.train.ensemble import train_ensemble  # pylint: disable=import-outside-toplevel
  from snnjax.train.loop import train_and_evaluate  # pylint: disable=import-outside-toplevel
  argv = sys.argv if argv is None else argv
  if wants_help(argv, train_flags(argv), __doc__):
    return 0
  xla_cpu.tune()
  quiet_library_logs()
  try:
    config, workdir = parse(argv)
    if config.get("ensemble", 1) != 1:
      result = train_ensemble(config, workdir)
    else:
      result = train_and_evaluate(config, workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({"workdir": os.path.abspath(workdir), **result}))
  return 0
