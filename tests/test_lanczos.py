"""Tests of snnjax.estimators.lanczos against numpy.linalg.eigh of dense Hessians."""

import functools

import chex
import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import _tiny_curvature as tiny
from snnjax.errors import MaskMismatchError, UserError
from snnjax.estimators.lanczos import (_tridiag, lanczos, power_iteration, spectral_density,
                                      top_eigenvalues)

MLP_PARAMS, MLP_BATCH = tiny.make_mlp()
MLP_H = tiny.dense_hessian(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH)
MLP_EIGS = np.linalg.eigvalsh(MLP_H)[::-1]  # descending
CNN_PARAMS, CNN_STATS, CNN_BATCH = tiny.make_cnn()
cnn_loss = functools.partial(tiny.cnn_loss, batch_stats=CNN_STATS)
CNN_H = tiny.dense_hessian(cnn_loss, CNN_PARAMS, CNN_BATCH)
SIZES = (16, 32, 16)


def _flat(tree):
  return np.asarray(ravel_pytree(tree)[0], np.float64)


def test_lanczos_primitive_restarts_on_repeated_eigenvalues():
  eigs = np.array([5.0, 5.0, 5.0, 2.0, 1.0, 1.0, 0.0, 0.0, -1.0, -3.0])
  q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((10, 10)))
  a = q @ np.diag(eigs) @ q.T
  v0 = np.random.default_rng(1).standard_normal(10)
  # Six distinct eigenvalues: without restarts the Krylov space is invariant after 6 steps.
  alpha, beta, basis = lanczos(lambda v: a @ v, v0, 10)
  assert alpha.size == 6
  np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(_tridiag(alpha, beta))),
                             np.unique(eigs), atol=1e-5)
  # With restarts all 10 steps run and T carries every eigenvalue with its multiplicity.
  alpha, beta, basis = lanczos(lambda v: a @ v, v0, 10, rng=np.random.default_rng(2))
  assert alpha.size == 10
  np.testing.assert_allclose(basis @ basis.T, np.eye(10), atol=1e-5)
  np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(_tridiag(alpha, beta))),
                             np.sort(eigs), atol=1e-5)


def test_top_eigenvalues_match_eigh_mlp():
  est = top_eigenvalues(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, k=5, key=jax.random.key(0))
  np.testing.assert_allclose(est.extra["eigenvalues"], MLP_EIGS[:5], rtol=1e-3)
  assert est.value == est.extra["eigenvalues"][0]
  assert est.extra["num_matvecs"] == est.extra["num_iters"] <= 30
  for lam, u in zip(est.extra["eigenvalues"], est.extra["eigenvectors"]):
    chex.assert_trees_all_equal_shapes(u, MLP_PARAMS)
    u = _flat(u)
    np.testing.assert_allclose(np.linalg.norm(u), 1.0, rtol=1e-5)
    assert np.linalg.norm(MLP_H @ u - lam * u) < 2e-3 * abs(MLP_EIGS[0])


def test_full_spectrum_of_cnn_in_eval_mode():
  dim = CNN_H.shape[0]
  est = top_eigenvalues(cnn_loss, CNN_PARAMS, CNN_BATCH, k=dim, key=jax.random.key(1),
                                num_iters=dim)
  exact = np.linalg.eigvalsh(CNN_H)[::-1]
  np.testing.assert_allclose(est.extra["eigenvalues"], exact, atol=1e-4 * abs(exact[0]))


def test_masked_top_eigenvalues_match_active_block():
  mask = tiny.random_mask(MLP_PARAMS, 0.3, seed=1)
  m = tiny.flat_mask(mask)
  exact = np.linalg.eigvalsh(MLP_H[m][:, m])[::-1]
  est = top_eigenvalues(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, k=3,
                                key=jax.random.key(2), mask=mask)
  assert est.extra["dim"] == m.sum()
  np.testing.assert_allclose(est.extra["eigenvalues"], exact[:3], rtol=1e-3)
  for u in est.extra["eigenvectors"]:
    assert np.all(_flat(u)[~m] == 0.0)


def test_several_batches_and_chunking():
  batches = tiny.split(MLP_BATCH, SIZES)
  three = top_eigenvalues(tiny.mlp_loss, MLP_PARAMS, batches, k=3, key=jax.random.key(3))
  one = top_eigenvalues(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, k=3, key=jax.random.key(3))
  assert three.num_examples == 64
  np.testing.assert_allclose(three.extra["eigenvalues"], MLP_EIGS[:3], rtol=1e-3)
  np.testing.assert_allclose(three.extra["eigenvalues"], one.extra["eigenvalues"], rtol=1e-5)
  slq_one = spectral_density(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH,
                                     key=jax.random.key(4), num_probes=2, num_iters=10)
  slq_three = spectral_density(tiny.mlp_loss, MLP_PARAMS, batches,
                                       key=jax.random.key(4), num_probes=2, num_iters=10)
  np.testing.assert_allclose(slq_three.nodes, slq_one.nodes, rtol=1e-3, atol=1e-5)


def test_power_iteration_agrees_with_top_eigenvalue():
  assert MLP_EIGS[0] > abs(MLP_EIGS[-1])  # the top eigenvalue dominates in magnitude
  est = power_iteration(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, key=jax.random.key(5),
                                num_iters=1000, tol=1e-7)
  assert est.extra["converged"]
  np.testing.assert_allclose(est.value, MLP_EIGS[0], rtol=1e-3)
  u = _flat(est.extra["eigenvector"])
  assert abs(u @ np.linalg.eigh(MLP_H)[1][:, -1]) > 0.95


@pytest.mark.parametrize("masked", [False, True])
def test_spectral_density(masked):
  mask = tiny.random_mask(MLP_PARAMS, 0.5, seed=6) if masked else None
  m = tiny.flat_mask(mask) if masked else np.ones(MLP_H.shape[0], bool)
  h = MLP_H[m][:, m]
  exact = np.linalg.eigvalsh(h)
  dens = spectral_density(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, key=jax.random.key(6),
                                  num_probes=20, num_iters=25, mask=mask)
  assert dens.nodes.shape == dens.weights.shape == (20, 25) and dens.dim == m.sum()
  np.testing.assert_allclose(dens.weights.sum(axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.trapezoid(dens.density, dens.grid), 1.0, atol=1e-3)
  slack = 1e-4 * np.abs(exact).max()
  assert dens.nodes.min() >= exact[0] - slack and dens.nodes.max() <= exact[-1] + slack
  samples = dens.trace_samples  # dim * sum(weights * nodes) per probe
  stderr = samples.std(ddof=1) / np.sqrt(samples.size)
  assert abs(dens.trace - np.trace(h)) < 4 * stderr


def test_mask_mismatch_raises():
  bad = jax.tree.map(lambda p: np.ones(np.shape(p), bool), MLP_PARAMS)
  bad["head"]["kernel"] = np.ones((5, 16), bool)
  with pytest.raises(MaskMismatchError):
    top_eigenvalues(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, k=1, key=jax.random.key(0),
                            mask=bad)
  with pytest.raises(MaskMismatchError):
    spectral_density(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, key=jax.random.key(0),
                             num_probes=1, num_iters=2, mask={"head": bad["head"]})


@pytest.mark.parametrize("kwargs", [dict(k=0), dict(k=1000), dict(k=5, num_iters=3)])
def test_bad_input_raises_user_error(kwargs):
  with pytest.raises(UserError):
    top_eigenvalues(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, key=jax.random.key(0), **kwargs)


def test_power_iteration_returns_the_vector_of_its_value_when_not_converged():
  est = power_iteration(tiny.mlp_loss, MLP_PARAMS, MLP_BATCH, key=jax.random.key(5),
                        num_iters=3, tol=1e-12)
  assert not est.extra["converged"]
  u = _flat(est.extra["eigenvector"]).astype(np.float64)
  np.testing.assert_allclose(np.linalg.norm(u), 1.0, rtol=1e-5)
  np.testing.assert_allclose(est.value, u @ MLP_H @ u, rtol=1e-4)  # its Rayleigh quotient
  np.testing.assert_allclose(est.stderr, np.linalg.norm(MLP_H @ u - est.value * u), rtol=1e-3)


def test_full_lanczos_quadrature_nodes_are_exact_eigenvalues():
  # With as many Lanczos steps as dimensions the Gauss quadrature is exact: every node that
  # carries weight is an eigenvalue of H.
  params, batch = tiny.make_linear()
  h = tiny.dense_hessian(tiny.linear_loss, params, batch)
  exact = np.linalg.eigvalsh(h)
  dim = h.shape[0]
  dens = spectral_density(tiny.linear_loss, params, batch, key=jax.random.key(7), num_probes=2,
                          num_iters=dim)
  tol = 1e-3 * np.abs(exact).max()
  for nodes, weights in zip(dens.nodes, dens.weights):
    for node in nodes[weights > 1e-4]:
      assert np.abs(exact - node).min() < tol, node
