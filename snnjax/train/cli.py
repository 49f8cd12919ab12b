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

from snnjax.errors import UserError

_FLAGS = flags.FlagValues()
config_flags.DEFINE_config_file("config", None, "Training config file (path[:preset]).",
                                flag_values=_FLAGS, lock_config=False)
flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>).", flag_values=_FLAGS)


def default_workdir(config_spec: str) -> str:
  path, _, arg = config_spec.partition(":")
  name = os.path.basename(path).removesuffix(".py")
  return os.path.join("runs", name + (f"-{arg}" if arg else ""))


def parse(argv: list[str]):
  """Parses ``argv`` (program name first); returns ``(config, workdir)`` or raises UserError."""
  try:
    _FLAGS.unparse_flags()
    _FLAGS(argv)
  except (flags.Error, FileNotFoundError, ImportError, AttributeError, TypeError, ValueError) as e:
    raise UserError(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from e
  if _FLAGS["config"].value is None:
    raise UserError("--config is required, e.g. --config configs/scratch95.py:quick")
  spec = _FLAGS["config"].config_filename
  return _FLAGS.config, _FLAGS.workdir or default_workdir(spec)


def main(argv: list[str] | None = None) -> int:
  from snnjax.train.loop import train_and_evaluate  # pylint: disable=import-outside-toplevel
  argv = sys.argv if argv is None else argv
  try:
    config, workdir = parse(argv)
    result = train_and_evaluate(config, workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({"workdir": os.path.abspath(workdir), **result}))
  return 0
