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
again. A run that has no training event file yet when the field is turned on gets its earlier
epochs from ``metrics.jsonl``: a resumed run writes them into its new event file before its next
epoch; a finished run (not retrained) gets them in one file of fixed name, :data:`METRICS_EVENTS`,
written atomically (two processes doing it at once leave one file).

A study with ``tensorboard=True`` (``snnjax.studies.events``) adds its measured curvature of
the run to the same directory, in a file of its own, :data:`STUDY_EVENTS`, replaced on every
study run (:func:`write_file`).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from typing import Any, Iterable

from snnjax.errors import UserError

EVENTS_DIR = "tensorboard"
INSTALL_HINT = "pip install 'snnjax[tensorboard]' (tensorboardX)"
NOT_SCALARS = ("epoch", "step")  # the x axis, not curves
# Event files of fixed names (TensorBoard reads every file with "tfevents" in its name, in name
# order; these sort after the writer's own ``events.out.tfevents.<time>.<host>`` files).
METRICS_EVENTS = "events.out.tfevents.snnjax-metrics"  # a finished run's curves, from metrics.jsonl
STUDY_EVENTS = "events.out.tfevents.snnjax-study"      # a study's measurements of the run


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


def events_dir(workdir: str) -> str:
  return os.path.join(workdir, EVENTS_DIR)


def event_files(workdir: str) -> list[str]:
  """Names of the event files in ``WORKDIR/tensorboard`` (what TensorBoard reads), sorted."""
  directory = events_dir(workdir)
  if not os.path.isdir(directory):
    return []
  return sorted(n for n in os.listdir(directory)
                if "tfevents" in n and os.path.isfile(os.path.join(directory, n)))


def has_training_events(workdir: str) -> bool:
  """Whether the run's training curves have an event file (a study's :data:`STUDY_EVENTS` is not
  one)."""
  return any(n != STUDY_EVENTS for n in event_files(workdir))


def write_file(path: str, points: Iterable[tuple[str, float, int]]) -> str:
  """Writes the scalars ``(tag, value, step)`` as the event file ``path``, replacing any file there
  atomically (written in a temporary folder beside the event folder, then renamed). Returns
  ``path``."""
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tensorboard-tmp-", dir=os.path.dirname(directory))
  try:
    writer = SummaryWriter(logdir=tmp, flush_secs=3600)
    for tag, value, step in points:
      writer.add_scalar(tag, float(value), global_step=int(step))
    writer.close()
    written = [n for n in os.listdir(tmp) if "tfevents" in n]
    if len(written) != 1:
      raise RuntimeError(f"tensorboardX wrote {written} in {tmp}; expected one event file")
    os.replace(os.path.join(tmp, written[0]), path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return path


def record_points(records: Iterable[dict]) -> list[tuple[str, float, int]]:
  """``(tag, value, epoch)`` of every scalar of the epoch records (as :meth:`EventWriter.write`)."""
  return [(tag, value, int(r["epoch"])) for r in records for tag, value in scalars(r).items()]


def write_finished(config, workdir: str, records: list[dict], *, primary: bool = True
                   ) -> str | None:
  """A finished run's curves from its ``metrics.jsonl`` ``records`` as :data:`METRICS_EVENTS`,
  when ``config.tensorboard`` is on and the run has no training event file yet; returns the path
  written, or None."""
  if not (enabled(config) and primary) or has_training_events(workdir) or not records:
    return None
  check_available(config)
  return write_file(os.path.join(events_dir(workdir), METRICS_EVENTS), record_points(records))
