"""Erdos-Renyi-Kernel (ERK) layer densities (Evci et al. 2020, "Rigging the Lottery").

Each layer l with shape s_l gets density ``d_l = eps * r_l`` with
``r_l = (sum(s_l) / prod(s_l)) ** power_scale``; ``eps`` is set so that the active count
``sum_l d_l * n_l`` (n_l = prod(s_l)) equals ``(1 - sparsity) * sum_l n_l``. Layers whose
density would exceed 1 are made dense and ``eps`` is solved again over the rest, until no
layer exceeds 1. Integer counts follow by largest remainder so that the total is exact.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from snnjax.errors import UserError


def round_half_up(x: float) -> int:
  return int(math.floor(x + 0.5))


def erk_densities(shapes: Sequence[Sequence[int]], sparsity: float, *,
                  power_scale: float = 1.0) -> np.ndarray:
  """(L,) float64 ERK densities in (0, 1] of layers with the given kernel ``shapes``."""
  if not 0.0 <= sparsity < 1.0:
    raise UserError(f"sparsity must be in [0, 1), got {sparsity}")
  sizes = np.array([math.prod(s) for s in shapes], dtype=np.float64)
  scores = np.array([sum(s) / math.prod(s) for s in shapes], dtype=np.float64) ** power_scale
  target = (1.0 - sparsity) * sizes.sum()
  dense = np.zeros(len(shapes), bool)
  eps = 0.0
  while True:
    budget = target - sizes[dense].sum()
    weight = (scores * sizes)[~dense].sum()
    if weight <= 0.0:
      break
    eps = budget / weight
    over = ~dense & (eps * scores > 1.0)
    if not over.any():
      break
    dense |= over
  return np.where(dense, 1.0, np.minimum(eps * scores, 1.0))


def apportion(ideal: np.ndarray, sizes: np.ndarray, total: int) -> np.ndarray:
  """Integer counts ``0 <= c_l <= sizes_l`` summing to ``total``, closest to ``ideal``.

  Largest-remainder method: floor every ``ideal_l``, then add one to the layers with the
  largest fractional parts (ties: lower layer index first) until the sum is ``total``.
  """
  ideal = np.clip(np.asarray(ideal, np.float64), 0.0, sizes)
  counts = np.floor(ideal).astype(np.int64)
  remainder = ideal - counts
  missing = int(total - counts.sum())
  # Stable sort on -remainder: largest first, ties by index.
  order = np.argsort(-remainder, kind="stable")
  while missing > 0:
    progressed = False
    for l in order:
      if missing == 0:
        break
      if counts[l] < sizes[l]:
        counts[l] += 1
        missing -= 1
        progressed = True
    if not progressed:
      raise UserError(f"cannot place {total} active weights in layers of {int(sizes.sum())}")
  for l in order[::-1]:  # Floating error only: take back from the smallest remainders.
    if missing == 0:
      break
    if counts[l] > 0:
      counts[l] -= 1
      missing += 1
  return counts


def erk_counts(shapes: Sequence[Sequence[int]], sparsity: float, *,
               power_scale: float = 1.0) -> np.ndarray:
  """(L,) int64 active weights per layer; they sum to ``N - round(sparsity * N)``."""
  sizes = np.array([math.prod(s) for s in shapes], dtype=np.int64)
  total = int(sizes.sum())
  active = total - round_half_up(sparsity * total)
  densities = erk_densities(shapes, sparsity, power_scale=power_scale)
  return apportion(densities * sizes, sizes, active)
