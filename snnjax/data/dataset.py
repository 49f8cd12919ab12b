"""The :class:`Dataset` container: host numpy arrays of a normalized train/test split."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from snnjax.data import subsets
from snnjax.errors import UserError


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A train/test split held as host numpy arrays.

  Attributes:
    name: dataset name (``"mnist1d"``, ``"digits"``, ``"cifar10"``, ``"cifar100"``).
    x_train: (N, ...) float32 inputs, normalized with ``mean``/``std``.
    y_train: (N,) int32 labels trained on (noisy where label noise is on).
    y_train_true: (N,) int32 clean labels.
    noisy: (N,) bool, True where ``y_train != y_train_true``.
    x_test: (M, ...) float32 inputs, normalized with the same ``mean``/``std``.
    y_test: (M,) int32 clean labels.
    num_classes: number of classes K.
    mean: (C,) float32 per-channel mean in raw input units (C = 1 for mnist1d).
    std: (C,) float32 per-channel standard deviation in raw input units.
    is_image: True when inputs are (H, W, C) images (augmentation applies to these only).
    noise_rate: the label-noise rate asked for (0.0 = none).
    noise_kind: ``"flip"`` or ``"uniform"`` (see :mod:`snnjax.data.noise`).
    train_source_index: (N,) int64 position of each train example in the source's full train
      split (subsets keep track of where their examples came from).
    class_names: the K class names, or None.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  y_train_true: np.ndarray
  noisy: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  mean: np.ndarray
  std: np.ndarray
  is_image: bool
  noise_rate: float = 0.0
  noise_kind: str = "flip"
  train_source_index: Optional[np.ndarray] = None
  class_names: Optional[tuple[str, ...]] = None

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one input example, e.g. (32, 32, 3) or (40,)."""
    return tuple(self.x_train.shape[1:])

  @property
  def num_train(self) -> int:
    return int(self.x_train.shape[0])

  @property
  def num_test(self) -> int:
    return int(self.x_test.shape[0])

  def train_class_counts(self, *, true_labels: bool = True) -> np.ndarray:
    """(K,) int64 train examples per class (by clean labels unless ``true_labels=False``)."""
    labels = self.y_train_true if true_labels else self.y_train
    return subsets.class_counts(labels, self.num_classes)

  def take_train(self, indices) -> "Dataset":
    """A dataset whose train split is ``x_train[indices]`` (labels and noise flags follow)."""
    indices = np.asarray(indices)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
      raise UserError("take_train needs a 1-D integer index array")
    if indices.size and (indices.min() < 0 or indices.max() >= self.num_train):
      raise UserError(f"take_train indices must lie in [0, {self.num_train})")
    source = (np.arange(self.num_train, dtype=np.int64) if self.train_source_index is None
              else self.train_source_index)
    return dataclasses.replace(
        self, x_train=self.x_train[indices], y_train=self.y_train[indices],
        y_train_true=self.y_train_true[indices], noisy=self.noisy[indices],
        train_source_index=source[indices])

  def long_tailed(self, ratio: float, seed: int) -> "Dataset":
    """A class-imbalanced (exponential long-tailed) subset of the train split.

    Class c keeps ``round(m * ratio ** (-c / (K - 1)))`` examples, m = the smallest clean class
    count; see :func:`snnjax.data.subsets.long_tailed_subset`. The test split is unchanged.
    """
    return self.take_train(
        subsets.long_tailed_subset(self.y_train_true, self.num_classes, ratio, seed))
