"""Tests for snnjax.sparsity.builders on a ResNet-20's params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax.errors import MaskMismatchError
from snnjax.errors import UserError
from snnjax.models import registry
from snnjax.sparsity import builders
from snnjax.sparsity import masks
from snnjax.sparsity import selection


@pytest.fixture(scope="module")
def params():
  """A ResNet-20's params structure with N(0, 1) values (shapes from eval_shape: no compile)."""
  model = registry.create_model("resnet20", 10)
  shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False),
                          jax.random.key(0))["params"]
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def _prunable_sizes(params):
  flags = selection.prunable(params)
  return [np.size(p) for p, f in zip(jax.tree.leaves(params), jax.tree.leaves(flags)) if f]


def _pruned(n, s):
  return int(np.floor(s * n + 0.5))


def _check_non_prunable_all_true(params, mask):
  flags = selection.prunable(params)
  for m, f in zip(jax.tree.leaves(mask), jax.tree.leaves(flags)):
    assert m.dtype == jnp.bool_
    if not f:
      assert bool(jnp.all(m))


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.977])
def test_global_magnitude_exact_count_and_largest_kept(params, sparsity):
  mask = builders.magnitude_mask(params, sparsity)
  masks.check_mask(params, mask)
  _check_non_prunable_all_true(params, mask)
  total = sum(_prunable_sizes(params))
  active = sum(r[0] for r in masks.layer_densities(mask).values())
  assert active == total - _pruned(total, sparsity)
  flags = jax.tree.leaves(selection.prunable(params))
  kept, dropped = [], []
  for p, m, f in zip(jax.tree.leaves(params), jax.tree.leaves(mask), flags):
    if f:
      kept.append(np.abs(p)[np.asarray(m)])
      dropped.append(np.abs(p)[~np.asarray(m)])
  kept, dropped = np.concatenate(kept), np.concatenate(dropped)
  if dropped.size:
    assert kept.min() >= dropped.max()


def test_global_magnitude_ties_by_position():
  params = {"a": {"kernel": np.ones((2, 2), np.float32)},
            "b": {"kernel": np.array([[1.0, 5.0]], np.float32)}}
  mask = builders.magnitude_mask(params, 0.5, prunable_tree={"a": {"kernel": True},
                                                             "b": {"kernel": True}})
  np.testing.assert_array_equal(mask["a"]["kernel"], [[False, False], [False, True]])
  np.testing.assert_array_equal(mask["b"]["kernel"], [[True, True]])


def test_layerwise_magnitude_exact_per_layer(params):
  mask = builders.magnitude_mask(params, 0.8, scope="layerwise")
  for _, (active, total, _) in masks.layer_densities(mask).items():
    assert active == total - _pruned(total, 0.8)
  _check_non_prunable_all_true(params, mask)


def test_random_exact_per_layer_and_seeded(params):
  mask = builders.random_mask(jax.random.key(0), params, 0.9)
  for _, (active, total, _) in masks.layer_densities(mask).items():
    assert active == total - _pruned(total, 0.9)
  _check_non_prunable_all_true(params, mask)
  again = builders.random_mask(jax.random.key(0), params, 0.9)
  other = builders.random_mask(jax.random.key(1), params, 0.9)
  assert all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(mask),
                                                         jax.tree.leaves(again)))
  assert not all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(mask),
                                                             jax.tree.leaves(other)))


@pytest.mark.parametrize("sparsity", [0.9, 0.95])
def test_erk_exact_total_and_erk_profile(params, sparsity):
  mask = builders.erk_mask(jax.random.key(0), params, sparsity)
  _check_non_prunable_all_true(params, mask)
  rows = masks.layer_densities(mask)
  total = sum(r[1] for r in rows.values())
  assert sum(r[0] for r in rows.values()) == total - _pruned(total, sparsity)
  # Small layers (the stem) denser than big ones.
  assert rows["stem/kernel"][2] > rows["stage3_block2/conv2/kernel"][2]
  # Layers of equal shape get equal densities (up to one weight of rounding).
  same = [r[0] for k, r in rows.items() if k.startswith("stage3") and "block0/conv1" not in k]
  assert max(same) - min(same) <= 1


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_out_of_range(params, sparsity):
  with pytest.raises(UserError, match="sparsity"):
    builders.magnitude_mask(params, sparsity)
  with pytest.raises(UserError, match="sparsity"):
    builders.random_mask(jax.random.key(0), params, sparsity)
  with pytest.raises(UserError, match="sparsity"):
    builders.erk_mask(jax.random.key(0), params, sparsity)


def test_bad_scope_and_prunable_tree(params):
  with pytest.raises(UserError, match="scope"):
    builders.magnitude_mask(params, 0.5, scope="block")
  with pytest.raises(MaskMismatchError):
    builders.magnitude_mask(params, 0.5, prunable_tree={"head": {"kernel": True}})
