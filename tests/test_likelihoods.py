"""Each likelihood's Fisher / GGN / per-example gradients against dense jax.jacobian references.

A tiny pure-JAX MLP whose outputs take the shapes each likelihood is for: categorical (n, C) and
token outputs (n, T, V), Gaussian (n,) and (n, k), Bernoulli (n, k), and a user-supplied Poisson
likelihood (log-rate outputs). The reference per example i: J_i = jax.jacobian of the outputs in
the raveled params, H_i = jax.hessian of a reference NLL (written here, not taken from the
likelihood) in the outputs; exact Fisher = GGN = mean_i J_i^T H_i J_i / P (P positions); the
empirical Fisher from g_i = jax.grad of the reference NLL at the data labels.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from snnjax.errors import UserError
from snnjax.estimators import diagonals, fisher, jacobian
from snnjax.estimators import likelihoods as lk

N, IN = 6, 3


def _params(out_size, seed=0):
  rng = np.random.default_rng(seed)
  return {"l1": {"kernel": jnp.asarray(rng.standard_normal((IN, 5)) / np.sqrt(IN), jnp.float32),
                 "bias": jnp.asarray(0.3 * rng.standard_normal(5), jnp.float32)},
          "l2": {"kernel": jnp.asarray(rng.standard_normal((5, out_size)) / np.sqrt(5),
                                       jnp.float32),
                 "bias": jnp.asarray(0.3 * rng.standard_normal(out_size), jnp.float32)}}


@functools.cache
def _model(out_shape):
  def logits_fn(params, x):
    h = jnp.tanh(x @ params["l1"]["kernel"] + params["l1"]["bias"])
    out = h @ params["l2"]["kernel"] + params["l2"]["bias"]
    return out.reshape((x.shape[0],) + out_shape)
  return logits_fn


def _poisson_nll(f, y):
  return jnp.sum(jnp.exp(f) - y * f)


POISSON = lk.custom(_poisson_nll, sample=lambda k, f: jax.random.poisson(k, jnp.exp(f)).astype(
    jnp.float32), hessian=lambda f: jnp.diag(jnp.exp(f).reshape(-1)), name="poisson")


def _ref_nll(name):
  if name in ("categorical", "tokens"):
    return lambda f, y: -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(f, axis=-1),
                                                     y[..., None], axis=-1))
  if name.startswith("gaussian"):
    var = 2.0 if name == "gaussian_k" else 1.0
    return lambda f, y: jnp.sum((y - f) ** 2) / (2 * var)
  if name == "bernoulli":
    return lambda f, y: jnp.sum(jax.nn.softplus(f) - y * f)
  return _poisson_nll


# name: (output shape per example, likelihood, positions)
CASES = {
    "categorical": ((4,), "categorical", 1),
    "tokens": ((3, 4), "categorical", 3),
    "gaussian_scalar": ((), "gaussian", 1),
    "gaussian_k": ((2,), lk.Gaussian(2.0), 1),
    "bernoulli": ((3,), "bernoulli", 1),
    "poisson": ((2,), POISSON, 1),
}


@functools.cache
def _case(name):
  shape, lik, positions = CASES[name]
  size = int(np.prod(shape)) if shape else 1
  params = _params(size, seed=len(name))
  rng = np.random.default_rng(7)
  x = rng.standard_normal((N, IN)).astype(np.float32)
  if name in ("categorical", "tokens"):
    y = rng.integers(0, shape[-1], size=(N,) + shape[:-1]).astype(np.int32)
  elif name == "bernoulli":
    y = (rng.random((N,) + shape) < 0.4).astype(np.float32)
  elif name == "poisson":
    y = rng.poisson(1.5, (N,) + shape).astype(np.float32)
  else:
    y = rng.standard_normal((N,) + shape).astype(np.float32)
  logits_fn = _model(shape)
  flat, unravel = ravel_pytree(params)
  nll = _ref_nll(name)

  @jax.jit
  def per_example(xi, yi):
    f_of = lambda w: logits_fn(unravel(w), xi[None])[0]  # noqa: E731
    f = f_of(flat)
    j = jax.jacobian(f_of)(flat).reshape(size, -1)
    h = jax.hessian(nll)(f, yi).reshape(size, size)
    g = jax.grad(lambda w: nll(f_of(w), yi))(flat)
    return j, h, g

  j, h, g = (np.asarray(a, np.float64) for a in jax.vmap(per_example)(x, y))
  ggn = np.einsum("ndp,nde,neq->pq", j, h, j) / positions / N
  emp = np.einsum("np,nq->pq", g, g) / positions / N
  return logits_fn, params, {"x": x, "y": y}, lik, ggn, emp, g, unravel


def _flat(tree):
  return np.asarray(ravel_pytree(tree)[0], np.float64)


@pytest.mark.parametrize("name", list(CASES))
def test_exact_fisher_ggn_and_data_labels_match_dense_references(name):
  logits_fn, params, batch, lik, ggn, emp, grads, _ = _case(name)
  est = fisher.fisher_trace(logits_fn, params, batch, labels="exact", likelihood=lik)
  np.testing.assert_allclose(est.value, np.trace(ggn), rtol=2e-5)
  assert est.extra["positions"] == CASES[name][2]
  g = fisher.ggn_trace(logits_fn, params, batch, likelihood=lik)
  np.testing.assert_allclose(g.value, np.trace(ggn), rtol=2e-5)
  d = diagonals.fisher_diagonal(logits_fn, params, batch, labels="exact", likelihood=lik)
  np.testing.assert_allclose(_flat(d.value), np.diag(ggn), rtol=2e-5, atol=1e-7)
  # data labels: the empirical Fisher and the per-example gradients of the NLL
  e = fisher.fisher_trace(logits_fn, params, batch, labels="data", likelihood=lik)
  np.testing.assert_allclose(e.value, np.trace(emp), rtol=2e-5)
  de = diagonals.fisher_diagonal(logits_fn, params, batch, labels="data", likelihood=lik)
  np.testing.assert_allclose(_flat(de.value), np.diag(emp), rtol=2e-5, atol=1e-7)
  pg = fisher.per_example_grads(logits_fn, params, batch, likelihood=lik)
  got = np.stack([_flat(jax.tree.map(lambda a, i=i: a[i], pg)) for i in range(N)])
  np.testing.assert_allclose(got, grads, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["tokens", "gaussian_k", "bernoulli", "poisson"])
def test_sampled_labels_agree_with_exact_within_four_standard_errors(name):
  logits_fn, params, batch, lik, ggn, _, _, _ = _case(name)
  est = fisher.fisher_trace(logits_fn, params, batch, labels="sampled", likelihood=lik,
                            key=jax.random.key(3), num_samples=32)
  se = est.extra["sampling_stderr"]  # label sampling only: the error against these examples
  assert abs(est.value - np.trace(ggn)) < 4 * se, (est.value, np.trace(ggn), se)


@pytest.mark.parametrize("name", list(CASES))
def test_sampled_fisher_diagonal_against_the_exact_one(name):
  """Sign probes (one position): 4 stratified samples span the outputs, the exact diagonal.
  Token outputs (independent signs per position) and the custom likelihood (sampled labels):
  every coordinate within 4 standard errors."""
  logits_fn, params, batch, lik, ggn, _, _, _ = _case(name)
  exact = np.diag(ggn)
  if name in ("tokens", "poisson"):
    d = diagonals.fisher_diagonal(logits_fn, params, batch, labels="sampled", likelihood=lik,
                                  key=jax.random.key(5), num_samples=64)
    value, se = _flat(d.value), _flat(d.stderr)
    assert np.all(np.abs(value - exact) <= 4 * se + 1e-7), np.abs(value - exact) / se
  else:
    d = diagonals.fisher_diagonal(logits_fn, params, batch, labels="sampled", likelihood=lik,
                                  key=jax.random.key(5), num_samples=4)
    np.testing.assert_allclose(_flat(d.value), exact, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", ["tokens", "gaussian_scalar", "gaussian_k"])
def test_jacobian_norm_on_any_output_shape(name):
  logits_fn, params, batch, _, _, _, _, _ = _case(name)
  expected = np.mean([np.sum(np.square(np.asarray(
      jax.jacobian(lambda xi: logits_fn(params, xi[None])[0])(xi), np.float64)))
      for xi in batch["x"]])
  est = jacobian.jacobian_norm(logits_fn, params, batch)
  np.testing.assert_allclose(est.value, expected, rtol=2e-5)


def test_categorical_matches_old_default_and_names_are_checked():
  logits_fn, params, batch, _, ggn, _, _, _ = _case("categorical")
  a = fisher.fisher_trace(logits_fn, params, batch)
  b = fisher.fisher_trace(logits_fn, params, batch, likelihood=lk.Categorical())
  assert a.value == b.value and a.extra["likelihood"] == "categorical"
  with pytest.raises(UserError, match="likelihood must be one of"):
    fisher.fisher_trace(logits_fn, params, batch, likelihood="poisson")
  with pytest.raises(UserError, match="no hessian"):
    fisher.fisher_trace(logits_fn, params, batch, likelihood=lk.custom(_poisson_nll))


def test_labels_that_do_not_fit_the_likelihood_are_refused():
  logits_fn, params, batch, _, _, _, _, _ = _case("tokens")
  with pytest.raises(UserError, match=r"integers of shape \(6, 3\)"):
    fisher.fisher_trace(logits_fn, params, {"x": batch["x"], "y": batch["y"][:, 0]},
                        labels="data")
  logits_fn, params, batch, _, _, _, _, _ = _case("bernoulli")
  with pytest.raises(UserError, match=r"lie in \[0, 1\]"):
    fisher.fisher_trace(logits_fn, params, {"x": batch["x"], "y": batch["y"] + 2},
                        labels="data", likelihood="bernoulli")
  logits_fn, params, batch, _, _, _, _, _ = _case("gaussian_scalar")
  with pytest.raises(UserError, match="classes on the last axis"):
    fisher.fisher_trace(logits_fn, params, batch)  # (n,) outputs are no categorical
