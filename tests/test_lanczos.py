"""Tests of snnjax.estimators.lanczos against numpy.linalg.eigh of dense Hessians (tests/_tiny.py)."""

import chex
import jax
import numpy as np
import pytest

import _tiny as tiny
from snnjax.errors import MaskMismatchError, UserError
from snnjax.estimators import EigenResult, SpectralDensity
from snnjax.estimators.hessian import HessianOperator
from snnjax.estimators.lanczos import (_tridiag, lanczos, power_iteration, spectral_density,
                                       top_eigenvalues)

SIZES = (16, 32, 16)


def _fixture(name):
  """(loss_fn, params, batch, dense Hessian) of ``tiny.curvature(name)``."""
  model, batch = tiny.curvature(name)
  return model.loss_fn, model.params, batch, tiny.hessian(name)


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
  loss, params, batch, h = _fixture("mlp")
  eigs = tiny.eigvalsh("mlp")
  est = top_eigenvalues(loss, params, batch, k=3, key=jax.random.key(0), num_iters=60)
  assert isinstance(est, EigenResult) and est.method == "lanczos" and est.converged is None
  np.testing.assert_allclose(est.eigenvalues, eigs[:3], rtol=1e-3)
  assert est.value == est.eigenvalues[0] and est.residual == est.residuals[0]
  # 60 Lanczos steps + one product per vector for the true residuals.
  assert est.num_iters == 60 and est.num_matvecs == 63 and est.num_examples == 64
  assert est.dim == h.shape[0]
  for lam, u, r in zip(est.eigenvalues, est.eigenvectors, est.residuals):
    chex.assert_trees_all_equal_shapes(u, params)
    u = tiny.flat(u)
    np.testing.assert_allclose(np.linalg.norm(u), 1.0, rtol=1e-5)
    assert np.linalg.norm(h @ u - lam * u) < 2e-3 * abs(eigs[0])
    assert r < 2e-3 * abs(eigs[0])
    # ``residuals`` is the TRUE ||Hu - lambda u|| (the Ritz estimates read ~0 in float32).
    np.testing.assert_allclose(r, np.linalg.norm(h @ u - lam * u), rtol=0.05, atol=1e-6)
  assert est.ritz_residuals.shape == (3,)
  d = est.as_dict()
  assert d["value"] == est.value and d["eigenvalues"] == [float(e) for e in est.eigenvalues]
  assert "eigenvectors" not in d


def test_full_spectrum_of_cnn_in_eval_mode():
  loss, params, batch, h = _fixture("cnn")
  dim = h.shape[0]
  est = top_eigenvalues(loss, params, batch, k=dim, key=jax.random.key(1), num_iters=dim)
  exact = tiny.eigvalsh("cnn")
  np.testing.assert_allclose(est.eigenvalues, exact, atol=1e-4 * abs(exact[0]))


def test_masked_top_eigenvalues_match_active_block():
  loss, params, batch, h = _fixture("mlp")
  mask = tiny.random_mask(params, 0.3, seed=1)
  m = tiny.flat_mask(mask)
  exact = np.linalg.eigvalsh(h[m][:, m])[::-1]
  est = top_eigenvalues(loss, params, batch, k=3, key=jax.random.key(2), mask=mask)
  assert est.dim == m.sum()
  np.testing.assert_allclose(est.eigenvalues, exact[:3], rtol=1e-3)
  for u in est.eigenvectors:
    assert np.all(tiny.flat(u)[~m] == 0.0)


def test_several_batches_and_chunking():
  loss, params, batch, _ = _fixture("mlp")
  batches = tiny.split(batch, SIZES)
  three = top_eigenvalues(loss, params, batches, k=2, key=jax.random.key(3))
  one = top_eigenvalues(loss, params, batch, k=2, key=jax.random.key(3))
  assert three.num_examples == 64
  np.testing.assert_allclose(three.eigenvalues, one.eigenvalues, rtol=1e-5)
  slq_one = spectral_density(loss, params, batch, key=jax.random.key(4), num_probes=2,
                             num_iters=10)
  slq_three = spectral_density(loss, params, batches, key=jax.random.key(4), num_probes=2,
                               num_iters=10)
  np.testing.assert_allclose(slq_three.nodes, slq_one.nodes, rtol=1e-3, atol=1e-5)


def test_power_iteration_agrees_with_top_eigenvalue():
  loss, params, batch, h = _fixture("mlp")
  eigs = tiny.eigvalsh("mlp")
  assert eigs[0] > abs(eigs[-1])  # the top eigenvalue dominates in magnitude
  est = power_iteration(loss, params, batch, key=jax.random.key(5), num_iters=1000, tol=1e-7)
  assert isinstance(est, EigenResult) and est.method == "power_iteration" and est.converged
  np.testing.assert_allclose(est.value, eigs[0], rtol=1e-3)
  u = tiny.flat(est.eigenvectors[0])
  assert abs(u @ np.linalg.eigh(h)[1][:, -1]) > 0.95


@pytest.mark.parametrize("masked", [False, True])
def test_spectral_density(masked):
  loss, params, batch, h_full = _fixture("mlp")
  mask = tiny.random_mask(params, 0.5, seed=6) if masked else None
  m = tiny.flat_mask(mask) if masked else np.ones(h_full.shape[0], bool)
  h = h_full[m][:, m]
  exact = np.linalg.eigvalsh(h)
  key = jax.random.key(6)
  dens = spectral_density(loss, params, batch, key=key, num_probes=6, num_iters=25, mask=mask)
  assert isinstance(dens, SpectralDensity) and dens.num_probes == 6
  assert dens.nodes.shape == dens.weights.shape == (6, 25) and dens.dim == m.sum()
  np.testing.assert_allclose(dens.weights.sum(axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.trapezoid(dens.density, dens.grid), 1.0, atol=1e-3)
  slack = 1e-4 * np.abs(exact).max()
  assert dens.nodes.min() >= exact[0] - slack and dens.nodes.max() <= exact[-1] + slack
  # Exact reference: the quadrature of f(t) = t is alpha_0 = v_p^T H v_p, so each trace sample is
  # z_p^T H z_p for the probe's Rademacher start z_p = sqrt(dim) v_p.
  op = HessianOperator(loss, params, batch, mask)
  zs = np.stack([np.asarray(op.probe(key, p), np.float64) for p in range(6)])
  np.testing.assert_allclose(dens.trace_samples, np.einsum("ki,ij,kj->k", zs, h, zs),
                             rtol=1e-4, atol=1e-6)
  assert dens.as_dict()["trace"] == dens.trace


def test_mask_mismatch_raises():
  loss, params, batch, _ = _fixture("mlp")
  bad = jax.tree.map(lambda p: np.ones(np.shape(p), bool), params)
  bad["head"]["kernel"] = np.ones((5, 16), bool)
  with pytest.raises(MaskMismatchError):
    top_eigenvalues(loss, params, batch, k=1, key=jax.random.key(0), mask=bad)
  with pytest.raises(MaskMismatchError):
    spectral_density(loss, params, batch, key=jax.random.key(0), num_probes=1, num_iters=2,
                     mask={"head": bad["head"]})


@pytest.mark.parametrize("kwargs", [dict(k=0), dict(k=1000), dict(k=5, num_iters=3),
                                    dict(k=1, devices="tpu")])
def test_bad_input_raises_user_error(kwargs):
  loss, params, batch, _ = _fixture("mlp")
  with pytest.raises(UserError):
    top_eigenvalues(loss, params, batch, key=jax.random.key(0), **kwargs)


def test_power_iteration_returns_the_vector_of_its_value_when_not_converged():
  loss, params, batch, h = _fixture("mlp")
  est = power_iteration(loss, params, batch, key=jax.random.key(5), num_iters=3, tol=1e-12)
  assert not est.converged and est.num_iters == 3
  u = tiny.flat(est.eigenvectors[0])
  np.testing.assert_allclose(np.linalg.norm(u), 1.0, rtol=1e-5)
  np.testing.assert_allclose(est.value, u @ h @ u, rtol=1e-4)  # its Rayleigh quotient
  np.testing.assert_allclose(est.residual, np.linalg.norm(h @ u - est.value * u), rtol=1e-3)


def test_full_lanczos_quadrature_nodes_are_exact_eigenvalues():
  # With as many Lanczos steps as dimensions the Gauss quadrature is exact: every node that
  # carries weight is an eigenvalue of H.
  loss, params, batch, h = _fixture("linear")
  exact = np.linalg.eigvalsh(h)
  dim = h.shape[0]
  dens = spectral_density(loss, params, batch, key=jax.random.key(7), num_probes=2,
                          num_iters=dim)
  tol = 1e-3 * np.abs(exact).max()
  for nodes, weights in zip(dens.nodes, dens.weights):
    for node in nodes[weights > 1e-4]:
      assert np.abs(exact - node).min() < tol, node
