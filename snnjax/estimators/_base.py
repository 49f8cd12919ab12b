"""Shared pieces of the estimators: the result type, batch iteration, masks and chunking.

Estimators take plain JAX functions and know nothing of snnjax models or training:

* ``loss_fn(params, batch) -> scalar``: the mean loss over the batch's examples;
* ``logits_fn(params, x) -> (n, num_classes)``;
* a batch is any pytree whose leaves share a leading example axis (a dict, a tuple ``(x, y)``);
  the per-example estimators find its inputs and labels with ``x=`` / ``y=`` selectors
  (:func:`select`), the Hessian side passes it to ``loss_fn`` untouched;
* ``data`` is one batch or an iterable (a list) of batches;
* ``mask`` is a pytree with the params' structure (bool or 0/1 leaves), or None for dense.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import MaskMismatchError, UserError

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

  @property
  def extra(self) -> dict:
    """DEPRECATED (the first release returned an ``Estimate`` with these in ``extra``): the
    fields as a dict. Read the attributes instead (``eigenvalues``, ``eigenvectors``, ...)."""
    warnings.warn("EigenResult.extra is deprecated: read its attributes (eigenvalues, "
                  "eigenvectors, residuals, num_iters, num_matvecs, dim, method, converged)",
                  DeprecationWarning, stacklevel=2)
    out = {"method": self.method, "eigenvalues": self.eigenvalues,
           "eigenvectors": self.eigenvectors, "residuals": self.residuals,
           "num_iters": self.num_iters, "num_matvecs": self.num_matvecs, "dim": self.dim}
    if self.method == "power_iteration":
      out.update(eigenvector=self.eigenvectors[0], converged=self.converged)
    return out

  @property
  def stderr(self) -> float:
    """DEPRECATED (first release): the residual norm of ``value``; read ``residual``."""
    warnings.warn("EigenResult.stderr is deprecated (it was the residual norm, not a standard "
                  "error): read .residual / .residuals", DeprecationWarning, stacklevel=2)
    return self.residual

  def as_dict(self) -> dict:
    """JSON-friendly view (no eigenvectors)."""
    return {"value": self.value, "eigenvalues": [float(e) for e in self.eigenvalues],
            "residuals": [float(r) for r in self.residuals], "num_examples": int(self.num_examples),
            "num_iters": int(self.num_iters), "num_matvecs": int(self.num_matvecs),
            "dim": int(self.dim), "method": self.method, "converged": self.converged,
            "ritz_residuals": (None if self.ritz_residuals is None
                               else [float(r) for r in self.ritz_residuals])}


def is_one_batch(data: Any) -> bool:
  """Whether ``data`` is one batch (a mapping, a tuple such as ``(x, y)``, an array) rather than
  an iterable of batches (a list, an iterator, a generator)."""
  return isinstance(data, (Mapping, tuple)) or hasattr(data, "shape")


def as_batches(data: Any) -> Iterator[Any]:
  """Yields the batches of ``data``: one batch (:func:`is_one_batch`) or an iterable of them.

  A batch is any pytree whose array leaves share a leading example axis: a dict
  (``{"x": ..., "y": ...}``, ``{"image": ..., "label": ...}``), a tuple ``(x, y)``, a dataclass
  registered as a pytree; a list is read as a list of batches.
  """
  if is_one_batch(data):
    yield data
  else:
    yield from data


def leading_size(tree: Any, what: str = "batch") -> int:
  """The common leading (example) size of the array leaves of ``tree``; UserError otherwise."""
  sizes = {int(np.shape(a)[0]) if np.ndim(a) else -1 for a in jax.tree.leaves(tree)}
  if not sizes:
    raise UserError(f"{what} holds no arrays")
  if len(sizes) != 1 or -1 in sizes:
    raise UserError(f"the arrays of a {what} need one common leading (example) axis, got "
                    f"leading sizes {sorted(s for s in sizes if s >= 0)}"
                    f"{' and scalars' if -1 in sizes else ''}")
  return sizes.pop()


Selector = Any  # None, a key / index into the batch, or a function batch -> pytree


def select(batch: Any, selector: Selector, role: str) -> Any:
  """The inputs (``role="x"``) or labels (``role="y"``) of ``batch``.

  ``selector``: a function ``batch -> pytree``, a key or index (``batch[selector]``), or None:
  ``batch["x"]`` / ``batch["y"]`` for a mapping, ``batch[0]`` / ``batch[1]`` for a pair
  ``(x, y)``, the batch itself for inputs given as one array.
  """
  if callable(selector):
    return selector(batch)
  if selector is None:
    if isinstance(batch, Mapping):
      if role in batch:
        return batch[role]
      raise UserError(f"batch has no entry {role!r} (keys: {sorted(map(str, batch))}): pass "
                      f"{role}=<key> or {role}=<function batch -> {role}>")
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
      return batch[0 if role == "x" else 1]
    if role == "x" and hasattr(batch, "shape"):
      return batch
    raise UserError(f"cannot find the {'inputs' if role == 'x' else 'labels'} in a batch of "
                    f"type {type(batch).__name__}: pass {role}=<key> or {role}=<function>")
  try:
    return batch[selector]
  except (KeyError, IndexError, TypeError):
    keys = f" (keys: {sorted(map(str, batch))})" if isinstance(batch, Mapping) else ""
    raise UserError(f"batch has no entry {selector!r} for {role}={selector!r}{keys}") from None


def eval_shape_or_error(fn: Callable, *args: Any, call: str) -> Any:
  """``jax.eval_shape(fn, *args)``; an error raised by the user's function becomes one
  UserError line naming the ``call`` that failed."""
  try:
    return jax.eval_shape(fn, *args)
  except UserError:
    raise
  except Exception as e:  # noqa: BLE001 - the user's function: say which call failed
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f"{call} failed: {type(e).__name__}: {msg}") from None


def embed_active(z: Any, idx: np.ndarray | None, size: int, dtype: Any) -> np.ndarray:
  """Active vector(s) (..., dim) -> full raveled vector(s) (..., size), zero off ``idx``."""
  z = np.asarray(z, dtype)
  if idx is None:
    return z
  out = np.zeros(z.shape[:-1] + (size,), dtype)
  out[..., idx] = z
  return out


def _is_traced(a: Any) -> bool:
  return isinstance(a, jax.core.Tracer)


def check_mask_matches_params(params: PyTree, mask: PyTree | None, *,
                              what: str = "mask") -> PyTree | None:
  """Checks that ``mask`` has the tree structure and leaf shapes of ``params``; returns it cast.

  Returns None for None, else ``mask`` with each leaf cast to its param's dtype, ready to
  multiply gradients. Raises :class:`MaskMismatchError` (one line) on a structure or shape
  mismatch, and for ``what="mask"`` on leaves that are not boolean or 0/1 (a float 0.5 is
  refused, not read as active; traced leaves are not checked). ``what`` names the tree in the
  message (the check also serves other param-shaped trees, e.g. a direction, whose values are
  free). ``snnjax.sparsity.check_mask`` makes the same check on training masks but returns
  nothing and takes no None.
  """
  if mask is None:
    return None
  p_def = jax.tree.structure(params)
  m_def = jax.tree.structure(mask)
  if p_def != m_def:
    p_paths = {jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    m_paths = {jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(mask)[0]}
    missing, extra = sorted(p_paths - m_paths), sorted(m_paths - p_paths)
    detail = (f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}, "
              f"extra {extra[:3]}{' ...' if len(extra) > 3 else ''}" if missing or extra
              else f"{p_def.num_leaves} leaves in both, different containers")
    raise MaskMismatchError(f"{what} tree structure does not match the params: {detail}")
  for path_p, (p, m) in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                            zip(jax.tree.leaves(params), jax.tree.leaves(mask))):
    name = jax.tree_util.keystr(path_p[0])
    if np.shape(p) != np.shape(m):
      raise MaskMismatchError(
          f"{what} leaf {name} has shape {np.shape(m)}, param has {np.shape(p)}")
    if what == "mask" and not _is_traced(m):
      a = np.asarray(m)
      if a.dtype != bool and not np.all((a == 0) | (a == 1)):
        bad = a[(a != 0) & (a != 1)].reshape(-1)[0]
        raise MaskMismatchError(f"mask leaf {name} is not boolean or 0/1 (holds {bad!r}): "
                                f"pass a bool mask (mask > 0.5 if you mean a threshold)")
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
