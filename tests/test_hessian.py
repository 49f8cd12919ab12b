"""Tests of snnjax.estimators.hessian against dense Hessians of tiny models."""

import functools

import chex
import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import _tiny_curvature as tiny
from snnjax.errors import MaskMismatchError, UserError
from snnjax.estimators import hessian

MLP_PARAMS, MLP_BATCH = tiny.make_mlp()
MLP_H = tiny.dense_hessian(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH)
CNN_PARAMS, CNN_STATS, CNN_BATCH = tiny.make_cnn()
cnn_loss = functools.partial(tiny.cnn_loss, batch_stats=CNN_STATS)
CNN_H = tiny.dense_hessian(cnn_loss, CNN_PARAMS, CNN_BATCH)
SIZES = (16, 32, 16)  # MLP_BATCH split into three batches, two sizes


def _random_tree(params, seed):
  flat, unravel = ravel_pytree(params)
  return unravel(np.random.default_rng(seed).standard_normal(flat.size).astype(np.float32))


def _dense_product(h, params, v):
  flat, unravel = ravel_pytree(params)
  return unravel((h @ np.asarray(ravel_pytree(v)[0], np.float64)).astype(np.float32))


class HvpTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_mlp_matches_dense(self):
    v = _random_tree(MLP_PARAMS, 1)
    hv = self.variant(functools.partial(hessian.hvp, tiny.mlp_loss))(MLP_PARAMS, MLP_BATCH, v)
    chex.assert_trees_all_close(hv, _dense_product(MLP_H, MLP_PARAMS, v), rtol=1e-4, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_cnn_eval_mode_matches_dense(self):
    v = _random_tree(CNN_PARAMS, 2)
    hv = self.variant(functools.partial(hessian.hvp, cnn_loss))(CNN_PARAMS, CNN_BATCH, v)
    chex.assert_trees_all_close(hv, _dense_product(CNN_H, CNN_PARAMS, v), rtol=1e-4, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_is_restricted_product(self):
    mask = tiny.random_mask(MLP_PARAMS, 0.4, seed=3)
    m = tiny.flat_mask(mask)
    v = _random_tree(MLP_PARAMS, 4)
    fn = self.variant(lambda p, b, v, mask: hessian.hvp(tiny.mlp_loss, p, b, v, mask=mask))
    hv = fn(MLP_PARAMS, MLP_BATCH, v, mask)
    restricted = MLP_H * m[:, None] * m[None, :]
    chex.assert_trees_all_close(hv, _dense_product(restricted, MLP_PARAMS, v),
                                rtol=1e-4, atol=1e-6)


class QuadFormTest(chex.TestCase):
  """z^T H z by forward-over-forward mode, the quantity every Hutchinson probe computes."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_dense(self):
    for loss, params, batch, h, seed in [(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, MLP_H, 11),
                                         (cnn_loss, CNN_PARAMS, CNN_BATCH, CNN_H, 12)]:
      v = _random_tree(params, seed)
      quad = self.variant(functools.partial(hessian._quad_form, loss))(params, batch, v)
      flat = np.asarray(ravel_pytree(v)[0], np.float64)
      np.testing.assert_allclose(float(quad), flat @ h @ flat, rtol=1e-4)

  def test_operator_quad_forms_match_dense_over_batches(self):
    mask = tiny.random_mask(MLP_PARAMS, 0.4, seed=13)
    m = tiny.flat_mask(mask)
    op = hessian.HessianOperator(tiny.mlp_loss, MLP_PARAMS, tiny.split(MLP_BATCH, SIZES), mask)
    zs = np.random.default_rng(14).standard_normal((3, op.dim)).astype(np.float32)
    restricted = MLP_H[m][:, m]
    expected = np.einsum("ki,ij,kj->k", zs, restricted, zs)
    np.testing.assert_allclose(op.quad_forms_of(zs), expected, rtol=1e-4)
    np.testing.assert_allclose(op.quad_forms(jax.random.key(15), 0, 2), [
        z @ restricted @ z for z in np.stack([np.asarray(hessian._probe(
            jax.random.key(15), i, MLP_PARAMS, op.idx, None)) for i in range(2)])], rtol=1e-4)
    assert op.num_quad_forms == 5 and op.num_matvecs == 0


def test_hvp_over_data_is_example_weighted():
  batches = tiny.split(MLP_BATCH, SIZES)
  v = _random_tree(MLP_PARAMS, 5)
  hv = hessian.hvp_over_data(tiny.mlp_loss, MLP_PARAMS, batches, v)
  chex.assert_trees_all_close(hv, _dense_product(MLP_H, MLP_PARAMS, v), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method,num_probes", [("hutchinson", 200), ("hutchpp", 150)])
def test_trace_within_4_stderr_mlp(method, num_probes):
  est = hessian.hessian_trace(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, key=jax.random.key(0),
                              num_probes=num_probes, method=method)
  exact = np.trace(MLP_H)
  assert est.num_examples == 64 and est.num_probes == num_probes
  assert est.extra["dim"] == MLP_H.shape[0]
  assert abs(est.value - exact) < 4 * est.stderr, (est.value, exact, est.stderr)


def test_trace_within_4_stderr_cnn_grouped_probes():
  est = hessian.hessian_trace(cnn_loss, CNN_PARAMS, CNN_BATCH, key=jax.random.key(1),
                              num_probes=100, batch_probes=8)
  assert est.extra["batch_probes"] == 8 and est.extra["samples"].shape == (100,)
  assert abs(est.value - np.trace(CNN_H)) < 4 * est.stderr


def test_several_batches_target_mean_over_all_examples():
  batches = tiny.split(MLP_BATCH, SIZES)
  est = hessian.hessian_trace(tiny.mlp_loss, MLP_PARAMS, batches, key=jax.random.key(2),
                              num_probes=200)
  assert est.num_examples == 64
  assert abs(est.value - np.trace(MLP_H)) < 4 * est.stderr


@pytest.mark.parametrize("method", ["hutchinson", "hutchpp"])
def test_chunking_does_not_change_results(method):
  kwargs = dict(key=jax.random.key(3), num_probes=30, method=method)
  one = hessian.hessian_trace(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, **kwargs)
  three = hessian.hessian_trace(tiny.mlp_loss, MLP_PARAMS, tiny.split(MLP_BATCH, SIZES),
                                **kwargs)
  np.testing.assert_allclose(three.extra["samples"], one.extra["samples"], rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(three.value, one.value, rtol=1e-4)


@pytest.mark.parametrize("method", hessian.METHODS)
def test_probe_grouping_does_not_change_samples(method):
  # batch_probes > 1 is the GPU default: vmapped quadratic forms and (Hutch++) vmapped products.
  kwargs = dict(key=jax.random.key(4), num_probes=10, method=method)
  seq = hessian.hessian_trace(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, batch_probes=1, **kwargs)
  grouped = hessian.hessian_trace(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, batch_probes=4, **kwargs)
  np.testing.assert_allclose(grouped.extra["samples"], seq.extra["samples"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grouped.value, seq.value, rtol=1e-5)


def test_hutchpp_beats_hutchinson_on_psd_operator():
  params, batch = tiny.make_linear()
  h = tiny.dense_hessian(tiny.linear_loss, params, batch)
  assert np.linalg.eigvalsh(h).min() > -1e-6  # PSD
  exact = np.trace(h)
  errors = {"hutchinson": [], "hutchpp": []}
  for seed in range(20):
    for method in errors:
      est = hessian.hessian_trace(tiny.linear_loss, params, batch, key=jax.random.key(seed),
                                  num_probes=30, method=method)
      assert est.num_probes == 30
      errors[method].append(est.value - exact)
  rms = {m: float(np.sqrt(np.mean(np.square(e)))) for m, e in errors.items()}
  assert rms["hutchpp"] < 0.5 * rms["hutchinson"], rms


def test_masked_trace_is_trace_of_active_block():
  mask = tiny.random_mask(MLP_PARAMS, 0.3, seed=5)
  m = tiny.flat_mask(mask)
  exact = np.trace(MLP_H[m][:, m])
  est = hessian.hessian_trace(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, key=jax.random.key(5),
                              num_probes=200, mask=mask)
  assert est.extra["dim"] == m.sum()
  assert abs(est.value - exact) < 4 * est.stderr
  # Hutch++ with k >= dim: Q spans the active space, the trace is exact.
  full = hessian.hessian_trace(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, key=jax.random.key(5),
                               num_probes=3 * int(m.sum()), mask=mask, method="hutchpp")
  np.testing.assert_allclose(full.value, exact, rtol=1e-4, atol=1e-5)
  assert full.stderr < 1e-5


def test_rtol_stops_early():
  est = hessian.hessian_trace(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, key=jax.random.key(6),
                              num_probes=500, rtol=0.2, min_probes=10)
  assert est.extra["stopped_early"]
  assert 10 <= est.num_probes < 500
  assert est.extra["halfwidth95"] < 0.2 * abs(est.value)
  several = hessian.hessian_trace(tiny.mlp_loss, MLP_PARAMS, tiny.split(MLP_BATCH, SIZES),
                                  key=jax.random.key(6), num_probes=500, rtol=0.2,
                                  min_probes=10)
  # Probe i is the same vector however the examples are batched, so the same probes stop it.
  assert several.extra["stopped_early"] and several.num_probes == est.num_probes
  np.testing.assert_allclose(several.extra["samples"], est.extra["samples"], rtol=1e-4)


def test_mask_mismatch_raises():
  bad_shape = jax.tree.map(lambda p: np.ones(np.shape(p), bool), MLP_PARAMS)
  bad_shape["stem"]["bias"] = np.ones(3, bool)
  bad_structure = {"stem": bad_shape["stem"]}
  for mask in (bad_shape, bad_structure):
    with pytest.raises(MaskMismatchError):
      hessian.hessian_trace(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, key=jax.random.key(0),
                            num_probes=2, mask=mask)
    with pytest.raises(MaskMismatchError):
      hessian.hvp(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, MLP_PARAMS, mask=mask)


@pytest.mark.parametrize("kwargs", [
    dict(method="exact"), dict(num_probes=0), dict(method="hutchpp", num_probes=2),
    dict(rtol=-1.0), dict(min_probes=1), dict(batch_probes=0),
    dict(mask=jax.tree.map(lambda p: np.zeros(np.shape(p), bool), MLP_PARAMS)),
])
def test_bad_input_raises_user_error(kwargs):
  kwargs = {"key": jax.random.key(0), "num_probes": 5, **kwargs}
  with pytest.raises(UserError):
    hessian.hessian_trace(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, **kwargs)


def test_empty_data_raises_user_error():
  with pytest.raises(UserError):
    hessian.hessian_trace(tiny.mlp_loss, MLP_PARAMS, [], key=jax.random.key(0), num_probes=5)
