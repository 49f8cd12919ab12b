"""Lock files: one owner at a time for a work dir (or any claimable thing, e.g. a study's run).

A lock is a small JSON file ``{"token", "pid", "host", "started", "heartbeat", ...}`` created
atomically: written in full to a unique temporary name, then hard-linked to ``path`` (``os.link``
fails when ``path`` exists, so exactly one of several racing processes gets it, and a reader never
sees a half-written lock). The owner refreshes ``heartbeat`` (``Lock.heartbeat``; ``hold`` does it
from a background thread) and removes the file on release.

A lock is **stale**, and is taken over by the next ``try_acquire``, when its owner is gone: its pid
no longer runs on this host (or is a zombie), or, from any host, its heartbeat is older than
``stale_after_s``. A kill -9 thus frees a work dir at once for the next run on the same host.

API (also for the study's multi-worker mode, several processes claiming runs of one directory)::

  lock = try_acquire(path, stale_after_s=120)   # Lock, or None while another owner holds it
  lock.heartbeat(); lock.release()
  with hold(path, wait=False) as lock: ...      # LockedError naming the owner (wait=False), or
                                                # waits up to ``wait`` seconds (True: no limit)
  owner(path)                                   # the record, or None when nobody holds it
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from typing import Iterator

from snnjax.errors import UserError

DEFAULT_STALE_S = 120.0  # a live owner heartbeats every stale_after_s / 4
LOCK_FILE = "lock.json"  # a work dir's lock: WORKDIR/lock.json


class LockedError(UserError):
  """The lock is held by another live owner."""


def _host() -> str:
  return socket.gethostname()


def owner(path: str | os.PathLike) -> dict | None:
  """The lock's record (``token``, ``pid``, ``host``, ``started``, ``heartbeat``, extra info);
  None when there is no lock file. A file that is not a lock record reads as ``{}`` (stale)."""
  try:
    with open(path) as f:
      record = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}
  return record if isinstance(record, dict) else {}


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:  # a killed child not yet waited for is a zombie: gone for our purposes
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (OSError, IndexError):
    return True


def is_stale(record: dict, *, stale_after_s: float = DEFAULT_STALE_S, now: float | None = None
             ) -> bool:
  """Whether the owner of ``record`` is gone: its pid is dead on this host, or its heartbeat is
  older than ``stale_after_s`` seconds (or the record is unreadable)."""
  now = time.time() if now is None else now
  try:
    pid, host, beat = int(record["pid"]), str(record["host"]), float(record["heartbeat"])
  except (KeyError, TypeError, ValueError):
    return True
  if host == _host() and not _pid_alive(pid):
    return True
  return now - beat > stale_after_s


def describe(record: dict | None) -> str:
  """``pid 123 on host h (since 2026-12-02T04:00:00Z)`` for messages."""
  if not record:
    return "an unknown owner"
  started = record.get("started")
  since = (time.strftime(" (since %Y-%m-%dT%H:%M:%SZ)", time.gmtime(float(started)))
           if isinstance(started, (int, float)) else "")
  return f"pid {record.get('pid')} on host {record.get('host')}{since}"


class Lock:
  """A lock this process holds; ``release()`` it (or use ``hold``)."""

  def __init__(self, path: str, record: dict):
    self.path = path
    self.record = record
    self._beater: threading.Thread | None = None
    self._stop = threading.Event()

  @property
  def token(self) -> str:
    return self.record["token"]

  def held(self) -> bool:
    """Whether the lock file is still this lock's (not released, not taken over)."""
    current = owner(self.path)
    return bool(current) and current.get("token") == self.token

  def heartbeat(self) -> bool:
    """Refreshes the heartbeat; returns False (and writes nothing) when the lock is no longer ours."""
    if not self.held():
      return False
    self.record = {**self.record, "heartbeat": time.time()}
    tmp = f"{self.path}.{self.token}.beat"
    with open(tmp, "w") as f:
      json.dump(self.record, f)
    os.replace(tmp, self.path)
    return True

  def start_heartbeat(self, every_s: float) -> None:
    """Heartbeats every ``every_s`` seconds from a daemon thread until ``release``."""
    def beat():
      while not self._stop.wait(every_s):
        try:
          if not self.heartbeat():
            return
        except OSError:
          return
    self._beater = threading.Thread(target=beat, name=f"heartbeat {self.path}", daemon=True)
    self._beater.start()

  def release(self) -> None:
    """Stops the heartbeat and removes the lock file if it is still this lock's."""
    self._stop.set()
    if self._beater is not None:
      self._beater.join()
      self._beater = None
    if self.held():
      with contextlib.suppress(FileNotFoundError):
        os.unlink(self.path)

  def __enter__(self) -> "Lock":
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()


def _create(path: str, record: dict) -> bool:
  tmp = f"{path}.{record['token']}.new"
  with open(tmp, "w") as f:
    json.dump(record, f)
  try:
    os.link(tmp, path)
    return True
  except FileExistsError:
    return False
  finally:
    os.unlink(tmp)


def _remove_stale(path: str, stale: dict, token: str) -> None:
  """Moves the stale lock ``stale`` out of the way, unless another process replaced it first."""
  grave = f"{path}.{token}.stale"
  try:
    os.rename(path, grave)
  except FileNotFoundError:
    return
  moved = owner(grave)
  if moved != stale and moved:  # a fresh lock took its place meanwhile: put it back
    with contextlib.suppress(FileExistsError):
      os.link(grave, path)
  os.unlink(grave)


def try_acquire(path: str | os.PathLike, *, stale_after_s: float = DEFAULT_STALE_S,
                info: dict | None = None) -> Lock | None:
  """Takes the lock at ``path`` (its directory must exist), taking over a stale one; returns None
  while a live owner holds it. ``info`` (JSON values) is stored in the record for ``owner``."""
  path = os.fspath(path)
  now = time.time()
  record = {**(info or {}), "token": uuid.uuid4().hex, "pid": os.getpid(), "host": _host(),
            "started": now, "heartbeat": now}
  for _ in range(3):
    if _create(path, record):
      return Lock(path, record)
    current = owner(path)
    if current is None:
      continue  # released meanwhile
    if not is_stale(current, stale_after_s=stale_after_s):
      return None
    _remove_stale(path, current, record["token"])
  return None


def acquire(path: str | os.PathLike, *, wait: bool | float = False,
            stale_after_s: float = DEFAULT_STALE_S, poll_s: float = 0.5, info: dict | None = None,
            on_wait=None) -> Lock:
  """``try_acquire`` until it succeeds: at once or ``LockedError`` (``wait=False``), for up to
  ``wait`` seconds, or without limit (``wait=True``). ``on_wait(record)`` is called once, when the
  first attempt finds the lock held."""
  deadline = None if wait is True else time.monotonic() + float(wait or 0)
  told = False
  while True:
    lock = try_acquire(path, stale_after_s=stale_after_s, info=info)
    if lock is not None:
      return lock
    record = owner(path)
    if deadline is not None and time.monotonic() >= deadline:
      raise LockedError(f"{os.fspath(path)} is held by {describe(record)}; wait for it to finish "
                        f"(or, if that process is gone, remove {os.fspath(path)})")
    if not told and on_wait is not None:
      on_wait(record)
      told = True
    time.sleep(poll_s)


@contextlib.contextmanager
def hold(path: str | os.PathLike, *, wait: bool | float = False,
         stale_after_s: float = DEFAULT_STALE_S, info: dict | None = None, on_wait=None
         ) -> Iterator[Lock]:
  """The lock at ``path`` for the ``with`` block (``acquire``), heartbeating every
  ``stale_after_s / 4`` seconds, released on exit (also on errors)."""
  lock = acquire(path, wait=wait, stale_after_s=stale_after_s, info=info, on_wait=on_wait)
  try:
    lock.start_heartbeat(stale_after_s / 4)
    yield lock
  finally:
    lock.release()
