"""Tests for snnjax.models.cnn: shapes, names and BatchNorm train/eval behaviour."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax.models import registry


@pytest.fixture(scope="module")
def cnn():
  model = registry.create_model("cnn", 10)
  params, batch_stats = registry.init_variables(model, jax.random.key(0), (8, 8, 1))
  return model, params, batch_stats


def test_shapes_and_names(cnn):
  model, params, batch_stats = cnn
  assert set(params) == {"stem", "stem_bn", "conv1", "bn1", "conv2", "bn2", "head"}
  assert set(params["stem"]) == {"kernel"} and params["stem"]["kernel"].shape == (3, 3, 1, 32)
  assert set(batch_stats["bn1"]) == {"mean", "var"}
  np.testing.assert_array_equal(params["bn1"]["scale"], 1.0)
  np.testing.assert_array_equal(params["bn1"]["bias"], 0.0)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(
      {"params": params, "batch_stats": batch_stats}, jnp.ones((3, 8, 8, 1)))
  chex.assert_shape(logits, (3, 10))
  # The same module runs on CIFAR-shaped inputs.
  cifar = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                         jnp.zeros((2, 32, 32, 3)))
  assert cifar["params"]["stem"]["kernel"].shape == (3, 3, 3, 32)


def test_batchnorm_train_vs_eval(cnn):
  model, params, batch_stats = cnn
  variables = {"params": params, "batch_stats": batch_stats}
  train_apply = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
  eval_apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  x = jax.random.normal(jax.random.key(1), (16, 8, 8, 1)) * 3.0 + 2.0
  # Train mode normalizes with batch statistics and updates the running averages.
  logits, updates = train_apply(variables, x)
  new_mean = updates["batch_stats"]["stem_bn"]["mean"]
  assert not np.allclose(new_mean, 0.0)
  # momentum 0.9: new = 0.9 * old (0) + 0.1 * batch mean.
  conv = jax.lax.conv_general_dilated(x, params["stem"]["kernel"], (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  chex.assert_trees_all_close(new_mean, 0.1 * conv.mean((0, 1, 2)), atol=1e-5)
  # Train mode: an example's output depends on the rest of the batch; eval mode: it does not.
  train_half, _ = train_apply(variables, x[:8])
  assert not np.allclose(train_half, logits[:8], atol=1e-5)
  eval_full = eval_apply(variables, x)
  eval_half = eval_apply(variables, x[:8])
  chex.assert_trees_all_close(eval_half, eval_full[:8], atol=1e-5)
