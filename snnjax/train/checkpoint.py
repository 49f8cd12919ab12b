"""Orbax checkpoints of a run: the train state plus a JSON ``meta`` record (config, epoch, metrics).

Layout of a work dir::

  WORKDIR/config.json          the run's config (written once, checked on resume)
  WORKDIR/identity.json        its location-free identity (``config_io.identity_hash``), Sol-D's included
  WORKDIR/init/0/              the state before the first update (Init-S, Init-F, Sol-D's init)
  WORKDIR/checkpoints/<step>/  periodic checkpoints; the one at the last step is the solution
  WORKDIR/metrics.jsonl        one JSON record per epoch

Saves are atomic (orbax writes a temporary directory and renames it), so a run killed mid-save leaves
the previous checkpoint intact; temporary leftovers are cleaned up on the next start.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from snnjax.errors import UserError

PyTree = Any


class CheckpointStore:
  """A directory of step-numbered checkpoints, each holding ``state`` (a pytree) and ``meta`` (JSON).

  Close it when done (``close()``, or ``with CheckpointStore(...) as store:``).
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = None,
               read_only: bool = False):
    self.directory = os.path.abspath(os.fspath(directory))
    if read_only and not os.path.isdir(self.directory):
      raise UserError(f"no checkpoint directory at {self.directory}")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        save_interval_steps=0 if read_only else 1,
        cleanup_tmp_directories=not read_only, enable_async_checkpointing=False)
    # Orbax warns on every read-only open ("Given directory is read only"): that is the intent here.
    with _quiet(read_only):
      self._manager = ocp.CheckpointManager(self.directory, options=options,
                                            item_names=("state", "meta"))

  def steps(self) -> list[int]:
    with _quiet(True):  # an unreadable step's metadata is reported by the restore that needs it
      return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: PyTree, meta: dict) -> None:
    """Saves ``state`` and ``meta`` at ``step`` and waits until it is on disk.

    A step already saved is kept as it is: a resumed run recomputes the same epochs exactly (runs
    are deterministic), so a checkpoint written before an interruption already holds this state.
    """
    if step in self._manager.all_steps():
      return
    state = jax.device_get(state)  # host numpy: written once, by process 0, under jax.distributed
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore_meta(self, step: int) -> dict:
    try:
      with _quiet(True):  # errors become the one UserError below, not absl log lines as well
        out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable files
      raise UserError(f"checkpoint {self.directory}/{step} is corrupt or unreadable "
                      f"({type(e).__name__}: {_first_line(e)})") from e
    return dict(out["meta"])

  def restore(self, step: int, target: PyTree) -> tuple[PyTree, dict]:
    """Restores ``(state, meta)`` at ``step`` as host numpy arrays; ``target`` gives the expected
    structure, shapes and dtypes (every process of a multi-process run reads the same files)."""
    abstract = jax.device_get(target)
    try:
      with _quiet(True):
        out = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:
      raise UserError(f"checkpoint {self.directory}/{step} is corrupt or does not match the "
                      f"model/config ({type(e).__name__}: {_first_line(e)})") from e
    return out["state"], dict(out["meta"])

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> "CheckpointStore":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


@contextlib.contextmanager
def _quiet(active: bool):
  """absl logging (orbax's) limited to fatal messages while ``active``."""
  verbosity = logging.get_verbosity()
  if active:
    logging.set_verbosity(logging.FATAL)
  try:
    yield
  finally:
    logging.set_verbosity(verbosity)


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0][:300] if text else ""
