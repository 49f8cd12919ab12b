"""Tests for snnjax.sparsity.masks."""

import chex
import jax.numpy as jnp
import pytest

from snnjax.errors import MaskMismatchError
from snnjax.sparsity import masks


def _params():
  return {"stem": {"kernel": jnp.arange(12.0).reshape(3, 4)},
          "bn": {"scale": jnp.ones(4), "bias": jnp.zeros(4)},
          "head": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)}}


def _mask():
  mask = masks.dense_mask(_params())
  mask["stem"]["kernel"] = jnp.arange(12).reshape(3, 4) % 3 == 0
  return mask


class ApplyMaskTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_zeroes_masked_entries_only(self):
    out = self.variant(masks.apply_mask)(_params(), _mask())
    expected = _params()
    expected["stem"]["kernel"] = jnp.where(_mask()["stem"]["kernel"], expected["stem"]["kernel"],
                                           0.0)
    chex.assert_trees_all_close(out, expected)
    chex.assert_trees_all_equal_dtypes(out, _params())

  def test_none_is_dense(self):
    chex.assert_trees_all_close(masks.apply_mask(_params(), None), _params())


def test_check_mask_mismatches():
  masks.check_mask(_params(), _mask())
  bad_shape = _mask()
  bad_shape["head"]["bias"] = jnp.ones(3, bool)
  with pytest.raises(MaskMismatchError, match="head/bias"):
    masks.check_mask(_params(), bad_shape)
  missing = _mask()
  del missing["bn"]
  with pytest.raises(MaskMismatchError, match="structure"):
    masks.check_mask(_params(), missing)
  with pytest.raises(MaskMismatchError):
    masks.apply_mask(_params(), missing)
  assert issubclass(MaskMismatchError, ValueError)


def test_densities_over_prunable_leaves():
  mask = _mask()
  # Only stem/kernel is prunable by default (head excluded, no other kernels).
  assert masks.layer_densities(mask) == {"stem/kernel": (4, 12, 4 / 12)}
  assert masks.density(mask) == pytest.approx(4 / 12)
  assert masks.sparsity_of(mask) == pytest.approx(8 / 12)
  flags = {"stem": {"kernel": True}, "bn": {"scale": False, "bias": False},
           "head": {"kernel": True, "bias": False}}
  assert masks.density(mask, flags) == pytest.approx((4 + 8) / (12 + 8))
  assert masks.density(masks.dense_mask(_params())) == 1.0


def test_density_table():
  table = masks.density_table(_mask())
  lines = table.splitlines()
  assert lines[0].startswith("| layer | shape |")
  assert "| stem/kernel | 3x4 | 4 | 12 | 0.3333 |" in lines
  assert lines[-1] == "| **total** | | 4 | 12 | 0.3333 |"


def test_count_params():
  assert masks.count_params(_params()) == 12 + 8 + 8 + 2
