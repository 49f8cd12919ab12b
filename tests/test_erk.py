"""Tests for snnjax.sparsity.erk."""

import math

import numpy as np
import pytest

from snnjax.errors import UserError
from snnjax.sparsity import erk

SHAPES = [(3, 3, 3, 16), (3, 3, 16, 16), (3, 3, 16, 32), (3, 3, 32, 64), (3, 3, 64, 64)]


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.98])
def test_densities_meet_the_target(sparsity):
  d = erk.erk_densities(SHAPES, sparsity)
  sizes = np.array([math.prod(s) for s in SHAPES])
  assert np.all((d > 0) & (d <= 1))
  np.testing.assert_allclose((d * sizes).sum(), (1 - sparsity) * sizes.sum(), rtol=1e-9)


def test_densities_proportional_to_score_below_cap():
  d = erk.erk_densities(SHAPES, 0.9)
  scores = np.array([sum(s) / math.prod(s) for s in SHAPES])
  assert d[0] == 1.0  # The small first layer is capped...
  ratio = d[1:] / scores[1:]  # ... the others share one eps.
  np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)


def test_power_scale_zero_is_uniform():
  np.testing.assert_allclose(erk.erk_densities(SHAPES, 0.7, power_scale=0.0), 0.3)


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.95, 0.99])
def test_counts_exact(sparsity):
  counts = erk.erk_counts(SHAPES, sparsity)
  sizes = np.array([math.prod(s) for s in SHAPES])
  total = sizes.sum()
  assert counts.sum() == total - math.floor(sparsity * total + 0.5)
  assert np.all(counts <= sizes) and np.all(counts >= 0)
  ideal = erk.erk_densities(SHAPES, sparsity) * sizes
  assert np.all(np.abs(counts - ideal) < 1.0)


def test_apportion_largest_remainder():
  np.testing.assert_array_equal(
      erk.apportion(np.array([1.5, 1.5, 2.9]), np.array([5, 5, 5]), 6), [2, 1, 3])
  np.testing.assert_array_equal(erk.apportion(np.array([2.0, 3.0]), np.array([2, 3]), 5), [2, 3])


def test_out_of_range():
  with pytest.raises(UserError):
    erk.erk_densities(SHAPES, 1.0)
