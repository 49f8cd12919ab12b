"""Tests for snnjax.estimators.param_subsets (tests/test_subsets.py tests snnjax.data.subsets)."""

import jax
import numpy as np
import pytest

import _tiny as tiny
from snnjax.errors import MaskMismatchError, UserError
from snnjax.estimators.param_subsets import combine_masks, leaf_path, param_subset_mask


def _params():
  return tiny.classifier("cnn")[0].params  # stem/conv1 (conv), bn0/bn1 (scale, bias), head (dense)


def test_kernels_are_conv_and_dense_weights_only():
  params = _params()
  mask = param_subset_mask(params, "kernels")
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  selected = {"/".join(leaf_path(p)) for p, m in jax.tree_util.tree_flatten_with_path(mask)[0]
              if m.all()}
  assert selected == {"stem/kernel", "conv1/kernel", "head/kernel"}
  for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params)):
    assert m.dtype == bool and m.shape == p.shape and (m.all() or not m.any())


def test_all_and_callable():
  params = _params()
  assert all(m.all() for m in jax.tree.leaves(param_subset_mask(params, "all")))
  head_only = param_subset_mask(params, lambda path, leaf: path[0] == "head")
  assert head_only["head"]["bias"].all() and not head_only["stem"]["kernel"].any()
  with pytest.raises(UserError):
    param_subset_mask(params, "weights")


def test_combine_masks():
  params = _params()
  rng = np.random.default_rng(0)
  sparsity = jax.tree.map(lambda p: rng.random(p.shape) < 0.5, params)
  kernels = param_subset_mask(params, "kernels")
  both = combine_masks(sparsity, kernels)
  np.testing.assert_array_equal(both["stem"]["kernel"], sparsity["stem"]["kernel"])
  assert not both["bn0"]["scale"].any()
  assert combine_masks(None, kernels) is kernels and combine_masks(kernels, None) is kernels
  with pytest.raises(MaskMismatchError):
    combine_masks(kernels, {"stem": kernels["stem"]})
