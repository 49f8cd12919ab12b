"""Tests of snnjax.estimators._convs: grouped convolutions as sliced batched dots."""

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from snnjax.estimators import _convs


def _rand(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _conv_eqn_params(lhs, rhs, **kw):
  """The conv_general_dilated jaxpr equation's params for these arguments."""
  jaxpr = jax.make_jaxpr(lambda a, b: lax.conv_general_dilated(a, b, **kw))(lhs, rhs)
  (eqn,) = [e for e in jaxpr.jaxpr.eqns if e.primitive is lax.conv_general_dilated_p]
  return eqn.params


CASES = [
    # (lhs shape, rhs shape, kwargs): NHWC/HWIO unless given.
    ((2, 9, 9, 6), (3, 3, 3, 4), dict(window_strides=(1, 1), padding="SAME",
                                      feature_group_count=2)),
    ((2, 9, 9, 6), (3, 3, 1, 6), dict(window_strides=(2, 2), padding="SAME",
                                      feature_group_count=6)),  # depthwise, strided
    ((2, 10, 8, 4), (3, 2, 2, 6), dict(window_strides=(2, 1), padding=((1, 0), (2, 1)),
                                       rhs_dilation=(2, 1), feature_group_count=2)),
    ((2, 7, 7, 4), (3, 3, 2, 4), dict(window_strides=(1, 1), padding=((1, 1), (0, 2)),
                                      lhs_dilation=(2, 1), feature_group_count=2)),
    ((6, 8, 8, 3), (3, 3, 3, 4), dict(window_strides=(1, 1), padding="VALID",
                                      batch_group_count=2)),
    ((2, 8, 8, 4), (3, 3, 4, 4), dict(window_strides=(1, 1), padding=((-1, 1), (1, 1)),
                                      feature_group_count=1, batch_group_count=1)),
]


@pytest.mark.parametrize("lhs_shape,rhs_shape,kw", CASES)
@pytest.mark.parametrize("layout", [("NHWC", "HWIO", "NHWC"), ("NCHW", "OIHW", "NCHW"),
                                    ("NHWC", "HWIO", "NCHW")])
def test_matches_lax(lhs_shape, rhs_shape, kw, layout):
  lhs, rhs = _rand(lhs_shape, 0), _rand(rhs_shape, 1)
  if layout[0] == "NCHW":
    lhs = jnp.transpose(lhs, (0, 3, 1, 2))
  if layout[1] == "OIHW":
    rhs = jnp.transpose(rhs, (3, 2, 0, 1))
  kw = dict(kw, dimension_numbers=layout)
  expected = lax.conv_general_dilated(lhs, rhs, precision="highest", **kw)
  params = dict(_conv_eqn_params(lhs, rhs, **kw), precision=lax.Precision.HIGHEST)
  got = _convs.conv_as_sliced_dots(lhs, rhs, **params)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _conv(x, w, stride=1):
  return lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _tiny_net(params, x):
  h = jax.nn.relu(_conv(x, params["w1"], stride=2))
  h = jax.jit(lambda h, w: jax.nn.relu(_conv(h, w)))(h, params["w2"])  # a nested jit call
  return jnp.mean(h, axis=(1, 2)) @ params["dense"]


def _loss(p, xi, yi):
  return -jax.nn.log_softmax(_tiny_net(p, xi[None])[0])[yi]


def _per_example_grads(params, x, y):
  return jax.vmap(jax.grad(_loss), in_axes=(None, 0, 0))(params, x, y)


def _grad_params():
  params = {"w1": _rand((3, 3, 3, 8), 2) * 0.3, "w2": _rand((3, 3, 8, 8), 3) * 0.2,
            "dense": _rand((8, 5), 4)}
  return params, _rand((6, 12, 12, 3), 5), jnp.arange(6) % 5


@functools.cache
def _loop_grads():
  """Exact reference: one jitted gradient call per example, stacked (computed once)."""
  params, x, y = _grad_params()
  grad = jax.jit(jax.grad(_loss))
  loop = [grad(params, x[i], y[i]) for i in range(x.shape[0])]
  return jax.tree.map(lambda *a: np.stack(a), *loop)


class PerExampleGradientsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_rewrite_keeps_per_example_gradients(self):
    params, x, y = _grad_params()
    jaxpr = jax.make_jaxpr(_per_example_grads)(params, x, y)
    grouped = [e for e in jaxpr.eqns if e.primitive is lax.conv_general_dilated_p
               and e.params["feature_group_count"] > 1]
    nested = [e for e in jaxpr.eqns if e.primitive.name in ("pjit", "jit")]
    assert grouped and nested  # both paths of the interpreter are exercised
    rewritten = self.variant(_convs.grouped_convs_as_dots(_per_example_grads))
    got = rewritten(params, x, y)
    chex.assert_trees_all_close(got, _loop_grads(), rtol=1e-4, atol=1e-5)

  def test_rewritten_program_has_no_grouped_convolution(self):
    params = {"w1": _rand((3, 3, 3, 8), 2), "w2": _rand((3, 3, 8, 8), 3), "dense": _rand((8, 5), 4)}
    x, y = _rand((4, 8, 8, 3), 5), jnp.arange(4)
    def grouped(fn):
      text = jax.jit(fn).lower(params, x, y).as_text()
      return re.findall(r"(?:feature|batch)_group_count = ([0-9]+)", text)
    assert any(int(g) > 1 for g in grouped(_per_example_grads))
    assert all(int(g) == 1 for g in grouped(_convs.grouped_convs_as_dots(_per_example_grads)))
