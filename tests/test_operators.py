"""Public masked operators (Hessian, GGN, Fisher) and the generic trace / diagonal / eigenvalues.

Checked against dense matrices: the Hessian operator against ``jax.hessian`` of the tiny MLP
(masked), the GGN / Fisher operators' exact traces against ``ggn_trace`` / ``fisher_trace``,
``jax.scipy.sparse.linalg.cg`` on a damped GGN against a dense solve, and the generic entries on
a plain matvec of a random symmetric matrix.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import _tiny as tiny
from snnjax import estimators as est


def test_hessian_operator_is_the_masked_dense_hessian_and_works_with_cg():
  model, batch = tiny.curvature("cnn")
  mask = tiny.random_mask(model.params, 0.7, 1)
  m = tiny.flat_mask(mask)
  h = tiny.hessian("cnn")[np.ix_(m, m)]
  op = est.hessian_operator(model.loss_fn, model.params, batch, mask=mask)
  assert op.dim == m.sum()
  dense = est.trace(op, method="exact")
  np.testing.assert_allclose(dense.value, np.trace(h), rtol=1e-4)
  v = np.random.default_rng(0).standard_normal(op.size).astype(np.float32)
  hv = np.asarray(op.matvec(jnp.asarray(v)))
  np.testing.assert_allclose(hv[m], h @ v[m], rtol=1e-3, atol=1e-5)
  assert np.all(hv[~m] == 0)
  tree = op.matvec(op.to_tree(v[m]))  # pytree in, pytree out
  np.testing.assert_allclose(tiny.flat(tree)[m], h @ v[m], rtol=1e-3, atol=1e-5)


def test_ggn_and_fisher_operators_match_the_traces_and_solve_with_cg():
  model, batch = tiny.classifier("mlp")
  ggn = est.ggn_operator(model.logits_fn, model.params, batch)
  dense = est.trace(ggn, method="exact")
  ref = est.ggn_trace(model.logits_fn, model.params, batch).value
  np.testing.assert_allclose(dense.value, ref, rtol=1e-4)
  emp = est.fisher_operator(model.logits_fn, model.params, batch, labels="data")
  np.testing.assert_allclose(est.trace(emp, method="exact").value,
                             est.fisher_trace(model.logits_fn, model.params, batch,
                                              labels="data").value, rtol=1e-4)
  # damped GGN system with jax.scipy.sparse.linalg.cg, over pytrees
  a = np.asarray(jax.vmap(ggn.matvec)(jnp.eye(ggn.size)), np.float64) + 0.1 * np.eye(ggn.size)
  b = jax.tree.map(lambda p: jnp.ones_like(p), model.params)
  sol, _ = jax.scipy.sparse.linalg.cg(
      lambda v: jax.tree.map(lambda hv, vv: hv + 0.1 * vv, ggn.matvec(v), v), b, tol=1e-7,
      maxiter=500)
  expected = np.linalg.solve(a, np.asarray(ravel_pytree(b)[0], np.float64))
  np.testing.assert_allclose(tiny.flat(sol), expected, rtol=2e-3, atol=2e-3)
  top = est.top_eigenvalues(ggn, k=2, key=jax.random.key(0))
  np.testing.assert_allclose(top.eigenvalues, np.linalg.eigvalsh(a - 0.1 * np.eye(ggn.size))
                             [::-1][:2], rtol=1e-3)


def test_generic_entries_on_a_plain_matvec():
  rng = np.random.default_rng(3)
  q, _ = np.linalg.qr(rng.standard_normal((40, 40)))
  a = (q * (0.8 ** np.arange(40))) @ q.T
  matvec = lambda v: jnp.asarray(a, jnp.float32) @ v  # noqa: E731
  key = jax.random.key(1)
  assert est.trace(matvec, 40, method="exact").value == pytest.approx(np.trace(a), rel=1e-5)
  h = est.trace(matvec, 40, key=key, num_probes=200)
  assert abs(h.value - np.trace(a)) < 4 * h.stderr
  x = est.trace(matvec, 40, key=key, num_probes=40, method="xtrace")
  assert abs(x.value - np.trace(a)) < max(4 * x.stderr, 1e-4)
  d = est.diagonal(matvec, 40, method="exact")
  np.testing.assert_allclose(d.value, np.diag(a), atol=1e-6)
  dh = est.diagonal(matvec, 40, key=key, num_probes=64)
  z = (dh.value - np.diag(a)) / dh.stderr
  assert np.mean(z ** 2) < 3
  top = est.top_eigenvalues(matvec, k=3, key=key, dim=40)
  np.testing.assert_allclose(top.eigenvalues, 0.8 ** np.arange(3), rtol=1e-4)
  assert top.eigenvectors[0].shape == (40,)
