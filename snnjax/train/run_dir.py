"""Provisional RunDir (replaced by the train-layer seams branch)."""

from __future__ import annotations

import json
import os

from snnjax.train.checkpoint import CheckpointStore
from snnjax.train.solution import load_solution


class RunDir:

  def __init__(self, path: str):
    self.path = os.path.abspath(path)

  def records(self) -> list[dict]:
    path = os.path.join(self.path, "metrics.jsonl")
    if not os.path.exists(path):
      return []
    with open(path) as f:
      return [json.loads(line) for line in f if line.strip()]

  def epoch_records(self) -> list[dict]:
    return [r for r in self.records() if "epoch" in r]

  @property
  def train_seconds(self) -> float:
    return float(sum(r.get("epoch_time_s", 0.0) for r in self.records()))

  def checkpoint_steps(self) -> list[int]:
    return CheckpointStore(os.path.join(self.path, "checkpoints"), read_only=True).steps()

  def solution(self, step=None):
    if step is None:
      return load_solution(self.path)
    return load_solution(os.path.join(self.path, "checkpoints"), step=step)

  def init_solution(self):
    return load_solution(os.path.join(self.path, "init"))

  @property
  def finished(self) -> bool:
    from snnjax.train import loop
    return loop.finished_metrics(os.path.join(self.path, "checkpoints")) is not None

  @property
  def trained_epochs(self) -> int:
    from snnjax.train import loop
    return loop.trained_epochs(self.path)
