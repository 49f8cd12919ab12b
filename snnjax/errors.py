"""User-facing errors.

Bad input (an out-of-range config value, a missing file or checkpoint, a corrupt checkpoint, a mask
that does not match the params) raises :class:`UserError`. Its message is one line that says what is
wrong and how to fix it. The command-line entry points turn it into ``error: <message>`` on stderr
and exit code 2.
"""


class UserError(ValueError):
  """Bad input from the user: a config value, a path, a checkpoint, a mask."""


class MaskMismatchError(UserError):
  """A mask whose tree structure or leaf shapes differ from the params it is applied to."""


def check(condition, message: str) -> None:
  """Raises :class:`UserError` with ``message`` unless ``condition`` holds (for validators)."""
  if not condition:
    raise UserError(message)
