"""Orbax checkpoints of a run: the train state plus a JSON ``meta`` record (config, epoch, metrics).

Layout of a work dir::

  WORKDIR/config.json          the run's config (written once, checked on resume)
  WORKDIR/identity.json        its location-free identity (``config_io.identity_hash``), Sol-D's included
  WORKDIR/init/0/              the state before the first update (Init-S, Init-F, Sol-D's init)
  WORKDIR/checkpoints/<step>/  periodic checkpoints; the one at the last step is the solution
  WORKDIR/metrics.jsonl        one JSON record per epoch

Saves are atomic (orbax writes a temporary directory and renames it), so a run killed mid-save leaves
the previous checkpoint intact; temporary leftovers are cleaned up on the next start.

Integrity: every save records a checksum of each array of the state (``leaf_digests``: sha256 of its
dtype, shape and bytes, from the host arrays) in the meta record under ``"digests"``; every restore of
the state recomputes them and raises ``CorruptCheckpointError`` naming the step and the first leaf
that differs (a flipped bit, a truncated or replaced file). Checkpoints written before checksums
existed restore unverified.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from snnjax.errors import UserError

PyTree = Any
DIGESTS_KEY = "digests"


class CorruptCheckpointError(UserError):
  """A checkpoint whose files cannot be read or whose arrays do not match their checksums."""


def leaf_path(path) -> str:
  """``params/stem/kernel``-style name of a pytree key path (dict keys, sequence indices, fields)."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def leaf_digests(tree: PyTree) -> dict[str, str]:
  """``{leaf path: 16 hex digits}``: sha256 of each leaf's dtype, shape and C-order bytes (host
  copies; a device array is fetched)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    a = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    out[leaf_path(path)] = h.hexdigest()[:16]
  return out


def first_mismatch(expected: dict[str, str], tree: PyTree) -> str | None:
  """The first leaf of ``tree`` whose digest differs from ``expected`` (or that ``expected`` lacks,
  or that ``tree`` lacks); None when all match."""
  actual = leaf_digests(tree)
  for name, value in actual.items():
    if expected.get(name) != value:
      return name
  missing = sorted(set(expected) - set(actual))
  return missing[0] if missing else None


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
    meta = {**meta, DIGESTS_KEY: leaf_digests(state)}
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore_meta(self, step: int) -> dict:
    try:
      with _quiet(True):  # errors become the one UserError below, not absl log lines as well
        out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable files
      _drop_closed_loop_callbacks()
      raise CorruptCheckpointError(
          f"checkpoint {self.directory}/{step} is corrupt or unreadable "
          f"({type(e).__name__}: {_first_line(e)}){RESTORE_ADVICE}") from e
    if not isinstance(out["meta"], dict):
      raise CorruptCheckpointError(f"checkpoint {self.directory}/{step} has no meta record{RESTORE_ADVICE}")
    return dict(out["meta"])

  def restore(self, step: int, target: PyTree) -> tuple[PyTree, dict]:
    """Restores ``(state, meta)`` at ``step``, verified against the meta's checksums; ``target``
    gives the expected structure and shapes.

    Raises:
      CorruptCheckpointError: unreadable files, another structure or shapes than ``target``, or
        an array that differs from the one saved (the message names the step and the leaf).
    """
    meta = self.restore_meta(step)
    abstract = jax.device_get(target)  # host numpy: every process reads the same files
    try:
      with _quiet(True):
        out = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
    except Exception as e:
      _drop_closed_loop_callbacks()
      raise CorruptCheckpointError(
          f"checkpoint {self.directory}/{step} is corrupt or does not match the model/config "
          f"({type(e).__name__}: {_first_line(e)}){RESTORE_ADVICE}") from e
    expected = meta.get(DIGESTS_KEY)
    if expected is not None:
      bad = first_mismatch(expected, out["state"])
      if bad is not None:
        raise CorruptCheckpointError(
            f"checkpoint {self.directory}/{step} is corrupt: leaf {bad} does not match its "
            f"checksum{RESTORE_ADVICE}")
    return out["state"], meta

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


def _drop_closed_loop_callbacks() -> None:
  """After a failed restore, tensorstore's reads of the other leaves still finish and call back into
  orbax's event loop, closed by then: each raises an unraisable ``RuntimeError: Event loop is
  closed`` that Python would print (dozens of tracebacks after the one error line). Those, and only
  those, are dropped from now on in this process."""
  previous = sys.unraisablehook
  if getattr(previous, "_snnjax_filter", False):
    return

  def hook(unraisable):
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
      return
    previous(unraisable)

  hook._snnjax_filter = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


RESTORE_ADVICE = ("; move that step directory away to resume from the previous checkpoint, or use "
                  "a fresh --workdir")


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0][:300] if text else ""
