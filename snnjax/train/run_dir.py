"""``RunDir(workdir)``: what a run's work dir holds, read in one place.

The only reader of ``metrics.jsonl`` and of the checkpoint listings (see ``checkpoint`` for the
layout). Nothing is cached: a run being trained is read as it is now.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import ml_collections

from snnjax.errors import UserError
from snnjax.train import config_io
from snnjax.train import parallel
from snnjax.train.checkpoint import CheckpointStore
from snnjax.train.lock import LOCK_FILE
from snnjax.train.solution import Solution, load_solution

METRICS_FILE = "metrics.jsonl"


class RunDir:
  """The work dir of one training run (it need not exist yet)."""

  def __init__(self, path: str | os.PathLike):
    self.path = os.path.abspath(os.fspath(path))

  def __repr__(self) -> str:
    return f"RunDir({self.path!r})"

  @property
  def exists(self) -> bool:
    return os.path.isdir(self.path)

  @property
  def config_path(self) -> str:
    return os.path.join(self.path, "config.json")

  @property
  def metrics_path(self) -> str:
    return os.path.join(self.path, METRICS_FILE)

  @property
  def checkpoints_dir(self) -> str:
    return os.path.join(self.path, "checkpoints")

  @property
  def init_dir(self) -> str:
    return os.path.join(self.path, "init")

  @property
  def lock_path(self) -> str:
    """``lock.json``: held (``snnjax.train.lock``) while a process trains the run."""
    return os.path.join(self.path, LOCK_FILE)

  @property
  def identity_path(self) -> str:
    return os.path.join(self.path, config_io.IDENTITY_FILE)

  def config_dict(self) -> dict | None:
    """The stored config.json as a dict; None if absent. Raises UserError when unreadable."""
    return config_io.read_json(self.config_path)

  @property
  def config(self) -> ml_collections.ConfigDict | None:
    d = self.config_dict()
    return None if d is None else config_io.config_from_dict(d)

  def write_records(self, records: list[dict]) -> None:
    """Writes ``records`` as metrics.jsonl, atomically (temporary file, then rename), in strict
    JSON: non-finite floats become null (:func:`strict_json_values`). Only the primary process
    of a multi-process run writes (:func:`parallel.is_primary`)."""
    if not parallel.is_primary():
      return
    tmp = self.metrics_path + ".tmp"
    with open(tmp, "w") as f:
      for r in records:
        f.write(json.dumps(strict_json_values(r), allow_nan=False) + "\n")
    os.replace(tmp, self.metrics_path)

  def records(self) -> list[dict]:
    """Every record of metrics.jsonl, in order; a partial last line (a write cut short) is left out."""
    if not os.path.exists(self.metrics_path):
      return []
    with open(self.metrics_path, errors="replace") as f:  # binary garbage: a JSON error below
      lines = [line for line in f.read().split("\n") if line.strip()]
    out = []
    for i, line in enumerate(lines):
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError as e:
        if i == len(lines) - 1:
          break
        raise UserError(f"{self.metrics_path}: line {i + 1} is not JSON ({e})") from e
    return out

  def epoch_records(self) -> list[dict]:
    """The per-epoch records (``epoch``, ``step``, ``lr``, ``batch_loss``, ..., ``epoch_time_s`` and,
    on evaluated epochs, the train/test metrics)."""
    out = []
    for i, r in enumerate(self.records()):
      if not (isinstance(r, dict) and "epoch" in r and "step" in r):
        continue
      if not all(isinstance(r[k], int) and not isinstance(r[k], bool) and r[k] >= 0
                 for k in ("epoch", "step")):
        raise UserError(f"{self.metrics_path}: record {i + 1} has a bad epoch or step "
                        f"({r['epoch']!r}, {r['step']!r}); move the file away to rewrite it")
      out.append(r)
    return out

  @property
  def train_seconds(self) -> float:
    """Seconds the recorded epochs took to train (evaluation excluded)."""
    return float(sum(r.get("epoch_time_s", 0.0) for r in self.epoch_records()))

  def checkpoint_steps(self) -> list[int]:
    """Steps of the checkpoints kept in ``checkpoints/``, ascending ([] before the first)."""
    return self._steps(self.checkpoints_dir)

  def _steps(self, directory: str) -> list[int]:
    if not os.path.isdir(directory):
      return []
    store = CheckpointStore(directory, read_only=True)
    try:
      return store.steps()
    finally:
      store.close()

  def latest_meta(self) -> dict:
    """The meta record of the latest checkpoint ({} before the first)."""
    if not os.path.isdir(self.checkpoints_dir):
      return {}
    store = CheckpointStore(self.checkpoints_dir, read_only=True)
    try:
      last = store.latest_step()
      return store.restore_meta(last) if last is not None else {}
    finally:
      store.close()

  @property
  def finished(self) -> bool:
    """Whether the latest checkpoint is the run's last epoch's (the run is done), verified: its
    arrays restored against the run's config and checked against their checksums."""
    return self.final_metrics() is not None

  def final_metrics(self, *, verify: bool = True) -> dict | None:
    """The last epoch's record of a finished run; None if the run is unfinished or absent.

    With ``verify`` (default) the final checkpoint is restored and checked (``verify_latest``), so
    a corrupt, truncated or replaced solution is never reported as finished.

    Raises:
      CorruptCheckpointError: the final checkpoint does not restore or match its checksums.
    """
    meta = self.latest_meta()
    if not meta.get("finished"):
      return None
    if verify:
      self.verify_latest()
    return meta["final_metrics"]

  def verify_latest(self) -> None:
    """Restores the latest checkpoint against the run's config (structure, shapes, checksums);
    raises ``CorruptCheckpointError`` (step and leaf named) when it does not match."""
    self.solution()

  @property
  def trained_epochs(self) -> int:
    """Epochs trained as of the latest checkpoint (0: none yet)."""
    return int(self.latest_meta().get("epoch", 0))

  def solution(self, step: int | None = None) -> Solution:
    """The solution (the latest checkpoint) or, with ``step``, the kept checkpoint at that step."""
    return load_solution(self.path, step=step)

  def init_solution(self) -> Solution:
    """The state before the first update (Init-S, Init-F, Sol-D's init)."""
    return load_solution(self.init_dir)

  def stored_identity(self) -> dict | None:
    """identity.json (``{"identity", "dense_identity"}`` and, for a run with a curriculum, its
    scores file's ``scores_digest``; written when the run first trained)."""
    return config_io.read_json(self.identity_path)

  @property
  def identity(self) -> str:
    """The run's location-free identity hash (``config_io.identity_hash`` of its config)."""
    stored = self.stored_identity()
    if stored is not None and stored.get("identity"):
      return str(stored["identity"])
    d = self.config_dict()
    if d is None:
      raise UserError(f"no run at {self.path} (no config.json)")
    return config_io.identity_hash(d)

  @property
  def dense_identity(self) -> str:
    """The identity hash of the Sol-D run this run started from ("" for a run that needs none)."""
    stored = self.stored_identity()
    if stored is not None and "dense_identity" in stored:
      return str(stored["dense_identity"])
    d = self.config_dict()
    if d is None:
      raise UserError(f"no run at {self.path} (no config.json)")
    return str(config_io.run_identity(d).get("dense_workdir", ""))

  def write_config(self, config: ml_collections.ConfigDict) -> None:
    """Creates the work dir and writes config.json, unless present (kept as it is on resume; the
    primary process writes)."""
    os.makedirs(self.path, exist_ok=True)
    if not os.path.exists(self.config_path) and parallel.is_primary():  # atomic: a concurrent reader never sees half of it
      tmp = self.config_path + ".tmp"
      with open(tmp, "w") as f:
        f.write(config_io.format_config(config))
      os.replace(tmp, self.config_path)

  def write_identity(self, config: ml_collections.ConfigDict) -> None:
    """Writes identity.json for a run of ``config`` (its Sol-D resolved now), unless present."""
    if os.path.exists(self.identity_path) or not parallel.is_primary():
      return
    fields = config_io.run_identity(config_io.config_to_dict(config))
    if str(fields.get("dense_workdir", "")).startswith(config_io.UNRESOLVED):
      return  # no Sol-D to name (yet): computed from config.json when asked
    record = {"identity": config_io.digest(fields), "dense_identity": fields.get("dense_workdir", "")}
    scores = config_io.curriculum_scores_path(config_io.config_to_dict(config))
    if scores and config_io.scores_digest(scores) is not None:
      record["scores_digest"] = config_io.scores_digest(scores)  # its content: compared on resume
    tmp = self.identity_path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(record, f, indent=2, sort_keys=True)
    os.replace(tmp, self.identity_path)


def strict_json_values(value: Any) -> Any:
  """``value`` with every non-finite float (NaN, +-inf) replaced by None, so that it serializes as
  strict JSON (``null``, never the bare ``NaN``/``Infinity`` tokens)."""
  if isinstance(value, dict):
    return {k: strict_json_values(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json_values(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value
