"""TensorBoard event files of a run (``--config.tensorboard=True``): its metrics.jsonl as curves.

``metrics.jsonl`` stays the record; with ``config.tensorboard`` every epoch's record is also
written as TensorBoard scalars to ``WORKDIR/tensorboard/`` (``tensorboard --logdir runs/`` then
shows every run under ``runs/``, one curve per run). The scalars are the record's numbers, under
the record's own names (``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``,
``batch_loss``, ``lr``, ``skipped_steps``, ``mask_change_all``, ``mask_updates``,
``fisher_penalty``, ...; a nested record such as the per-layer ``mask_change`` becomes
``mask_change/<layer>``) with the **epoch** as the step. TensorBoard stores them as float32.

The writer is ``tensorboardX`` (``pip install 'snnjax[tensorboard]'``): a maintained, small
library (protobuf and numpy) that writes the event format without TensorFlow; CLU's metric
writers and ``tf.summary`` need TensorFlow, and ``tensorboard``'s own ``EventFileWriter`` is an
internal module of the viewer. Nothing here is imported by ``import snnjax``; a run without
``config.tensorboard`` never imports tensorboardX.

A resumed run appends a new event file; epochs recomputed after an interruption are written
again (TensorBoard shows the last value written for a step).
"""

from __future__ import annotations

import math
import os
from typing import Any

from snnjax.errors import UserError

EVENTS_DIR = "tensorboard"
INSTALL_HINT = "pip install 'snnjax[tensorboard]' (tensorboardX)"
NOT_SCALARS = ("epoch", "step")  # the x axis, not curves


def enabled(config) -> bool:
  return bool(config.get("tensorboard", False))


def check_available(config) -> None:
  """UserError (before anything is written) when ``config.tensorboard`` is on and tensorboardX
  is not installed."""
  if not enabled(config):
    return
  try:
    import tensorboardX  # pylint: disable=import-outside-toplevel,unused-import  # noqa: F401
  except ImportError as e:
    raise UserError(f"config.tensorboard=True needs tensorboardX: {INSTALL_HINT}") from e


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
  """``{tag: value}`` of every finite number in an epoch record (nested dicts as ``a/b``),
  leaving out the x axis (``epoch``, ``step``), booleans, strings, lists and None."""
  out = {}
  for key, value in record.items():
    if not prefix and key in NOT_SCALARS:
      continue
    tag = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(scalars(value, f"{tag}/"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
      out[tag] = float(value)
  return out


class EventWriter:
  """Writes epoch records to ``WORKDIR/tensorboard`` (a context manager; closes the file)."""

  def __init__(self, workdir: str):
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    self.path = os.path.join(workdir, EVENTS_DIR)
    self._writer = SummaryWriter(logdir=self.path, flush_secs=30)

  def write(self, record: dict) -> None:
    """The record's scalars at step ``record["epoch"]``, flushed (a crash loses nothing)."""
    epoch = int(record["epoch"])
    for tag, value in scalars(record).items():
      self._writer.add_scalar(tag, value, global_step=epoch)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()

  def __enter__(self) -> "EventWriter":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


class _NoWriter:
  def write(self, record: dict) -> None:
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc: Any) -> None:
    pass


def open_writer(config, workdir: str, *, primary: bool = True):
  """An :class:`EventWriter` for ``workdir`` when ``config.tensorboard`` is on (and this is the
  primary process), else a writer that writes nothing. Use as a context manager."""
  if not (enabled(config) and primary):
    return _NoWriter()
  check_available(config)
  return EventWriter(workdir)
