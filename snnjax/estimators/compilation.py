"""Compilations of the estimators: a counter (for tests and users) and JAX's persistent cache.

The estimators compile once per model function and data shape, not per call: masks of any
density, any number of probes, a new ``jax.tree_util.Partial`` of the same function over new
arrays (e.g. another solution's BatchNorm statistics) and a short last batch of per-example
estimators reuse the compiled programs (``hessian`` module doc; ``fisher._over_data``). A new
plain closure (``lambda p, b: ...`` made per call) is a new function to JAX and compiles again:
pass a Partial. :func:`count_compilations` measures it.

Persistent cache: set the environment variable ``SNNJAX_COMPILATION_CACHE=/path/to/dir`` before
snnjax.estimators is imported (every CLI imports it) or call :func:`enable_persistent_cache`:
JAX then keeps compiled programs on disk (``jax_compilation_cache_dir``) and a later process
with the same programs skips their compilation.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import jax

ENV_VAR = "SNNJAX_COMPILATION_CACHE"
_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCount:
  """A running count of XLA backend compilations (``count``) and their names (``names``)."""

  def __init__(self):
    self.count = 0
    self.names: list[str] = []

  def _listener(self, event: str, duration: float, **kwargs) -> None:
    del duration
    if event == _BACKEND_COMPILE_EVENT:
      self.count += 1
      self.names.append(str(kwargs.get("fun_name", "?")))


@contextlib.contextmanager
def count_compilations() -> Iterator[CompileCount]:
  """Counts XLA compilations inside the ``with`` block (a ``jax.monitoring`` listener).

  Programs served from the in-memory cache are not counted, nor those loaded from the persistent
  cache: only programs XLA compiles.
  """
  counter = CompileCount()
  jax.monitoring.register_event_duration_secs_listener(counter._listener)
  try:
    yield counter
  finally:
    jax.monitoring.unregister_event_duration_listener(counter._listener)


def enable_persistent_cache(path: str | os.PathLike, *, min_compile_secs: float = 0.0) -> None:
  """Turns on JAX's persistent compilation cache in ``path`` (created if missing).

  ``min_compile_secs``: only programs that took at least that long to compile are written (JAX's
  ``jax_persistent_cache_min_compile_time_secs``; 0 = all).
  """
  path = os.fspath(path)
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def enable_from_env() -> str | None:
  """Enables the persistent cache at ``$SNNJAX_COMPILATION_CACHE`` when set; returns the path."""
  path = os.environ.get(ENV_VAR)
  if path:
    enable_persistent_cache(path)
    return path
  return None
