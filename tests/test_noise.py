"""Tests for snnjax.data.noise."""

import numpy as np
import pytest

from snnjax.data import noise
from snnjax.errors import UserError


def _labels(n=1000, k=10, seed=0):
  return np.random.default_rng(seed).integers(0, k, n).astype(np.int32)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.25])
def test_flip_changes_exactly_round_rate_n(rate):
  y = _labels(1001)
  noisy, changed = noise.corrupt_labels(y, 10, rate, "flip", seed=3)
  expected = int(np.floor(rate * 1001 + 0.5))
  assert changed.sum() == expected
  np.testing.assert_array_equal(changed, noisy != y)
  assert np.all(noisy[changed] != y[changed])
  np.testing.assert_array_equal(noisy[~changed], y[~changed])
  assert noisy.dtype == np.int32 and changed.dtype == bool


def test_flip_draws_all_other_classes_uniformly():
  y = np.zeros(20000, np.int32)
  noisy, changed = noise.corrupt_labels(y, 5, 0.5, "flip", seed=0)
  counts = np.bincount(noisy[changed], minlength=5)
  assert counts[0] == 0
  np.testing.assert_allclose(counts[1:] / changed.sum(), 0.25, atol=0.02)


def test_uniform_keeps_some_chosen_labels():
  y = _labels(10000)
  noisy, changed = noise.corrupt_labels(y, 10, 0.4, "uniform", seed=1)
  # 4000 chosen, about a tenth of them keep their label.
  assert 3400 < changed.sum() < 3800
  np.testing.assert_array_equal(changed, noisy != y)
  assert noisy.min() >= 0 and noisy.max() < 10


def test_seeded_determinism():
  y = _labels()
  a = noise.corrupt_labels(y, 10, 0.3, "flip", seed=7)
  b = noise.corrupt_labels(y, 10, 0.3, "flip", seed=7)
  c = noise.corrupt_labels(y, 10, 0.3, "flip", seed=8)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("kwargs", [dict(rate=1.0), dict(rate=-0.1), dict(kind="pair"),
                                    dict(num_classes=1)])
def test_bad_input(kwargs):
  args = dict(labels=np.zeros(10, int), num_classes=10, rate=0.1, kind="flip", seed=0)
  args.update(kwargs)
  with pytest.raises(UserError):
    noise.corrupt_labels(**args)


def test_labels_out_of_range():
  with pytest.raises(UserError, match="lie in"):
    noise.corrupt_labels(np.array([0, 10]), 10, 0.5, "flip", 0)
