"""Shared pieces of the estimators: the result type, batch iteration, masks and chunking.

Estimators take plain JAX functions and know nothing of snnjax models or training:

* ``loss_fn(params, batch) -> scalar``: the mean loss over the batch's examples;
* ``logits_fn(params, x) -> (n, num_classes)``;
* a batch is a dict with ``"x"`` (n, ...) and ``"y"`` (n,) integer labels;
* ``data`` is one batch or an iterable of batches;
* ``mask`` is a pytree with the params' structure (bool or 0/1 leaves), or None for dense.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import MaskMismatchError

PyTree = Any
Batch = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Estimate:
  """The result of a mean or stochastic estimator (traces, norms): a value and its error.

  Eigenvalues are :class:`EigenResult`, spectral densities ``lanczos.SpectralDensity``.

  Attributes:
    value: the estimate (a float), an average over examples unless the estimator says otherwise.
    stderr: standard error of ``value`` (None where the computation is exact).
    num_examples: how many examples the value averages over.
    num_probes: random probes (Hutchinson vectors, sampled labels, projections) per example or per
      batch, as the estimator documents; 0 where exact.
    extra: estimator-specific details (e.g. per-probe samples, per-example values, the method).
    blocks: with ``blocks=``, {block name: Estimate} of the same quantity restricted to each
      block of params (``snnjax.estimators.blocks``), computed from the same probes or
      per-example gradients; the block values sum to ``value`` (float64 rounding). Else None.
  """

  value: float
  stderr: float | None
  num_examples: int
  num_probes: int = 0
  extra: dict = dataclasses.field(default_factory=dict)
  blocks: dict | None = None

  def as_dict(self) -> dict:
    """JSON-friendly view (extra entries that are arrays are dropped)."""
    out = {"value": float(self.value),
           "stderr": None if self.stderr is None else float(self.stderr),
           "num_examples": int(self.num_examples), "num_probes": int(self.num_probes)}
    for k, v in self.extra.items():
      if isinstance(v, (int, float, str, bool)) or v is None:
        out[k] = v
    if self.blocks is not None:
      out["blocks"] = {name: b.as_dict() for name, b in self.blocks.items()}
    return out


@dataclasses.dataclass(frozen=True)
class EigenResult:
  """Eigenvalues of the Hessian (of the mean loss over ``num_examples`` examples) and vectors.

  Attributes:
    eigenvalues: (k,) float64, descending (power iteration: k = 1, the dominant one).
    eigenvectors: k unit-norm param pytrees, zero on inactive coordinates.
    residuals: (k,) float64 TRUE residual norms ||H u - lambda u||, measured with one extra
      Hessian-vector product per returned vector (an eigenvalue of H lies within that distance
      of each value; not a standard error).
    ritz_residuals: Lanczos only: (k,) the Ritz estimates |beta_m s_mi| of the same norms that
      Lanczos gets for free. In float32 they can read 0 or 1e-28 where the true residual is
      1e-6: kept for diagnosis, do not quote them as errors. None for power iteration.
    num_examples: examples the loss averages over.
    num_iters: iterations run (Lanczos steps or power iterations).
    num_matvecs: Hessian-vector products computed.
    dim: active coordinates (the operator's size).
    method: ``"lanczos"`` or ``"power_iteration"``.
    converged: power iteration: whether the tolerance was met; None for Lanczos.
  """

  eigenvalues: np.ndarray
  eigenvectors: list
  residuals: np.ndarray
  num_examples: int
  num_iters: int
  num_matvecs: int
  dim: int
  method: str
  converged: bool | None = None
  ritz_residuals: np.ndarray | None = None

  @property
  def value(self) -> float:
    """The largest eigenvalue found (the first of ``eigenvalues``)."""
    return float(self.eigenvalues[0])

  @property
  def residual(self) -> float:
    """The true residual norm ||H u - lambda u|| of ``value``."""
    return float(self.residuals[0])

  def as_dict(self) -> dict:
    """JSON-friendly view (no eigenvectors)."""
    return {"value": self.value, "eigenvalues": [float(e) for e in self.eigenvalues],
            "residuals": [float(r) for r in self.residuals], "num_examples": int(self.num_examples),
            "num_iters": int(self.num_iters), "num_matvecs": int(self.num_matvecs),
            "dim": int(self.dim), "method": self.method, "converged": self.converged,
            "ritz_residuals": (None if self.ritz_residuals is None
                               else [float(r) for r in self.ritz_residuals])}


def as_batches(data: Batch | Iterable[Batch]) -> Iterator[Batch]:
  """Yields the batches of ``data`` (one batch dict, or an iterable of them)."""
  if isinstance(data, Mapping):
    yield data
  else:
    yield from data


def check_mask_matches_params(params: PyTree, mask: PyTree | None, *,
                              what: str = "mask") -> PyTree | None:
  """Checks that ``mask`` has the tree structure and leaf shapes of ``params``; returns it cast.

  Returns None for None, else ``mask`` with each leaf cast to its param's dtype, ready to
  multiply gradients. Raises :class:`MaskMismatchError` on a structure or shape mismatch;
  ``what`` names the tree in the message (the check also serves other param-shaped trees, e.g.
  a direction). ``snnjax.sparsity.check_mask`` makes the same check on training masks but
  returns nothing and takes no None.
  """
  if mask is None:
    return None
  p_def = jax.tree.structure(params)
  m_def = jax.tree.structure(mask)
  if p_def != m_def:
    raise MaskMismatchError(
        f"{what} tree structure does not match the params: {m_def} vs {p_def}")
  for path_p, (p, m) in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                            zip(jax.tree.leaves(params), jax.tree.leaves(mask))):
    if np.shape(p) != np.shape(m):
      raise MaskMismatchError(
          f"{what} leaf {jax.tree_util.keystr(path_p[0])} has shape {np.shape(m)}, "
          f"param has {np.shape(p)}")
  return jax.tree.map(lambda m, p: jnp.asarray(m).astype(jnp.result_type(p)), mask, params)


def apply_mask(tree: PyTree, mask: PyTree | None) -> PyTree:
  """Zeroes the inactive coordinates of ``tree`` (identity when ``mask`` is None)."""
  if mask is None:
    return tree
  return jax.tree.map(lambda t, m: t * m, tree, mask)


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
  """Sum over all leaves of the elementwise product: <a, b>."""
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def active_count(params: PyTree, mask: PyTree | None) -> int:
  """Number of active parameters (all of them when ``mask`` is None)."""
  if mask is None:
    return int(sum(np.size(p) for p in jax.tree.leaves(params)))
  return int(sum(np.sum(np.asarray(m) != 0) for m in jax.tree.leaves(mask)))


def mean_and_stderr(values: Any) -> tuple[float, float | None]:
  """Mean of per-example ``values`` (n,) and its standard error std(ddof=1) / sqrt(n).

  Computed on the host in float64. The standard error is None for fewer than two values.
  """
  v = np.asarray(values, dtype=np.float64).reshape(-1)
  if v.size == 0:
    raise ValueError("no values to average")
  if v.size < 2:
    return float(v.mean()), None
  return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))


def as_pytree_fn(fn: Callable) -> jax.tree_util.Partial:
  """``fn`` as a pytree that jitted kernels take as an ordinary (not static) argument.

  A ``jax.tree_util.Partial`` keeps its bound arguments (e.g. BatchNorm statistics) as traced
  leaves, so functions that differ only in them (solutions of one architecture) share every
  compilation; its function part is the cache key. Any other callable becomes a leafless Partial,
  cached by identity as a static argument would be: pass the same function object across calls.
  """
  return fn if isinstance(fn, jax.tree_util.Partial) else jax.tree_util.Partial(fn)
