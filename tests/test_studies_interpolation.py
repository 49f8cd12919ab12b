"""Tests of the interpolation pieces: exact endpoints, cosines against a direct computation."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax.estimators import fisher
from snnjax.studies.stages import interpolation


class _Net(nn.Module):

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3), name="stem")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn")(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(3, name="head")(x)


def _setup(seed=0):
  net = _Net()
  x = jax.random.normal(jax.random.key(seed), (10, 5, 5, 2))
  y = jnp.arange(10) % 3
  v0 = net.init(jax.random.key(1), x)
  v1 = net.init(jax.random.key(2), x)
  mask = jax.tree.map(lambda p: jax.random.bernoulli(jax.random.key(3), 0.6, p.shape)
                      if p.ndim >= 2 else jnp.ones(p.shape, bool), v0["params"])
  start = jax.tree.map(lambda p, m: p * m, v0["params"], mask)
  end = jax.tree.map(lambda p, m: p * m, v1["params"], mask)
  stats = {"bn": {"mean": 0.1 * jnp.ones(4), "var": 1.5 * jnp.ones(4)}}
  return net, x, y, start, end, mask, stats


class InterpolateTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_endpoints_are_exact_and_masked(self):
    _, _, _, start, end, mask, _ = _setup()
    fn = self.variant(interpolation.interpolate, static_argnums=())
    interp = lambda a: fn(start, end, a, mask)
    for alpha, want in ((0.0, start), (1.0, end)):
      got = jax.tree.map(np.asarray, interp(alpha))
      for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert np.array_equal(g, np.asarray(w))
    mid = interp(0.3)
    chex.assert_trees_all_close(mid, jax.tree.map(lambda a, b: 0.7 * a + 0.3 * b, start, end),
                                atol=1e-6)
    for leaf, m in zip(jax.tree.leaves(interp(1.7)), jax.tree.leaves(mask)):
      assert np.all(np.asarray(leaf)[~np.asarray(m)] == 0)


def test_cosines_match_direct_per_example_gradients():
  net, x, y, start, end, mask, stats = _setup()
  params = interpolation.interpolate(start, end, 0.4, mask)
  direction = interpolation.tree_sub(end, start)
  cos = interpolation.gradient_cosines(interpolation.make_cosine_fn(net.apply), params, stats,
                                       direction, mask, np.asarray(x), np.asarray(y),
                                       chunk_size=4)
  assert cos.shape == (10,)
  assert np.all(np.abs(cos) <= 1.0)

  def logits_fn(p, xb):
    return net.apply({"params": p, "batch_stats": stats}, xb, train=False)

  grads = fisher.per_example_grads(logits_fn, params, {"x": x, "y": y}, mask=mask)
  d = np.concatenate([np.ravel(np.asarray(l)) for l in jax.tree.leaves(direction)])
  m = np.concatenate([np.ravel(np.asarray(l)) for l in jax.tree.leaves(mask)]).astype(float)
  for i in range(3):
    g = np.concatenate([np.ravel(np.asarray(l[i])) for l in jax.tree.leaves(grads)]) * m
    dm = d * m
    want = np.dot(-g, dm) / (np.linalg.norm(g) * np.linalg.norm(dm))
    np.testing.assert_allclose(cos[i], want, rtol=1e-4, atol=1e-6)


def test_cosine_of_a_zero_gradient_is_nan():
  net, x, y, start, end, mask, stats = _setup()
  zero_mask = jax.tree.map(lambda m: jnp.zeros_like(m), mask)
  cos = interpolation.gradient_cosines(interpolation.make_cosine_fn(net.apply), start, stats,
                                       interpolation.tree_sub(end, start), zero_mask,
                                       np.asarray(x[:3]), np.asarray(y[:3]), chunk_size=4)
  assert np.all(np.isnan(cos))


def test_top_fraction_classes():
  cos = np.array([0.9, 0.1, np.nan, 0.8, -0.5, 0.7, 0.2, 0.3, 0.0, 0.6, 0.5])
  labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1])
  out = interpolation.top_fraction_classes(cos, labels, 0.3, 3)
  assert out["k"] == 3  # round(0.3 * 10 finite values)
  assert out["class_counts"] == [2, 0, 1]
  assert out["threshold"] == pytest.approx(0.7)
  summary = interpolation.summarize(cos)
  assert summary["count"] == 10 and -1 <= summary["min"] <= summary["max"] <= 1
