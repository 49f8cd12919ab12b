"""Sparse-aware init (N(0, 2 / active fan-in) per unit, pruned weights 0) and the layerwise mask
shuffle (counts kept), snnjax.sparsity.sparse_init."""

import jax
import jax.numpy as jnp
import numpy as np

from snnjax import sparsity
from snnjax.sparsity import sparse_init


def _params_and_mask():
  """A conv (3, 3, 2, 4) and a dense (10, 5) kernel with masks of varied fan-ins (one unit of the
  dense kernel has no active input), a bias and an unpruned head."""
  rng = np.random.default_rng(0)
  params = {"conv": {"kernel": jnp.ones((3, 3, 2, 4))}, "dense": {"kernel": jnp.ones((10, 5)),
                                                                  "bias": jnp.full((5,), 0.5)},
            "head": {"kernel": jnp.full((5, 3), 0.25)}}
  conv = rng.random((3, 3, 2, 4)) < np.array([0.9, 0.5, 0.2, 0.05])
  conv[0, 0, 0, :] = True
  dense = rng.random((10, 5)) < 0.5
  dense[:, 2] = False      # a unit with no active input
  dense[:, 4] = False
  dense[3, 4] = True       # a unit with exactly one
  mask = {"conv": {"kernel": jnp.asarray(conv)}, "dense": {"kernel": jnp.asarray(dense),
                                                           "bias": jnp.ones((5,), bool)},
          "head": {"kernel": jnp.ones((5, 3), bool)}}
  return params, mask


def test_each_unit_has_the_stated_variance_over_many_draws():
  params, mask = _params_and_mask()
  draws = 1500
  samples = [sparsity.sparse_aware_init(jax.random.key(i), params, mask) for i in range(draws)]
  for layer in ("conv", "dense"):
    m = np.asarray(mask[layer]["kernel"])
    w = np.stack([np.asarray(s[layer]["kernel"]) for s in samples])     # (draws, ..., out)
    assert np.all(w[:, ~m] == 0.0)                                      # pruned: exactly 0
    n = sparse_init.active_fan_in(m)
    np.testing.assert_array_equal(n, m.reshape(-1, m.shape[-1]).sum(0))
    stated = sparse_init.unit_variances(m)
    for j in range(m.shape[-1]):
      active = w[..., j][:, m[..., j]]
      if n[j] == 0:
        assert stated[j] == 0.0 and active.size == 0
        assert np.all(w[..., j] == 0.0)
        continue
      assert stated[j] == 2.0 / n[j]
      # the sample variance of n_j * draws N(0, 2/n_j) values: relative sd sqrt(2 / (n_j draws))
      var = np.mean(active.astype(np.float64) ** 2)
      tol = 5 * np.sqrt(2.0 / active.size)
      assert abs(var / stated[j] - 1.0) < tol, (layer, j, var, stated[j])
      assert abs(np.mean(active)) < 5 * np.sqrt(stated[j] / active.size)
  # non-prunable leaves (the bias, the unpruned head) are kept as they were
  np.testing.assert_array_equal(samples[0]["dense"]["bias"], params["dense"]["bias"])
  np.testing.assert_array_equal(samples[0]["head"]["kernel"], params["head"]["kernel"])


def test_same_key_same_draw_and_dtype_kept():
  params, mask = _params_and_mask()
  a = sparsity.sparse_aware_init(jax.random.key(3), params, mask)
  b = sparsity.sparse_aware_init(jax.random.key(3), params, mask)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
    assert x.dtype == jnp.float32


def test_shuffle_keeps_each_layers_count_and_moves_positions():
  params, mask = _params_and_mask()
  shuffled = sparsity.shuffle_mask(jax.random.key(1), mask)
  before, after = sparsity.layer_densities(mask), sparsity.layer_densities(shuffled)
  assert before == after and list(before) == ["conv/kernel", "dense/kernel"]
  assert not np.array_equal(shuffled["conv"]["kernel"], mask["conv"]["kernel"])
  np.testing.assert_array_equal(shuffled["head"]["kernel"], mask["head"]["kernel"])
  again = sparsity.shuffle_mask(jax.random.key(1), mask)
  for x, y in zip(jax.tree.leaves(shuffled), jax.tree.leaves(again)):
    np.testing.assert_array_equal(x, y)
