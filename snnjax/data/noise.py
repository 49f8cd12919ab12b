"""Synthetic label noise.

Two schemes, both corrupting exactly ``round(rate * N)`` examples chosen uniformly without
replacement (a seeded choice; ``round`` is round-half-up):

* ``"flip"`` (symmetric flip): each chosen example gets a *different* class, drawn uniformly
  among the other ``num_classes - 1`` classes. Every chosen label changes.
* ``"uniform"`` (the original study's generator): each chosen example gets a label drawn
  uniformly from *all* classes, so about ``1 / num_classes`` of them keep their true label and
  the effective noise rate is ``rate * (1 - 1 / num_classes)``.

``changed`` marks the examples whose label actually differs from the true one; it is the
``noisy`` field of :class:`snnjax.data.Dataset`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from snnjax.errors import UserError

NOISE_KINDS = ("flip", "uniform")


def num_corrupted(n: int, rate: float) -> int:
  """How many of ``n`` examples ``rate`` corrupts: ``round(rate * n)``, halves rounded up."""
  return int(math.floor(rate * n + 0.5))


def corrupt_labels(labels, num_classes: int, rate: float, kind: str,
                   seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Corrupts a seeded random ``round(rate * N)`` of ``labels``.

  Args:
    labels: (N,) integer labels in ``[0, num_classes)``.
    num_classes: number of classes K (>= 2).
    rate: fraction of examples to corrupt, in ``[0, 1)``.
    kind: ``"flip"`` (always a different class) or ``"uniform"`` (uniform over all K classes).
    seed: seed of ``numpy.random.default_rng`` (an int or a sequence of ints); the same seed
      gives the same noise.

  Returns:
    ``(noisy_labels, changed)``: (N,) int32 labels and (N,) bool, True where the label differs
    from ``labels``.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise UserError(f"labels must be a 1-D array, got shape {labels.shape}")
  if kind not in NOISE_KINDS:
    raise UserError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
  if not 0.0 <= rate < 1.0:
    raise UserError(f"label noise rate must be in [0, 1), got {rate}")
  if num_classes < 2:
    raise UserError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise UserError(f"labels must lie in [0, {num_classes}), got range "
                    f"[{labels.min()}, {labels.max()}]")
  labels = labels.astype(np.int32)
  n = labels.shape[0]
  rng = np.random.default_rng(seed)
  chosen = rng.choice(n, size=num_corrupted(n, rate), replace=False)
  noisy = labels.copy()
  if kind == "flip":
    offsets = rng.integers(1, num_classes, size=chosen.shape[0])
    noisy[chosen] = (labels[chosen] + offsets) % num_classes
  else:
    noisy[chosen] = rng.integers(0, num_classes, size=chosen.shape[0])
  return noisy.astype(np.int32), noisy != labels
