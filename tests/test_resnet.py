"""Tests for snnjax.models.resnet."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax.models import registry
from snnjax.models import resnet


def _shapes(name, num_classes=10, input_shape=(32, 32, 3), **kwargs):
  model = registry.create_model(name, num_classes, **kwargs)
  x = jnp.zeros((2, *input_shape))
  variables = jax.eval_shape(lambda k: model.init(k, x, train=False), jax.random.key(0))
  logits = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  return variables, logits


def _count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("name,num_classes,expected", [
    ("resnet20", 10, 269_722),
    ("resnet32", 10, 464_154),
    ("resnet56", 10, 853_018),
    # 4x wide, option B: 7,427,914 for 10 classes; the head grows by 256 * 90 + 90 for 100.
    ("wide_resnet32", 100, 7_427_914 + 256 * 90 + 90),
])
def test_param_counts_and_output_shapes(name, num_classes, expected):
  variables, logits = _shapes(name, num_classes)
  assert _count(variables["params"]) == expected
  assert logits.shape == (2, num_classes)


def test_names_and_shortcuts():
  a, _ = _shapes("resnet20")
  block = a["params"]["stage2_block0"]
  assert set(block) == {"conv1", "bn1", "conv2", "bn2"}
  assert block["conv1"]["kernel"].shape == (3, 3, 16, 32)
  assert a["params"]["stem"]["kernel"].shape == (3, 3, 3, 16)
  assert set(a["params"]["head"]) == {"kernel", "bias"}
  assert set(a["batch_stats"]["stem_bn"]) == {"mean", "var"}
  b, _ = _shapes("resnet20", shortcut="B", width=2)
  block = b["params"]["stage3_block0"]
  assert block["shortcut_conv"]["kernel"].shape == (1, 1, 64, 128)
  assert "shortcut_conv" not in b["params"]["stage3_block1"]
  assert b["params"]["stem"]["kernel"].shape == (3, 3, 3, 32)
  wide, _ = _shapes("wide_resnet32")
  assert wide["params"]["stage3_block4"]["conv2"]["kernel"].shape == (3, 3, 256, 256)
  assert "shortcut_conv" in wide["params"]["stage2_block0"]


def test_option_a_shortcut_subsamples_and_zero_pads():
  block = resnet.BasicBlock(8, stride=2, shortcut="A")
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
  params, batch_stats = registry.init_variables(block, jax.random.key(1), (6, 6, 4))
  # Zero the residual branch (bn2 scale 0, bias 0): the output is relu(shortcut(x)).
  params["bn2"]["scale"] = jnp.zeros_like(params["bn2"]["scale"])
  out = jax.jit(lambda v: block.apply(v, x, train=False))(
      {"params": params, "batch_stats": batch_stats})
  expected = jnp.pad(x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (2, 2)))
  chex.assert_trees_all_close(out, jax.nn.relu(expected), atol=1e-6)


def test_forward_and_init_scales():
  model = registry.create_model("resnet20", 10)
  params, batch_stats = registry.init_variables(model, jax.random.key(0), (8, 8, 3))
  kernel = params["stage3_block1"]["conv2"]["kernel"]
  np.testing.assert_allclose(np.std(kernel), np.sqrt(2.0 / (9 * 64)), rtol=0.03)
  np.testing.assert_allclose(np.std(params["head"]["kernel"]), 0.01, rtol=0.3)
  np.testing.assert_array_equal(params["head"]["bias"], 0.0)
  np.testing.assert_array_equal(params["stage1_block0"]["bn1"]["scale"], 1.0)
  np.testing.assert_array_equal(batch_stats["stage1_block0"]["bn1"]["var"], 1.0)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  logits = apply({"params": params, "batch_stats": batch_stats}, jnp.ones((2, 8, 8, 3)))
  chex.assert_shape(logits, (2, 10))
  chex.assert_tree_all_finite(logits)



def test_materialized_blocks_compute_the_same_function():
  plain = registry.create_model("resnet20", 10, materialize=False)
  mat = registry.create_model("resnet20", 10, materialize=True)
  params, stats = registry.init_variables(plain, jax.random.key(0), (16, 16, 3))
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  variables = {"params": params, "batch_stats": stats}
  for train in (False, True):
    a, _ = plain.apply(variables, x, train=train, mutable=["batch_stats"])
    b, _ = mat.apply(variables, x, train=train, mutable=["batch_stats"])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  def grad(model):
    return jax.grad(lambda p: model.apply({"params": p, "batch_stats": stats}, x,
                                          train=False).sum())(params)

  chex.assert_trees_all_close(grad(plain), grad(mat), rtol=1e-4, atol=1e-6)
