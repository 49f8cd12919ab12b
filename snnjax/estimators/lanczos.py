"""Hessian eigenvalues: Lanczos with full reorthogonalization, power iteration, and the spectral
density by stochastic Lanczos quadrature (SLQ; Ghorbani, Krishnan & Xiao 2019, as PyHessian's
``density``).

The operator is :class:`snnjax.estimators.hessian.HessianOperator`: the Hessian of the mean loss
over all examples of ``data``, restricted to the active coordinates of ``mask`` (H[active, active],
of size ``dim``). The Lanczos vectors live on the host as flat float64 arrays of length ``dim``
(memory ``num_iters * dim * 8`` bytes; products are taken with their float32 rounding, and the basis
is returned as float32); the tridiagonal matrix and the Ritz values are float64.
With one batch the gradient's linearization is computed once and reused for every product.
``devices`` shards each batch's examples over devices (``snnjax.estimators.hessian``, module doc).

Results: :func:`top_eigenvalues` and :func:`power_iteration` return ``EigenResult``
(eigenvalues, eigenvectors, residual norms), :func:`spectral_density` a :class:`SpectralDensity`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import jax
import numpy as np

from snnjax.errors import UserError
from snnjax.estimators._base import Batch, EigenResult
from snnjax.estimators.hessian import Devices, HessianOperator, LossFn

PyTree = Any
MatVec = Callable[[np.ndarray], np.ndarray]

_BREAKDOWN = 1e-5  # |beta| below this times the operator scale: invariant subspace reached
# (float32 Lanczos vectors and HVPs leave residuals of ~1e-6 relative in an invariant subspace).


def _check_int(name: str, value: Any, low: int) -> int:
  if not isinstance(value, (int, np.integer)) or value < low:
    raise UserError(f"{name} must be an int >= {low}, got {value!r}")
  return int(value)


def _host_matvec(op: HessianOperator) -> MatVec:
  return lambda v: np.asarray(op.matvec(v), np.float64)


def _seed(key: jax.Array) -> int:
  """A numpy seed from a JAX key (for restart vectors)."""
  return int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))


def lanczos(matvec: MatVec, v0: np.ndarray, num_iters: int, *,
            rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Lanczos tridiagonalization with full reorthogonalization (twice per step).

  Args:
    matvec: v (dim,) -> A v (dim,) for a symmetric A.
    v0: start vector (dim,), not necessarily normalized.
    num_iters: steps m (capped at dim).
    rng: on a breakdown (|beta| ~ 0: the Krylov space is invariant) restart with a random vector
      orthogonal to the basis when given (beta = 0 there, T block-diagonal), else stop early.

  Returns:
    (alpha (m',), beta (m',), V (m', dim) float32) with m' <= m steps: T has diagonal alpha and
    off-diagonal beta[:-1]; beta[-1] is the norm of the last residual (Ritz residual of pair i is
    |beta[-1] * s[-1, i]| for T's eigenvectors s). V's rows are orthonormal.
  """
  v0 = np.asarray(v0, np.float64)
  dim = v0.size
  m = min(int(num_iters), dim)
  basis = np.zeros((m, dim))  # float64: the reorthogonalization products need no per-step copies
  alpha = np.zeros(m)
  beta = np.zeros(m)
  v = v0 / np.linalg.norm(v0)
  scale = 0.0
  for j in range(m):
    basis[j] = v
    vj = basis[j]
    w = matvec(vj.astype(np.float32))
    alpha[j] = float(w @ vj)
    w = w - alpha[j] * vj
    if j > 0:
      w = w - beta[j - 1] * basis[j - 1]
    active = basis[:j + 1]
    for _ in range(2):
      w = w - (active @ w) @ active
    beta[j] = float(np.linalg.norm(w))
    scale = max(scale, abs(alpha[j]), beta[j])
    if j + 1 == m:
      break
    if beta[j] <= _BREAKDOWN * scale:
      if rng is None:
        return alpha[:j + 1], beta[:j + 1], basis[:j + 1].astype(np.float32)
      beta[j] = 0.0
      w = rng.standard_normal(dim)
      for _ in range(2):
        w = w - (active @ w) @ active
      v = w / np.linalg.norm(w)
    else:
      v = w / beta[j]
  return alpha, beta, basis.astype(np.float32)


def _tridiag(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
  return np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1)


def top_eigenvalues(loss_fn: LossFn | Any, params: PyTree = None,
                    data: Batch | Iterable[Batch] | None = None, *, k: int, key: jax.Array,
                    mask: PyTree | None = None, num_iters: int | None = None,
                    devices: Devices = None, dim: int | None = None) -> EigenResult:
  """The k largest (algebraic) eigenvalues of the Hessian by Lanczos with full reorthogonalization.

  Any symmetric operator: ``top_eigenvalues(op, k=..., key=...)`` with a
  ``snnjax.estimators.operators.LinearOperator`` (the GGN, the Fisher, ...; eigenvectors as
  param pytrees) or ``top_eigenvalues(matvec, k=..., key=..., dim=D)`` with a function
  ``matvec(v (D,)) -> (D,)`` (eigenvectors as flat arrays); ``num_examples`` is then the
  operator's (0 for a plain matvec).

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` (mean over the batch).
    params: the point where the Hessian is taken.
    data: one batch or an iterable of batches; the loss is the mean over all their examples.
    k: eigenvalues wanted (1 <= k <= dim).
    key: PRNG key of the Gaussian start vector (and of restarts after a breakdown).
    mask: optional mask pytree; eigenvalues are then those of H[active, active].
    num_iters: Lanczos steps (= Hessian-vector products), k <= num_iters; default
      ``min(dim, max(2 * k + 20, 30))``. ``num_iters = dim`` gives the whole spectrum.
    devices: None, ``"all"`` or a sequence of devices to shard each batch's examples over.

  Returns:
    ``EigenResult``: ``eigenvalues`` (k,) descending (``value`` the largest), ``eigenvectors``
    (k unit-norm param pytrees, zero on inactive coordinates), ``residuals`` (k,) the TRUE
    residual norms ||H u - lambda u|| (k extra Hessian-vector products, counted in
    ``num_matvecs``), ``ritz_residuals`` (k,) Lanczos' own estimates of them (diagnostic only),
    ``num_examples`` = N, ``num_iters``, ``num_matvecs``, ``dim``, ``method="lanczos"``.
  """
  from snnjax.estimators import operators  # pylint: disable=import-outside-toplevel
  if params is None and data is None:
    matmat, size, op = operators.host_matmat(loss_fn, dim)
    to_vec = (op.to_tree if op is not None else (lambda u: u.astype(np.float32)))
    n_ex = op.num_examples if op is not None else 0
    counter = {"n": 0}

    def counted(zs):
      counter["n"] += np.atleast_2d(zs).shape[0]
      return matmat(zs)
    result = _lanczos_top(counted, size, k, key, num_iters)
    return EigenResult(eigenvalues=result[0], eigenvectors=[to_vec(u) for u in result[1]],
                       residuals=result[2], num_examples=n_ex, num_iters=result[4],
                       num_matvecs=counter["n"], dim=size, method="lanczos",
                       ritz_residuals=result[3])
  op = HessianOperator(loss_fn, params, data, mask, devices=devices)
  matmat = lambda zs: np.asarray(op.matmat(np.asarray(zs, np.float32)), np.float64)  # noqa: E731
  eigenvalues, vectors, residuals, ritz, iters = _lanczos_top(matmat, op.dim, k, key, num_iters)
  eigenvectors = [op.to_tree(u) for u in vectors]
  return EigenResult(eigenvalues=eigenvalues, eigenvectors=eigenvectors, residuals=residuals,
                     num_examples=op.num_examples, num_iters=iters,
                     num_matvecs=op.num_matvecs, dim=op.dim, method="lanczos",
                     ritz_residuals=ritz)


def _lanczos_top(matmat, dim: int, k: Any, key: jax.Array, num_iters: Any):
  """(eigenvalues (k,), unit vectors (k, dim), true residuals (k,), Ritz residuals, steps)."""
  k = _check_int("k", k, 1)
  if k > dim:
    raise UserError(f"k={k} exceeds the number of active coordinates ({dim})")
  if num_iters is None:
    num_iters = min(dim, max(2 * k + 20, 30))
  num_iters = _check_int("num_iters", num_iters, k)
  key_v, key_r = jax.random.split(key)
  v0 = np.random.default_rng(_seed(key_v)).standard_normal(dim)  # host: no dim-shaped compile
  alpha, beta, basis = lanczos(lambda v: matmat(v[None])[0], v0, num_iters,
                               rng=np.random.default_rng(_seed(key_r)))
  evals, evecs = np.linalg.eigh(_tridiag(alpha, beta))
  order = np.argsort(evals)[::-1][:k]
  eigenvalues = evals[order]
  ritz = np.abs(beta[-1] * evecs[-1, order])
  vectors = evecs[:, order].T @ basis.astype(np.float64)  # (k, dim)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  # The true residuals: one more product per vector (the Ritz ones lose to float32 rounding).
  hu = np.asarray(matmat(vectors.astype(np.float32)), np.float64)
  residuals = np.linalg.norm(hu - eigenvalues[:, None] * vectors, axis=1)
  return eigenvalues, vectors, residuals, ritz, int(alpha.size)


def power_iteration(loss_fn: LossFn, params: PyTree, data: Batch | Iterable[Batch], *,
                    key: jax.Array, num_iters: int, mask: PyTree | None = None,
                    tol: float = 1e-5, devices: Devices = None) -> EigenResult:
  """The dominant eigenvalue of the Hessian (largest in magnitude) by power iteration.

  A check on :func:`top_eigenvalues` (which returns the largest algebraic ones): they agree when
  the largest eigenvalue dominates the most negative one in magnitude.

  Args:
    loss_fn, params, data, mask, devices: as in :func:`top_eigenvalues`.
    key: PRNG key of the Gaussian start vector.
    num_iters: the most Hessian-vector products.
    tol: stop when the Rayleigh quotient changes by less than ``tol * |lambda|``.

  Returns:
    ``EigenResult`` with one eigenvalue: ``value`` = the Rayleigh quotient u^T H u of the last
    unit vector u, ``eigenvectors`` = [u] (a param pytree), ``residual`` = ||H u - lambda u||,
    ``num_iters``, ``num_matvecs``, ``converged``, ``dim``, ``method="power_iteration"``.
  """
  num_iters = _check_int("num_iters", num_iters, 1)
  if not tol > 0:
    raise UserError(f"tol must be > 0, got {tol!r}")
  op = HessianOperator(loss_fn, params, data, mask, devices=devices)
  matvec = _host_matvec(op)
  v = np.random.default_rng(_seed(key)).standard_normal(op.dim)
  v /= np.linalg.norm(v)
  lam_prev = None
  converged = False
  for it in range(1, num_iters + 1):
    w = matvec(v.astype(np.float32))
    lam = float(v @ w)
    residual = float(np.linalg.norm(w - lam * v))
    if lam_prev is not None and abs(lam - lam_prev) <= tol * abs(lam):
      converged = True
      break
    norm = np.linalg.norm(w)
    if norm == 0.0:  # v lies in the null space: H u = 0 u exactly.
      converged = True
      break
    if it == num_iters:  # keep v: the value and residual returned are those of v
      break
    v = w / norm
    lam_prev = lam
  return EigenResult(eigenvalues=np.array([lam]), eigenvectors=[op.to_tree(v)],
                     residuals=np.array([residual]), num_examples=op.num_examples, num_iters=it,
                     num_matvecs=op.num_matvecs, dim=op.dim, method="power_iteration",
                     converged=converged)


@dataclasses.dataclass(frozen=True)
class SpectralDensity:
  """Stochastic Lanczos quadrature of the Hessian's eigenvalue density.

  For probe p (a unit Rademacher vector over the active coordinates) the m-step Lanczos
  tridiagonal T_p gives Gauss quadrature nodes (T_p's eigenvalues) and weights (squared first
  components of its eigenvectors, summing to 1). Probes whose Lanczos run stopped early (an
  invariant subspace: the quadrature is then exact) are padded with zero-weight copies of their
  first node.

  Attributes:
    nodes: (num_probes, m) Ritz values.
    weights: (num_probes, m) quadrature weights; each row sums to 1.
    grid: (G,) eigenvalue grid.
    density: (G,) mean over probes of sum_j w_j N(grid; node_j, sigma^2), a probability density
      (integrates to ~1 when the grid covers the nodes by a few sigma).
    sigma: the Gaussian kernel's standard deviation.
    dim: active coordinates (the operator's size).
    num_examples: examples the loss averages over.
  """

  nodes: np.ndarray
  weights: np.ndarray
  grid: np.ndarray
  density: np.ndarray
  sigma: float
  dim: int
  num_examples: int

  @property
  def trace_samples(self) -> np.ndarray:
    """(num_probes,) dim * sum_j w_j node_j = dim * v_p^T H v_p: Hutchinson samples of Tr(H)."""
    return self.dim * np.sum(self.weights * self.nodes, axis=1)

  @property
  def trace(self) -> float:
    """Tr(H) estimated from the quadrature (mean of :attr:`trace_samples`)."""
    return float(np.mean(self.trace_samples))

  @property
  def num_probes(self) -> int:
    return int(self.nodes.shape[0])

  def as_dict(self) -> dict:
    """JSON-friendly view: the grid and density as lists, the trace estimate, sizes."""
    return {"grid": self.grid.tolist(), "density": self.density.tolist(),
            "sigma": float(self.sigma), "trace": self.trace, "dim": int(self.dim),
            "num_examples": int(self.num_examples), "num_probes": self.num_probes,
            "num_iters": int(self.nodes.shape[1])}


def spectral_density(loss_fn: LossFn, params: PyTree, data: Batch | Iterable[Batch], *,
                     key: jax.Array, num_probes: int, num_iters: int, mask: PyTree | None = None,
                     grid: np.ndarray | None = None, sigma: float | None = None,
                     num_grid: int = 1000, devices: Devices = None) -> SpectralDensity:
  """Hessian eigenvalue density by stochastic Lanczos quadrature.

  Args:
    loss_fn, params, data, mask, devices: as in :func:`top_eigenvalues`.
    key: PRNG key; probe p starts from ``HessianOperator.probe(key, p)`` (Rademacher over the active
      coordinates), normalized.
    num_probes: independent Lanczos runs.
    num_iters: Lanczos steps per run (capped at dim); num_probes * num_iters Hessian-vector
      products in all.
    grid: eigenvalue grid; default ``num_grid`` points from min(nodes) - 5 sigma to
      max(nodes) + 5 sigma.
    sigma: Gaussian smoothing (eigenvalue units); default 1% of the nodes' range (1e-3 * max(1,
      |node|) when all nodes coincide).
    num_grid: points of the default grid.

  Returns:
    A :class:`SpectralDensity`.
  """
  num_probes = _check_int("num_probes", num_probes, 1)
  num_iters = _check_int("num_iters", num_iters, 1)
  num_grid = _check_int("num_grid", num_grid, 2)
  if sigma is not None and not sigma > 0:
    raise UserError(f"sigma must be None or > 0, got {sigma!r}")
  op = HessianOperator(loss_fn, params, data, mask, devices=devices)
  matvec = _host_matvec(op)
  m = min(num_iters, op.dim)
  nodes = np.zeros((num_probes, m))
  weights = np.zeros((num_probes, m))
  for p in range(num_probes):
    v0 = np.asarray(op.probe(key, p), np.float64)
    alpha, beta, _ = lanczos(matvec, v0, m)
    evals, evecs = np.linalg.eigh(_tridiag(alpha, beta))
    n = evals.size
    nodes[p, :n], weights[p, :n] = evals, evecs[0] ** 2
    nodes[p, n:] = evals[0]
  lo, hi = float(nodes.min()), float(nodes.max())
  if sigma is None:
    sigma = 0.01 * (hi - lo) if hi > lo else 1e-3 * max(1.0, abs(hi))
  sigma = float(sigma)
  if grid is None:
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, num_grid)
  grid = np.asarray(grid, np.float64)
  if grid.ndim != 1 or grid.size < 2:
    raise UserError(f"grid must be a 1-D array of >= 2 points, got shape {grid.shape}")
  gauss = np.exp(-0.5 * ((grid[None, None, :] - nodes[..., None]) / sigma) ** 2)
  gauss /= sigma * np.sqrt(2 * np.pi)
  density = np.mean(np.sum(weights[..., None] * gauss, axis=1), axis=0)
  return SpectralDensity(nodes=nodes, weights=weights, grid=grid, density=density, sigma=sigma,
                         dim=op.dim, num_examples=op.num_examples)
