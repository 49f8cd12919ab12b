"""recompute_batch_stats gives the exact population statistics of the training inputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from snnjax.train.batchnorm import recompute_batch_stats


class DenseBN(nn.Module):

  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.Dense(6, name="dense")(x)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.8, name="bn")(h)
    return nn.Dense(3, name="head")(nn.relu(h))


def test_population_statistics_of_the_pre_bn_activations():
  model = DenseBN()
  x = np.random.default_rng(0).normal(size=(240, 5)).astype(np.float32) * 3 + 1
  variables = model.init(jax.random.key(0), x[:2], train=False)
  params = variables["params"]
  stale = jax.tree.map(lambda s: s + 7.0, variables["batch_stats"])
  stats = recompute_batch_stats(model.apply, params, stale, x, batch_size=60)
  h = x @ np.asarray(params["dense"]["kernel"]) + np.asarray(params["dense"]["bias"])
  np.testing.assert_allclose(stats["bn"]["mean"], h.mean(0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(stats["bn"]["var"], h.var(0), rtol=1e-3, atol=1e-4)


def test_no_batchnorm_is_a_no_op():
  assert recompute_batch_stats(lambda *a, **k: None, {}, {}, np.zeros((4, 2))) == {}
