"""Tests of snnjax.estimators.sketch (XTrace, XDiag) on explicit matrices and a tiny model."""

import jax
import numpy as np

import _tiny as tiny
from snnjax.estimators import hessian, sketch


def _rademacher(rng, s, dim):
  return rng.choice([-1.0, 1.0], size=(s, dim))


def _low_rank_psd(dim=50, rank=5, seed=0):
  rng = np.random.default_rng(seed)
  u = np.linalg.qr(rng.standard_normal((dim, rank)))[0]
  return (u * rng.uniform(1, 10, rank)) @ u.T


def test_xtrace_and_xdiag_exact_on_low_rank_psd():
  a = _low_rank_psd()
  omega = _rademacher(np.random.default_rng(1), 7, 50)  # rank 5 < s = 7 (14 products)
  est, err, ests, used = sketch.xtrace(lambda z: z @ a, omega)
  np.testing.assert_allclose(est, np.trace(a), rtol=1e-10)
  np.testing.assert_allclose(ests, np.trace(a), rtol=1e-10)
  assert err < 1e-9 and used <= 14
  diag, diag_err, _ = sketch.xdiag(lambda z: z @ a, omega)
  np.testing.assert_allclose(diag, np.diag(a), atol=1e-10)
  assert diag_err.max() < 1e-9


def test_xtrace_and_xdiag_unbiased_on_indefinite_matrix():
  rng = np.random.default_rng(2)
  g = rng.standard_normal((30, 30))
  a = g + g.T + np.diag(np.linspace(-3, 8, 30))
  runs = [sketch.xtrace(lambda z: z @ a, _rademacher(rng, 4, 30)) for _ in range(400)]
  ests = np.array([r[0] for r in runs])
  se = ests.std(ddof=1) / np.sqrt(ests.size)
  assert abs(ests.mean() - np.trace(a)) < 4 * se, (ests.mean(), np.trace(a), se)
  # The error estimate is of the right size (not a strict bound): within 3x of the true spread.
  assert 0.33 < np.mean([r[1] for r in runs]) / ests.std() < 3
  diags = np.array([sketch.xdiag(lambda z: z @ a, _rademacher(rng, 4, 30))[0]
                    for _ in range(200)])
  z = (diags.mean(0) - np.diag(a)) / (diags.std(0, ddof=1) / np.sqrt(200))
  assert np.mean(z ** 2) < 2.0 and np.abs(z).max() < 4.5, z


def test_hessian_trace_xtrace_on_tiny_models():
  model, batch = tiny.curvature("linear")  # PSD, decaying spectrum
  h = tiny.hessian("linear")
  est = hessian.hessian_trace(model.loss_fn, model.params, batch, key=jax.random.key(0),
                              num_probes=20, method="xtrace")
  assert est.extra["stderr_covers"] == "all" and est.num_probes <= 20
  assert abs(est.value - np.trace(h)) < 4 * est.stderr + 1e-5
  # rank(H) <= 40 (softmax: 20 x 3 parameters, one null direction per input): 2 x 42 products.
  full = hessian.hessian_trace(model.loss_fn, model.params, batch, key=jax.random.key(1),
                               num_probes=84, method="xtrace")
  np.testing.assert_allclose(full.value, np.trace(h), rtol=1e-4)
