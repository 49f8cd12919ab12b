"""flax.nnx models as first-class estimator inputs: nnx states (``nnx.split``) and their paths.

The same network (Linear-BatchNorm-tanh-Linear, eval-mode BatchNorm with random statistics) as
a ``flax.nnx`` module and a ``flax.linen`` module with the same weights: per-layer blocks are
named alike (``stem``, ``bn``, ``head``; nnx paths end in ``/value``, which must not split each
leaf into its own block) and hold the same values.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from snnjax import estimators as est


class _NnxNet(nnx.Module):
  def __init__(self, rngs):
    self.stem = nnx.Linear(5, 6, rngs=rngs)
    self.bn = nnx.BatchNorm(6, rngs=rngs)
    self.head = nnx.Linear(6, 3, rngs=rngs)

  def __call__(self, x):
    return self.head(jnp.tanh(self.bn(self.stem(x))))


class _LinenNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Dense(6, name="stem")(x)
    x = nn.BatchNorm(use_running_average=True, name="bn")(x)
    return nn.Dense(3, name="head")(jnp.tanh(x))


def _models():
  model = _NnxNet(nnx.Rngs(0))
  rng = np.random.default_rng(0)
  model.bn.mean[...] = jnp.asarray(0.3 * rng.standard_normal(6), jnp.float32)
  model.bn.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, 6), jnp.float32)
  model.bn.scale[...] = jnp.asarray(1 + 0.2 * rng.standard_normal(6), jnp.float32)
  model.eval()  # BatchNorm on its running statistics
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def nnx_logits(p, x):
    return nnx.merge(graphdef, p, rest)(x)

  linen_params = nnx.to_pure_dict(params)
  linen_stats = nnx.to_pure_dict(rest)

  def linen_logits(p, x):
    return _LinenNet().apply({"params": p, "batch_stats": linen_stats}, x)

  return (nnx_logits, params), (linen_logits, linen_params)


def test_nnx_state_blocks_are_named_and_valued_as_linen():
  (nnx_logits, nnx_params), (linen_logits, linen_params) = _models()
  assert est.make_blocks(nnx_params, "layer").names == ("bn", "head", "stem")
  assert est.leaf_paths(nnx_params) == est.leaf_paths(linen_params)
  rng = np.random.default_rng(1)
  batch = {"x": rng.standard_normal((6, 5)).astype(np.float32),
           "y": rng.integers(0, 3, 6).astype(np.int32)}
  a = est.fisher_trace(nnx_logits, nnx_params, batch, blocks="layer")
  b = est.fisher_trace(linen_logits, linen_params, batch, blocks="layer")
  assert list(a.blocks) == list(b.blocks) == ["bn", "head", "stem"]
  for name in a.blocks:
    assert a.blocks[name].value == pytest.approx(b.blocks[name].value, rel=1e-5)
  sa = est.per_example_sqnorms_by_block(nnx_logits, nnx_params, batch)
  sb = est.per_example_sqnorms_by_block(linen_logits, linen_params, batch)
  for name in sb.blocks:
    np.testing.assert_allclose(sa.blocks[name], sb.blocks[name], rtol=1e-5)
  # a mask over the nnx state (same structure) works as on linen params
  mask = jax.tree.map(lambda p: np.ones(np.shape(p), bool), nnx_params)
  assert est.fisher_trace(nnx_logits, nnx_params, batch, mask=mask).value == \
      pytest.approx(a.value, rel=1e-6)
