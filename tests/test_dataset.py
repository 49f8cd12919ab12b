"""Tests for snnjax.data.dataset."""

import dataclasses

import numpy as np
import pytest

from snnjax.data.dataset import Dataset
from snnjax.errors import UserError


def _dataset(n=200):
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(4), n // 4).astype(np.int32)
  return Dataset(name="toy", x_train=rng.normal(size=(n, 3, 3, 2)).astype(np.float32),
                 y_train=y, y_train_true=y, noisy=np.zeros(n, bool),
                 x_test=np.zeros((10, 3, 3, 2), np.float32), y_test=np.zeros(10, np.int32),
                 num_classes=4, mean=np.zeros(2, np.float32), std=np.ones(2, np.float32),
                 is_image=True)


def test_properties():
  d = _dataset()
  assert d.input_shape == (3, 3, 2) and d.num_train == 200 and d.num_test == 10
  np.testing.assert_array_equal(d.train_class_counts(), [50] * 4)
  with pytest.raises(dataclasses.FrozenInstanceError):
    d.name = "x"


def test_take_train_tracks_source_positions():
  d = _dataset()
  sub = d.take_train(np.array([5, 7]))
  np.testing.assert_array_equal(sub.x_train, d.x_train[[5, 7]])
  np.testing.assert_array_equal(sub.train_source_index, [5, 7])
  np.testing.assert_array_equal(sub.take_train(np.array([1])).train_source_index, [7])
  with pytest.raises(UserError):
    d.take_train(np.array([200]))


def test_long_tailed():
  lt = _dataset().long_tailed(5.0, seed=0)
  np.testing.assert_array_equal(lt.train_class_counts(), [50, 29, 17, 10])
  assert lt.num_test == 10
