"""The ``scripts/train.py`` command line: ``--config FILE[:preset] [--config.field=value ...] --workdir DIR``.

Bad input (an unknown flag, a config value out of range, a missing file or prerequisite run, a corrupt
checkpoint) prints one ``error:`` line and exits with code 2 before anything is written.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags
from ml_collections import config_flags

from snnjax import xla_cpu
from snnjax.errors import UserError
from snnjax.train.config_io import load_config_spec

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


def _config_file_arg(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
  return None


def _caused_by_key_error(e: BaseException | None) -> bool:
  while e is not None:
    if isinstance(e, KeyError):
      return True
    e = e.__cause__ or e.__context__
  return False


def parse(argv: list[str]):
  """Parses ``argv`` (program name first); returns ``(config, workdir)`` or raises UserError."""
  spec = _config_file_arg(argv)
  if spec is None:
    raise UserError("--config is required, e.g. --config configs/scratch95.py:quick")
  if not os.path.isfile(spec.partition(":")[0]):
    raise UserError(f"config file not found: {spec.partition(':')[0]}")
  try:  # load it once ourselves: a bad preset or a broken file gets its own one-line message
    load_config_spec(spec)
  except (ValueError, TypeError, AttributeError, ImportError, SyntaxError, KeyError) as e:
    raise UserError(f"cannot load config {spec}: {e}") from e
  flag_values = train_flags(argv)
  try:
    flag_values(argv)
    config = flag_values.config
  except (flags.Error, OSError, ImportError, AttributeError, TypeError, ValueError, KeyError) as e:
    if _caused_by_key_error(e):  # ml_collections: an override of a field the config lacks
      raise UserError(f"unknown config field in an override: {str(e).strip(chr(34))}") from e
    text = " ".join(l.strip() for l in str(e).splitlines() if l.strip())
    raise UserError(text[:400] or type(e).__name__) from e
  return config, flag_values.workdir or default_workdir(spec)


def quiet_library_logs() -> None:
  """Orbax and friends log through absl; the CLIs report problems as one ``error:`` line instead."""
  from absl import logging  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.FATAL)


def main(argv: list[str] | None = None) -> int:
  from snnjax.train.loop import train_and_evaluate  # pylint: disable=import-outside-toplevel
  argv = sys.argv if argv is None else argv
  if wants_help(argv, train_flags(argv), __doc__):
    return 0
  xla_cpu.tune()
  quiet_library_logs()
  try:
    config, workdir = parse(argv)
    result = train_and_evaluate(config, workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({"workdir": os.path.abspath(workdir), **result}))
  return 0
