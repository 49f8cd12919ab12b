"""Seeded subsets of a labelled train split: class-balanced and long-tailed (class-imbalanced).

Both return sorted positions into the label array, so a subset keeps the split's order.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from snnjax.errors import UserError


def class_counts(labels, num_classes: int) -> np.ndarray:
  """(num_classes,) int64: how many of ``labels`` fall in each class."""
  return np.bincount(np.asarray(labels), minlength=num_classes)[:num_classes]


def balanced_subset(labels, num_classes: int, size: int, seed: int | Sequence[int]
                    ) -> np.ndarray:
  """Positions of a seeded class-balanced subset of exactly ``size`` examples.

  Each class gets ``size // num_classes`` examples; the ``size % num_classes`` left over go one
  each to classes picked at random (seeded), so class counts differ by at most one.

  Args:
    labels: (N,) integer labels in ``[0, num_classes)``.
    num_classes: number of classes K.
    size: number of examples to keep, ``1 <= size <= N``.
    seed: seed of ``numpy.random.default_rng`` (an int or a sequence of ints).

  Returns:
    (size,) int64 positions into ``labels``, sorted.
  """
  labels = np.asarray(labels)
  if not 1 <= size <= labels.shape[0]:
    raise UserError(f"train_size must be in [1, {labels.shape[0]}], got {size}")
  rng = np.random.default_rng(seed)
  per_class = np.full(num_classes, size // num_classes)
  per_class[rng.choice(num_classes, size % num_classes, replace=False)] += 1
  return _take_per_class(labels, per_class, rng)


def long_tailed_counts(max_count: int, num_classes: int, ratio: float) -> np.ndarray:
  """Exponential long-tail class sizes: ``n_c = round(max_count * ratio ** (-c / (K - 1)))``.

  Class 0 keeps ``max_count`` examples and class K-1 keeps ``max_count / ratio`` (rounded, at
  least 1), as in Cui et al. 2019 (CIFAR-LT). ``ratio = 1`` gives ``max_count`` for every class.
  """
  if ratio < 1.0:
    raise UserError(f"imbalance_ratio must be >= 1, got {ratio}")
  if num_classes == 1:
    return np.array([max_count])
  exponents = np.arange(num_classes) / (num_classes - 1)
  counts = np.floor(max_count * ratio ** (-exponents) + 0.5).astype(np.int64)
  return np.maximum(counts, 1)


def long_tailed_subset(labels, num_classes: int, ratio: float, seed: int | Sequence[int]
                       ) -> np.ndarray:
  """Positions of a seeded exponential long-tailed subset of ``labels``.

  The head class (class 0) keeps ``m`` examples, where ``m`` is the smallest class count in
  ``labels``; class c keeps ``round(m * ratio ** (-c / (K - 1)))`` (see
  :func:`long_tailed_counts`), so max/min class count = ``ratio`` up to rounding.

  Args:
    labels: (N,) integer labels in ``[0, num_classes)``.
    num_classes: number of classes K.
    ratio: imbalance ratio (max count / min count), >= 1.
    seed: seed of ``numpy.random.default_rng`` (which examples of each class are kept).

  Returns:
    Sorted int64 positions into ``labels``.
  """
  labels = np.asarray(labels)
  counts = class_counts(labels, num_classes)
  if counts.min() == 0:
    raise UserError(f"a long-tailed subset needs every class present; class "
                    f"{int(np.argmin(counts))} has no examples")
  per_class = long_tailed_counts(int(counts.min()), num_classes, ratio)
  return _take_per_class(labels, per_class, np.random.default_rng(seed))


def _take_per_class(labels: np.ndarray, per_class: np.ndarray, rng: np.random.Generator
                    ) -> np.ndarray:
  chosen = []
  for c, k in enumerate(per_class):
    members = np.flatnonzero(labels == c)
    if k > members.shape[0]:
      raise UserError(f"class {c} has {members.shape[0]} examples, a subset asks for {k}")
    chosen.append(rng.choice(members, int(k), replace=False))
  return np.sort(np.concatenate(chosen)).astype(np.int64)

