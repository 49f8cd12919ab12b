"""Tests of snnjax.estimators.hessian against dense Hessians of tiny models (tests/_tiny.py)."""

import functools

import chex
import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import _tiny as tiny
from snnjax.errors import MaskMismatchError, UserError
from snnjax.estimators import hessian

SIZES = (16, 32, 16)  # the MLP's batch split into three batches, two sizes


def _fixture(name):
  """(loss_fn, params, batch, dense Hessian) of ``tiny.curvature(name)``."""
  model, batch = tiny.curvature(name)
  return model.loss_fn, model.params, batch, tiny.hessian(name)


def _random_tree(params, seed):
  flat, unravel = ravel_pytree(params)
  return unravel(np.random.default_rng(seed).standard_normal(flat.size).astype(np.float32))


def _dense_product(h, params, v):
  _, unravel = ravel_pytree(params)
  return unravel((h @ tiny.flat(v)).astype(np.float32))


def _probes(key, count, op):
  """The Rademacher probes z_i (count, dim) the estimators draw, as float64."""
  return np.stack([np.asarray(op.probe(key, i), np.float64) for i in range(count)])


class HvpTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_dense(self):
    for name, seed in (("mlp", 1), ("cnn", 2)):  # the CNN: eval-mode BatchNorm
      loss, params, batch, h = _fixture(name)
      v = _random_tree(params, seed)
      hv = self.variant(functools.partial(hessian.hvp, loss))(params, batch, v)
      chex.assert_trees_all_close(hv, _dense_product(h, params, v), rtol=1e-4, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_is_restricted_product(self):
    loss, params, batch, h = _fixture("mlp")
    mask = tiny.random_mask(params, 0.4, seed=3)
    m = tiny.flat_mask(mask)
    v = _random_tree(params, 4)
    fn = self.variant(lambda p, b, v, mask: hessian.hvp(loss, p, b, v, mask=mask))
    hv = fn(params, batch, v, mask)
    restricted = h * m[:, None] * m[None, :]
    chex.assert_trees_all_close(hv, _dense_product(restricted, params, v), rtol=1e-4, atol=1e-6)


class QuadFormTest(chex.TestCase):
  """z^T H z by forward-over-forward mode, the quantity every Hutchinson probe computes."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_dense(self):
    for name, seed in (("mlp", 11), ("cnn", 12)):
      loss, params, batch, h = _fixture(name)
      v = _random_tree(params, seed)
      quad = self.variant(functools.partial(hessian._quad_form, loss))(params, batch, v)
      flat = tiny.flat(v)
      np.testing.assert_allclose(float(quad), flat @ h @ flat, rtol=1e-4)

  def test_operator_quad_forms_match_dense_over_batches(self):
    loss, params, batch, h = _fixture("mlp")
    mask = tiny.random_mask(params, 0.4, seed=13)
    m = tiny.flat_mask(mask)
    op = hessian.HessianOperator(loss, params, tiny.split(batch, SIZES), mask)
    zs = np.random.default_rng(14).standard_normal((3, op.dim)).astype(np.float32)
    restricted = h[m][:, m]
    expected = np.einsum("ki,ij,kj->k", zs, restricted, zs)
    np.testing.assert_allclose(op.quad_forms_of(zs), expected, rtol=1e-4)
    np.testing.assert_allclose(op.quad_forms(jax.random.key(15), 0, 2), [
        z @ restricted @ z for z in _probes(jax.random.key(15), 2, op)], rtol=1e-4)
    assert op.num_quad_forms == 5 and op.num_matvecs == 0


def test_hvp_over_data_is_example_weighted():
  loss, params, batch, h = _fixture("mlp")
  v = _random_tree(params, 5)
  hv = hessian.hvp_over_data(loss, params, tiny.split(batch, SIZES), v)
  chex.assert_trees_all_close(hv, _dense_product(h, params, v), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name,batch_probes", [("mlp", 1), ("cnn", 8)])
def test_hutchinson_samples_are_the_quadratic_forms_of_its_probes(name, batch_probes):
  # Exact reference: sample i is z_i^T H z_i for the dense H and the probe z_i = probe i of key.
  loss, params, batch, h = _fixture(name)
  key = jax.random.key(0)
  est = hessian.hessian_trace(loss, params, batch, key=key, num_probes=12,
                              batch_probes=batch_probes)
  zs = _probes(key, 12, hessian.HessianOperator(loss, params, batch))
  expected = np.einsum("ki,ij,kj->k", zs, h, zs)
  np.testing.assert_allclose(est.extra["samples"], expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(est.value, expected.mean(), rtol=1e-4)
  np.testing.assert_allclose(est.stderr, expected.std(ddof=1) / np.sqrt(12), rtol=1e-3)
  assert est.num_examples == batch["x"].shape[0] and est.num_probes == 12
  assert est.extra["dim"] == h.shape[0] and est.extra["batch_probes"] == batch_probes


def test_hutchpp_within_4_stderr():
  loss, params, batch, h = _fixture("mlp")
  est = hessian.hessian_trace(loss, params, batch, key=jax.random.key(0), num_probes=60,
                              method="hutchpp")
  assert est.num_probes == 60 and est.extra["rank"] == 20
  assert abs(est.value - np.trace(h)) < 4 * est.stderr, (est.value, np.trace(h), est.stderr)


@pytest.mark.parametrize("method", ["hutchinson", "hutchpp"])
def test_chunking_does_not_change_results(method):
  loss, params, batch, _ = _fixture("mlp")
  kwargs = dict(key=jax.random.key(3), num_probes=30, method=method)
  one = hessian.hessian_trace(loss, params, batch, **kwargs)
  three = hessian.hessian_trace(loss, params, tiny.split(batch, SIZES), **kwargs)
  assert three.num_examples == 64
  np.testing.assert_allclose(three.extra["samples"], one.extra["samples"], rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(three.value, one.value, rtol=1e-4)


@pytest.mark.parametrize("method", ["hutchinson", "hutchpp", "xtrace"])
def test_probe_grouping_does_not_change_samples(method):
  # batch_probes > 1 is the GPU default: vmapped quadratic forms and (Hutch++) vmapped products.
  loss, params, batch, _ = _fixture("mlp")
  kwargs = dict(key=jax.random.key(4), num_probes=10, method=method)
  seq = hessian.hessian_trace(loss, params, batch, batch_probes=1, **kwargs)
  grouped = hessian.hessian_trace(loss, params, batch, batch_probes=4, **kwargs)
  np.testing.assert_allclose(grouped.extra["samples"], seq.extra["samples"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grouped.value, seq.value, rtol=1e-5)


def test_hutchpp_beats_hutchinson_on_psd_operator():
  loss, params, batch, h = _fixture("linear")
  assert np.linalg.eigvalsh(h).min() > -1e-6  # PSD
  exact = np.trace(h)
  errors = {"hutchinson": [], "hutchpp": []}
  for seed in range(20):
    for method in errors:
      est = hessian.hessian_trace(loss, params, batch, key=jax.random.key(seed), num_probes=30,
                                  method=method)
      assert est.num_probes == 30
      errors[method].append(est.value - exact)
  rms = {m: float(np.sqrt(np.mean(np.square(e)))) for m, e in errors.items()}
  assert rms["hutchpp"] < 0.5 * rms["hutchinson"], rms


def test_masked_trace_is_trace_of_active_block():
  loss, params, batch, h = _fixture("mlp")
  mask = tiny.random_mask(params, 0.3, seed=5)
  m = tiny.flat_mask(mask)
  restricted = h[m][:, m]
  key = jax.random.key(5)
  est = hessian.hessian_trace(loss, params, batch, key=key, num_probes=8, mask=mask)
  assert est.extra["dim"] == m.sum()
  op = hessian.HessianOperator(loss, params, batch, mask)
  zs = _probes(key, 8, op)
  np.testing.assert_allclose(est.extra["samples"], np.einsum("ki,ij,kj->k", zs, restricted, zs),
                             rtol=1e-4, atol=1e-6)
  # Hutch++ with k >= dim: Q spans the active space, the trace is exact.
  full = hessian.hessian_trace(loss, params, batch, key=key, num_probes=3 * int(m.sum()),
                               mask=mask, method="hutchpp")
  np.testing.assert_allclose(full.value, np.trace(restricted), rtol=1e-4, atol=1e-5)
  assert full.stderr < 1e-5


def test_rtol_stops_early():
  loss, params, batch, _ = _fixture("mlp")
  est = hessian.hessian_trace(loss, params, batch, key=jax.random.key(6), num_probes=500,
                              rtol=0.2, min_probes=10)
  assert est.extra["stopped_early"]
  assert 10 <= est.num_probes < 500
  assert est.extra["halfwidth95"] < 0.2 * abs(est.value)
  several = hessian.hessian_trace(loss, params, tiny.split(batch, SIZES), key=jax.random.key(6),
                                  num_probes=500, rtol=0.2, min_probes=10)
  # Probe i is the same vector however the examples are batched, so the same probes stop it.
  assert several.extra["stopped_early"] and several.num_probes == est.num_probes
  np.testing.assert_allclose(several.extra["samples"], est.extra["samples"], rtol=1e-4)


def test_mask_mismatch_raises():
  loss, params, batch, _ = _fixture("mlp")
  bad_shape = jax.tree.map(lambda p: np.ones(np.shape(p), bool), params)
  bad_shape["stem"]["bias"] = np.ones(3, bool)
  bad_structure = {"stem": bad_shape["stem"]}
  for mask in (bad_shape, bad_structure):
    with pytest.raises(MaskMismatchError):
      hessian.hessian_trace(loss, params, batch, key=jax.random.key(0), num_probes=2, mask=mask)
    with pytest.raises(MaskMismatchError):
      hessian.hvp(loss, params, batch, params, mask=mask)


@pytest.mark.parametrize("kwargs", [
    dict(method="nope"), dict(num_probes=0), dict(method="hutchpp", num_probes=2),
    dict(rtol=-1.0), dict(min_probes=1), dict(batch_probes=0), dict(devices="gpu"),
    dict(mask="zeros"),
])
def test_bad_input_raises_user_error(kwargs):
  loss, params, batch, _ = _fixture("mlp")
  if kwargs.get("mask") == "zeros":
    kwargs = dict(mask=jax.tree.map(lambda p: np.zeros(np.shape(p), bool), params))
  kwargs = {"key": jax.random.key(0), "num_probes": 5, **kwargs}
  with pytest.raises(UserError):
    hessian.hessian_trace(loss, params, batch, **kwargs)


def test_empty_data_raises_user_error():
  loss, params, _, _ = _fixture("mlp")
  with pytest.raises(UserError):
    hessian.hessian_trace(loss, params, [], key=jax.random.key(0), num_probes=5)
