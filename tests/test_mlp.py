"""Tests for snnjax.models.mlp."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from snnjax.models import mlp
from snnjax.models import registry


class MLPTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_shapes_names_and_no_batch_stats(self):
    model = registry.create_model("mlp", 10)
    params, batch_stats = registry.init_variables(model, jax.random.key(0), (40,))
    assert batch_stats == {}
    assert set(params) == {"stem", "hidden_1", "head"}
    assert params["stem"]["kernel"].shape == (40, 100)
    num_params = sum(a.size for a in jax.tree.leaves(params))
    assert num_params == 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
    logits = self.variant(lambda p, x: model.apply({"params": p}, x, train=False))(
        params, jnp.ones((5, 40)))
    chex.assert_shape(logits, (5, 10))

  def test_tanh_flattens_images(self):
    model = mlp.MLP(3, hidden_sizes=(8,), activation="tanh")
    params, _ = registry.init_variables(model, jax.random.key(0), (4, 4, 1))
    assert params["stem"]["kernel"].shape == (16, 8)
    x = jnp.ones((2, 4, 4, 1))
    hidden = jnp.tanh(x.reshape(2, -1) @ params["stem"]["kernel"])
    expected = hidden @ params["head"]["kernel"]
    chex.assert_trees_all_close(model.apply({"params": params}, x, train=True), expected,
                                atol=1e-6)

  def test_init_scales(self):
    params, _ = registry.init_variables(mlp.MLP(10, (512, 256)), jax.random.key(0), (1024,))
    np.testing.assert_allclose(np.std(params["stem"]["kernel"]), np.sqrt(2 / 512), rtol=0.02)
    np.testing.assert_allclose(np.std(params["head"]["kernel"]), 0.01, rtol=0.05)
    np.testing.assert_array_equal(params["stem"]["bias"], 0.0)
