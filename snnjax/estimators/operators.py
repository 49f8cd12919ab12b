"""Masked curvature operators anyone can compose, and trace / diagonal / eigenvalues of any
symmetric operator.

Operators (:class:`LinearOperator`), each over the mean over all examples of ``data``:

* :func:`hessian_operator`: H of the mean loss (the operator of ``snnjax.estimators.hessian``,
  whose batches, weights and masked product kernel it reuses);
* :func:`ggn_operator`: the GGN mean_i J_i^T H_i J_i / P, H_i the likelihood's NLL Hessian in
  the outputs (``snnjax.estimators.likelihoods``; P positions);
* :func:`fisher_operator`: mean_i J_i^T M_i J_i / P with M_i = the exact output Fisher
  (``labels="exact"``: the GGN for these likelihoods), s s^T of the data label's score
  (``"data"``: the empirical Fisher) or the mean of s s^T over ``num_samples`` labels drawn
  with ``fold_in(key, i)`` (``"sampled"``, fixed once drawn).

``op.matvec(v)`` takes a param pytree or a flat vector over ALL coordinates (``ravel_pytree``
order, ``op.size``) and returns the same kind; with a mask the operator is A[active, active]
embedded (v and the result zeroed off the mask). It is traceable (jnp only), so it goes
straight into ``jax.scipy.sparse.linalg.cg(op.matvec, b)`` (a damped system:
``cg(lambda v: op.matvec(v) + lam * v, b)``). ``op.matmat(V)`` maps rows (k, size).
``op.dim`` counts the active coordinates; ``op.to_active`` / ``op.to_tree`` convert.

Generic entries for any symmetric operator, given as a :class:`LinearOperator` (vectors over its
active coordinates, results as param pytrees where they are vectors) or as a function
``matvec(v (dim,)) -> (dim,)`` with its ``dim``:

* :func:`trace`: ``"hutchinson"`` (stderr over probes), ``"xtrace"`` (stderr covers the whole
  estimate, ``snnjax.estimators.sketch``), ``"exact"`` (dim products);
* :func:`diagonal`: ``"hutchinson"``, ``"xdiag"``, ``"exact"``;
* ``lanczos.top_eigenvalues(op_or_matvec, k=..., key=..., dim=...)``: Lanczos with full
  reorthogonalization (``snnjax.estimators.lanczos``).

Probes are Rademacher vectors ``rademacher(fold_in(key, i), (dim,))``, drawn on the host side.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from snnjax.errors import UserError
from snnjax.estimators import _examples, fisher, sketch
from snnjax.estimators import likelihoods as _likelihoods
from snnjax.estimators._base import (Batch, Estimate, PyTree, active_count, as_pytree_fn,
                                     check_mask_matches_params, embed_active,
                                     mean_and_stderr)
from snnjax.estimators.hessian import EXACT_MAX_DIM, HessianOperator, _hvp_full

METHODS = ("hutchinson", "xtrace", "exact")
DIAG_METHODS = ("hutchinson", "xdiag", "exact")


class LinearOperator:
  """A symmetric, masked operator over the params (module doc).

  Attributes:
    params: the point; size: all coordinates; dim: active coordinates; idx: (dim,) active
      indices into the raveled params or None; num_examples: examples averaged over.
  """

  def __init__(self, params: PyTree, mask: PyTree | None, flat_matvec: Callable,
               num_examples: int, name: str):
    self.params = params
    flat, self._unravel = ravel_pytree(params)
    self.size = int(flat.size)
    self.dtype = flat.dtype
    self.mask = check_mask_matches_params(params, mask)
    if self.mask is None:
      self.mvec, self.idx = None, None
    else:
      m = np.asarray(ravel_pytree(self.mask)[0]) != 0
      self.mvec = jnp.asarray(m, self.dtype)
      self.idx = None if m.all() else np.flatnonzero(m)
    self.dim = active_count(params, mask)
    if self.dim == 0:
      raise UserError("the mask has no active coordinates")
    self._flat_matvec = flat_matvec  # (size,) -> (size,), masked in and out, traceable
    self.num_examples = num_examples
    self.name = name

  def matvec(self, v: Any) -> Any:
    """A v for a param pytree or a flat (size,) vector; returns the same kind (traceable)."""
    if isinstance(v, (jax.Array, np.ndarray)) and np.ndim(v) == 1 and v.shape[0] == self.size:
      return self._flat_matvec(jnp.asarray(v, self.dtype))
    check_mask_matches_params(self.params, v, what="vector")
    return self._unravel(self._flat_matvec(ravel_pytree(v)[0].astype(self.dtype)))

  __call__ = matvec

  def matmat(self, vs: Any) -> jax.Array:
    """A applied to each row of vs (k, size): (k, size)."""
    vs = jnp.asarray(vs, self.dtype)
    return jnp.stack([self._flat_matvec(vs[i]) for i in range(vs.shape[0])])

  # Active coordinates (host numpy), for the generic entries.
  def to_active(self, tree_or_flat: Any) -> np.ndarray:
    """A param pytree or a flat (size,) vector -> its active coordinates (dim,)."""
    flat = (np.asarray(tree_or_flat) if np.ndim(tree_or_flat) == 1 and not isinstance(
        tree_or_flat, dict) else np.asarray(ravel_pytree(tree_or_flat)[0]))
    return flat if self.idx is None else flat[self.idx]

  def to_full(self, z: Any) -> np.ndarray:
    """Active coordinates (..., dim) -> flat vectors (..., size), zero off the mask."""
    return embed_active(z, self.idx, self.size, self.dtype)

  def to_tree(self, z: Any) -> PyTree:
    """Active coordinates (dim,) -> a param pytree (zero off the mask)."""
    return self._unravel(jnp.asarray(self.to_full(z)))

  def active_matmat(self, zs: Any) -> np.ndarray:
    """A on rows (k, dim) of active coordinates -> (k, dim) float64 numpy."""
    full = self.to_full(np.atleast_2d(zs))
    out = np.stack([np.asarray(self._jit_matvec(full[i]), np.float64)
                    for i in range(full.shape[0])])
    return out if self.idx is None else out[:, self.idx]

  @functools.cached_property
  def _jit_matvec(self):
    return jax.jit(self._flat_matvec)


def hessian_operator(loss_fn: Callable, params: PyTree, data: Batch | Iterable[Batch], *,
                     mask: PyTree | None = None, devices: Any = None) -> LinearOperator:
  """H[active, active] of the mean loss over all examples of ``data`` (``hessian``): a
  :class:`LinearOperator` whose product is sum_b (n_b / N) H_b v, forward-over-reverse."""
  op = HessianOperator(loss_fn, params, data, mask, devices=devices)

  def flat_matvec(z):
    out = 0.0
    for weight, batch in zip(op.weights, op.batches):
      out = out + weight * _hvp_full(op.loss_fn, op.params, batch, op.mvec, z)
    return out

  return LinearOperator(params, mask, flat_matvec, op.num_examples, "hessian")


@functools.partial(jax.jit, static_argnames=("lik", "mode", "num_samples"))
def _curvature_mv(logits_fn, params, arrays, mvec, key, z, *, lik, mode, num_samples):
  """sum over the batch's examples of J_i^T M_i J_i z (masked in and out), full space."""
  flat, unravel = ravel_pytree(params)
  zm = z if mvec is None else z * mvec
  v = unravel(zm.astype(flat.dtype))
  f = lambda p: logits_fn(p, arrays["x"])  # noqa: E731 - eval mode: examples independent
  out, jv = jax.jvp(f, (params,), (v,))

  def apply_m(o, t, y, i):
    if mode == "exact":
      return (lik.hessian(o) @ t.reshape(-1).astype(jnp.float32)).reshape(o.shape)
    k = jax.random.fold_in(key, i) if num_samples else i
    labels = fisher._example_labels(lik, o, y, k, num_samples)
    s = fisher._label_scores(lik, o, labels).reshape(-1, max(o.size, 1))  # (k, D)
    return (s.T @ (s @ t.reshape(-1).astype(jnp.float32)) / s.shape[0]).reshape(o.shape)

  mjv = jax.vmap(apply_m)(out, jv, arrays["y"], arrays["index"])
  _, vjp_fn = jax.vjp(f, params)
  res = ravel_pytree(vjp_fn(mjv.astype(out.dtype))[0])[0]
  return res if mvec is None else res * mvec


def _output_operator(logits_fn, params, data, *, mask, likelihood, labels, key, num_samples,
                     x, y, what):
  lik = _likelihoods.resolve(likelihood)
  data = _examples.as_list(data)
  batches, n_total, shape = [], 0, None
  for eb, shape in _examples.example_batches(data, logits_fn=logits_fn, params=params,
                                              likelihood=lik, x=x, y=y,
                                              labels=labels == "data", what=what):
    batches.append(jax.device_put(eb.arrays))
    n_total = eb.offset + eb.n
  if labels == "sampled":
    key = fisher._check_key(key, f"{what} with labels='sampled'")
    num_samples = fisher._check_positive(num_samples, "num_samples")
  else:
    key, num_samples = jnp.zeros((), jnp.uint32), 0
  scale = 1.0 / (n_total * lik.positions(shape))
  fn = as_pytree_fn(logits_fn)
  mode = "exact" if labels == "exact" else "labels"
  holder: dict = {}

  def flat_matvec(z):
    mvec = holder["op"].mvec
    out = 0.0
    for arrays in batches:
      out = out + _curvature_mv(fn, params, arrays, mvec, key, z, lik=lik, mode=mode,
                                num_samples=num_samples)
    return out * scale

  op = LinearOperator(params, mask, flat_matvec, n_total, what)
  holder["op"] = op
  return op


def ggn_operator(logits_fn: Callable, params: PyTree, data: Batch | Iterable[Batch], *,
                 mask: PyTree | None = None, likelihood: Any = "categorical", x: Any = None,
                 ) -> LinearOperator:
  """The GGN mean_i J_i^T H_i J_i / P over all examples of ``data`` (module doc); ``logits_fn``,
  ``likelihood``, ``x`` as in ``fisher.ggn_trace``. Its trace is ``ggn_trace``'s value."""
  return _output_operator(logits_fn, params, data, mask=mask, likelihood=likelihood,
                          labels="exact", key=None, num_samples=1, x=x, y=None,
                          what="ggn_operator")


def fisher_operator(logits_fn: Callable, params: PyTree, data: Batch | Iterable[Batch], *,
                    labels: str = "exact", key: jax.Array | None = None, num_samples: int = 1,
                    mask: PyTree | None = None, likelihood: Any = "categorical", x: Any = None,
                    y: Any = None) -> LinearOperator:
  """The Fisher mean_i J_i^T M_i J_i / P over all examples of ``data`` (module doc): ``labels``
  ``"exact"``, ``"data"`` (empirical Fisher) or ``"sampled"`` (labels drawn once per example
  with ``fold_in(key, i)``, ``num_samples`` each). Its trace is ``fisher_trace``'s value with
  the same labels (sampled: the same draws as ``fisher_trace(num_samples=...)``)."""
  labels = fisher._check_labels(labels, fisher.LABELS, "fisher_operator")
  return _output_operator(logits_fn, params, data, mask=mask, likelihood=likelihood,
                          labels=labels, key=key, num_samples=num_samples, x=x, y=y,
                          what="fisher_operator")


# ----------------------------------------------------------------------------------------------
# Generic entries.


def host_matmat(op_or_matvec: Any, dim: int | None) -> tuple[Callable, int, Any]:
  """(matmat on host rows (k, dim) -> (k, dim) float64, dim, the operator or None)."""
  if isinstance(op_or_matvec, LinearOperator):
    return op_or_matvec.active_matmat, op_or_matvec.dim, op_or_matvec
  if isinstance(op_or_matvec, HessianOperator):
    return (lambda zs: np.asarray(op_or_matvec.matmat(zs), np.float64),
            op_or_matvec.dim, op_or_matvec)
  if not callable(op_or_matvec):
    raise UserError(f"expected a LinearOperator or a function matvec(v) -> A v, got "
                    f"{op_or_matvec!r}")
  if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
    raise UserError(f"a plain matvec needs its dimension: dim=<positive int>, got {dim!r}")

  def matmat(zs):
    zs = np.atleast_2d(zs)
    out = np.stack([np.asarray(op_or_matvec(jnp.asarray(z)), np.float64).reshape(-1)
                    for z in zs])
    if out.shape[1] != dim:
      raise UserError(f"matvec returned {out.shape[1]} entries for a vector of dim={dim}")
    return out
  return matmat, int(dim), None


def _probes(key: jax.Array, start: int, count: int, dim: int) -> np.ndarray:
  return np.stack([np.asarray(jax.random.rademacher(jax.random.fold_in(key, i), (dim,),
                                                    jnp.float32), np.float64)
                   for i in range(start, start + count)])


def _check_probes(key, num_probes, low, method):
  if key is None:
    raise UserError(f"method={method!r} needs a PRNG key (key=jax.random.key(0))")
  if isinstance(num_probes, bool) or not isinstance(num_probes, (int, np.integer)) or (
      num_probes < low):
    raise UserError(f"num_probes must be an int >= {low} for method={method!r}, "
                    f"got {num_probes!r}")
  return int(num_probes)


def _dense(matmat, dim, max_dim):
  limit = EXACT_MAX_DIM if max_dim is None else int(max_dim)
  if dim > limit:
    raise UserError(f"exact needs {dim} products and a {dim}x{dim} matrix, above max_dim="
                    f"{limit}; pass max_dim={dim} to compute it anyway")
  a = np.concatenate([matmat(np.eye(dim)[s:s + 256]) for s in range(0, dim, 256)])
  return 0.5 * (a + a.T)


def trace(matvec: Any, dim: int | None = None, *, key: jax.Array | None = None,
          num_probes: int | None = None, method: str = "hutchinson",
          max_dim: int | None = None) -> Estimate:
  """Tr(A) of a symmetric operator: a :class:`LinearOperator` (over its active coordinates) or
  ``matvec(v (dim,)) -> (dim,)`` with ``dim``.

  ``"hutchinson"``: mean of z^T A z over ``num_probes`` (>= 2) Rademacher probes, stderr their
  std / sqrt(probes); ``"xtrace"``: ``num_probes`` products (>= 4), stderr over its
  leave-one-out estimates (covers the whole estimate); ``"exact"``: dim products (guarded by
  ``max_dim``), stderr None. ``extra``: ``method``, ``dim``, ``samples``.
  """
  if method not in METHODS:
    raise UserError(f"method must be one of {METHODS}, got {method!r}")
  matmat, dim, op = host_matmat(matvec, dim)
  n_ex = op.num_examples if op is not None else 0
  if method == "exact":
    diag = np.diag(_dense(matmat, dim, max_dim))
    return Estimate(float(diag.sum()), None, n_ex, 0, {"method": method, "dim": dim})
  if method == "hutchinson":
    m = _check_probes(key, num_probes, 2, method)
    z = _probes(key, 0, m, dim)
    samples = np.sum(z * matmat(z), axis=1)
    value, stderr = mean_and_stderr(samples)
  else:
    m = _check_probes(key, num_probes, 4, method)
    omega = _probes(key, 0, min(m // 2, dim), dim)
    value, stderr, samples, _ = sketch.xtrace(matmat, omega)
  return Estimate(value, stderr, n_ex, m, {"method": method, "dim": dim, "samples": samples})


def diagonal(matvec: Any, dim: int | None = None, *, key: jax.Array | None = None,
             num_probes: int | None = None, method: str = "hutchinson",
             max_dim: int | None = None):
  """diag(A) of a symmetric operator (as :func:`trace`), a ``DiagonalEstimate``: param
  pytrees for a :class:`LinearOperator` (zero off the mask), flat (dim,) arrays for a plain
  matvec. stderr per coordinate: Hutchinson std(z ⊙ Az) / sqrt(probes), XDiag the std of its
  leave-one-out estimates / sqrt(s); None for ``"exact"``."""
  from snnjax.estimators.diagonals import DiagonalEstimate  # pylint: disable=import-outside-toplevel
  if method not in DIAG_METHODS:
    raise UserError(f"method must be one of {DIAG_METHODS}, got {method!r}")
  matmat, dim, op = host_matmat(matvec, dim)
  as_out = (lambda a: a) if not isinstance(op, LinearOperator) else (
      lambda a: jax.tree.map(lambda t: np.asarray(t, np.float64), op.to_tree(a)))
  n_ex = op.num_examples if op is not None else 0
  extra = {"method": method, "dim": dim}
  if method == "exact":
    return DiagonalEstimate(as_out(np.diag(_dense(matmat, dim, max_dim))), None, n_ex, 0, extra)
  if method == "hutchinson":
    m = _check_probes(key, num_probes, 2, method)
    z = _probes(key, 0, m, dim)
    samples = z * matmat(z)
    mean = samples.mean(axis=0)
    stderr = samples.std(axis=0, ddof=1) / np.sqrt(m)
    return DiagonalEstimate(as_out(mean), as_out(stderr), n_ex, m, extra)
  m = _check_probes(key, num_probes, 4, method)
  value, stderr, used = sketch.xdiag(matmat, _probes(key, 0, min(m // 2, dim), dim))
  return DiagonalEstimate(as_out(value), as_out(stderr), n_ex, used, extra)
