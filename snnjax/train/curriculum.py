"""Data scheduling: which examples form each batch early in training.

The study proposes scheduling the data to close the Sol-S / Sol-F gap, described two opposite ways:
train first on the examples with the *lowest* per-example Fisher trace, picked from a random pool (the
blog post), or *hardest* first (the paper). Both are offered, named ``low_first`` and ``high_first``.

During the scheduled epochs each step draws a random pool of ``pool_factor * batch_size`` examples
(seeded by ``(seed, epoch, step)``) and trains on the ``batch_size`` of them with the lowest (or
highest) score; later epochs use plain shuffled batches. The per-example scores (e.g. the Fisher
trace at Init-S, computed by ``snnjax.studies.fisher_scores``) are fixed for the run and come from an
``.npy`` file of shape (N,) named in ``config.curriculum.scores_path``.
"""

from __future__ import annotations

import os

import numpy as np

from snnjax.errors import UserError

ORDERS = ("none", "low_first", "high_first")


def load_scores(path: str, num_train: int) -> np.ndarray:
  """Reads the (N,) per-example scores; a missing file or a wrong shape is a UserError."""
  if not path or not os.path.isfile(path):
    raise UserError(f"config.curriculum.scores_path: no scores file at {path!r} (an .npy of shape "
                    f"({num_train},); `python scripts/study.py` computes it in its closing-the-gap stage)")
  try:
    scores = np.load(path)
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read curriculum scores {path}: {e}") from e
  if scores.shape != (num_train,) or not np.all(np.isfinite(scores)):
    raise UserError(f"curriculum scores {path} have shape {scores.shape}; expected ({num_train},) "
                    "finite values, one per training example")
  return scores


def pool_batches(scores: np.ndarray, *, order: str, seed: int, epoch: int, num_steps: int,
                 batch_size: int, pool_factor: float) -> list[np.ndarray]:
  """``num_steps`` index batches of size ``batch_size``, each the lowest/highest-scored part of a pool.

  Args:
    scores: (N,) per-example scores.
    order: ``low_first`` or ``high_first``.
    seed, epoch: seed the pools (step i of an epoch uses ``default_rng((seed, epoch, i))``).
    pool_factor: pool size as a multiple of ``batch_size`` (>= 1; 1 gives random batches).
  Returns:
    A list of (batch_size,) int32 arrays of example indices.
  """
  if order not in ORDERS[1:]:
    raise UserError(f"config.curriculum.kind must be one of {ORDERS}, got {order!r}")
  n = len(scores)
  pool_size = min(n, max(batch_size, int(round(pool_factor * batch_size))))
  sign = 1.0 if order == "low_first" else -1.0
  batches = []
  for i in range(num_steps):
    pool = np.random.default_rng((seed, epoch, i)).choice(n, pool_size, replace=False)
    chosen = pool[np.argsort(sign * scores[pool], kind="stable")[:batch_size]]
    batches.append(np.sort(chosen).astype(np.int32))
  return batches
