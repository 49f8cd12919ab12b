"""The cache behind a study: run work dirs keyed by their training config, results keyed by inputs.

Shared by every stage (:mod:`snnjax.studies.stage`).

Layout of a study directory ``DIR``::

  DIR/runs/<name>-<hash>/        one training run (``snnjax.train`` work dir); ``hash`` is the
                                 hash of the run's result-determining config fields
  DIR/results/<stage>-<hash>.json   one analysis result; ``hash`` is the hash of its inputs
  DIR/report/                    report.md, figures, results.json

A run whose config changes gets a new hash, hence a new work dir: runs that did not change are
reused, and runs that depend on a changed one (a finetune run names its Sol-D in
``dense_workdir``; its hash takes the Sol-D's hash, not that path) change hash with it; a study
directory copied or moved elsewhere keeps every hash, so its rerun trains nothing. ``train_and_evaluate`` resumes an interrupted run and
skips a finished one. Results are written atomically, so an interrupted stage leaves no partial
JSON behind and is recomputed on the next start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from typing import Any, Callable, Iterator

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_compilation_cache
import ml_collections
import numpy as np

from snnjax.train import config_io
from snnjax.train import lock as lock_lib

HASH_LENGTH = 12
WORKER_ENV = "SNNJAX_STUDY_WORKER"  # set by ``scripts/study.py --workers N`` in each worker


def _jsonable(value: Any) -> Any:
  """``value`` with ConfigDicts, tuples and numpy scalars/arrays turned into JSON types."""
  if isinstance(value, ml_collections.ConfigDict):
    return _jsonable(config_io.config_to_dict(value))
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, float) and not np.isfinite(value):
    return None
  return value


def to_json(value: Any) -> Any:
  """A JSON-serializable copy of ``value`` (non-finite floats become None)."""
  return _jsonable(value)


def digest(value: Any) -> str:
  """A short stable hash (hex) of a JSON-able ``value`` (dict order does not matter)."""
  text = json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def run_hash(config: ml_collections.ConfigDict, dense_hash: str = "") -> str:
  """Hash of the fields of a training config that determine its numbers, location-free.

  A sparse run names its Sol-D by path (``dense_workdir``); the hash takes ``dense_hash`` (the
  Sol-D's own run hash) in its place, and a scores file's name in place of its path, so copying
  or moving a study directory keeps every hash.
  """
  fields = config_io.result_fields(config_io.config_to_dict(config))
  if fields.get("dense_workdir"):
    fields["dense_workdir"] = {"run_hash": dense_hash}
  # A data-scheduling run names its scores file by path; the study names those files by the hash
  # of what they hold (``fisher_scores.scores_path``), so the file name is the identity.
  if fields.get("curriculum", {}).get("scores_path"):
    fields["curriculum"]["scores_path"] = os.path.basename(fields["curriculum"]["scores_path"])
  return digest(fields)


@contextlib.contextmanager
def compilation_cache(directory: str) -> Iterator[str | None]:
  """JAX's persistent compilation cache in ``directory`` for the duration of the block.

  The runs of a study share architectures and shapes; each run builds fresh jitted functions, so
  without this cache every run recompiles the same programs (most of a small run's wall time on
  CPU). A cache the process already uses is left as it is; otherwise the previous settings are
  restored on exit. Yields the cache directory in use.
  """
  current = jax.config.jax_compilation_cache_dir
  if current:
    yield current
    return
  min_time = jax.config.jax_persistent_cache_min_compile_time_secs
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  try:
    yield directory
  finally:
    jax.config.update("jax_compilation_cache_dir", current)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)
    jax_compilation_cache.reset_cache()


def log(message: str) -> None:
  """One progress line on stderr (``[study worker I]`` in a worker started by ``--workers``)."""
  worker = os.environ.get(WORKER_ENV)
  tag = f"study worker {worker}" if worker else "study"
  print(f"[{tag}] {message}", file=sys.stderr, flush=True)


def write_json(path: str, value: Any) -> None:
  """Writes ``value`` as JSON atomically (temporary file, then rename)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(_jsonable(value), f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


class StageCache:
  """Results of analysis stages under ``DIR/results``, keyed by a hash of their inputs.

  ``computed`` and ``reused`` list the result files of this session (for the report and tests).
  """

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
    self.results_dir = os.path.join(self.directory, "results")
    self.runs_dir = os.path.join(self.directory, "runs")
    self.computed: list[str] = []
    self.reused: list[str] = []
    # seconds each result took to compute, whether this session or an earlier one
    self.compute_times: dict[str, float] = {}

  def run_workdir(self, name: str, run_digest: str) -> str:
    """The work dir of the run ``name`` whose :func:`run_hash` is ``run_digest``."""
    return os.path.join(self.runs_dir, f"{name}-{run_digest}")

  def result_path(self, stage: str, inputs: Any) -> str:
    return os.path.join(self.results_dir, f"{stage}-{digest(inputs)}.json")

  def cached(self, stage: str, inputs: Any, compute: Callable[[], Any]) -> Any:
    """The stored result of ``stage`` for ``inputs``, or ``compute()`` stored and returned.

    ``inputs`` is any JSON-able value that determines the result (settings, the hashes of the
    runs it reads). The result goes through JSON either way, so a reused result and a freshly
    computed one are the same Python values.
    """
    path = self.result_path(stage, inputs)
    stored = self._stored(stage, path)
    if stored is not None:
      return stored
    # Several workers on one study: one computes, the others wait for it and read its result.
    os.makedirs(self.results_dir, exist_ok=True)
    with lock_lib.hold(path + ".lock", wait=True,
                       on_wait=lambda owner: log(f"{stage}: waiting for {lock_lib.describe(owner)}")):
      stored = self._stored(stage, path)
      if stored is not None:
        return stored
      return self._compute(stage, inputs, path, compute)

  def _stored(self, stage: str, path: str) -> Any:
    if not os.path.exists(path):
      return None
    try:
      stored = read_json(path)
    except (OSError, json.JSONDecodeError):
      return None
    if not (isinstance(stored, dict) and "result" in stored):
      return None
    self.reused.append(path)
    self.compute_times[os.path.basename(path)] = float(stored.get("wall_time_s") or 0.0)
    log(f"{stage}: reusing {os.path.relpath(path, self.directory)}")
    return stored["result"]

  def _compute(self, stage: str, inputs: Any, path: str, compute: Callable[[], Any]) -> Any:
    log(f"{stage}: computing")
    t0 = time.time()
    result = compute()
    elapsed = time.time() - t0
    self.compute_times[os.path.basename(path)] = elapsed
    write_json(path, {"stage": stage, "inputs": inputs, "wall_time_s": elapsed,
                      "result": result})
    self.computed.append(path)
    return read_json(path)["result"]
