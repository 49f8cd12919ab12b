"""Tests for snnjax.data.subsets."""

import numpy as np
import pytest

from snnjax.data import subsets
from snnjax.errors import UserError


def _labels():
  return np.repeat(np.arange(10), 100)[np.random.default_rng(0).permutation(1000)]


@pytest.mark.parametrize("size", [100, 105, 1000])
def test_balanced_subset_exact_size_and_balance(size):
  y = _labels()
  idx = subsets.balanced_subset(y, 10, size, seed=0)
  assert idx.shape == (size,) and np.all(np.diff(idx) > 0)
  counts = subsets.class_counts(y[idx], 10)
  assert counts.sum() == size and counts.max() - counts.min() <= 1


def test_balanced_subset_seeded():
  y = _labels()
  np.testing.assert_array_equal(subsets.balanced_subset(y, 10, 50, 1),
                                subsets.balanced_subset(y, 10, 50, 1))
  assert not np.array_equal(subsets.balanced_subset(y, 10, 50, 1),
                            subsets.balanced_subset(y, 10, 50, 2))


def test_balanced_subset_too_large():
  with pytest.raises(UserError):
    subsets.balanced_subset(_labels(), 10, 1001, 0)
  with pytest.raises(UserError, match="class"):
    subsets.balanced_subset(np.array([0, 0, 0, 1]), 2, 4, 0)


def test_long_tailed_counts():
  counts = subsets.long_tailed_counts(500, 10, 100.0)
  assert counts[0] == 500 and counts[-1] == 5
  assert np.all(np.diff(counts) <= 0)
  np.testing.assert_array_equal(subsets.long_tailed_counts(7, 3, 1.0), [7, 7, 7])
  with pytest.raises(UserError):
    subsets.long_tailed_counts(10, 3, 0.5)


def test_long_tailed_subset():
  y = _labels()
  idx = subsets.long_tailed_subset(y, 10, 10.0, seed=0)
  counts = subsets.class_counts(y[idx], 10)
  np.testing.assert_array_equal(counts, subsets.long_tailed_counts(100, 10, 10.0))
  assert counts[0] / counts[-1] == 10
