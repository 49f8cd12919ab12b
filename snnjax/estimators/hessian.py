"""Hessian-vector products and stochastic estimates of the Hessian trace (Hutchinson, Hutch++).

The Hessian is that of the **mean loss over all examples of** ``data``: with batches b of n_b
examples (N in all), H = sum_b (n_b / N) H_b, where H_b is the Hessian of ``loss_fn(params, b)``
(itself a mean over the batch). Products with H are therefore example-count-weighted averages of
per-batch products, computed one batch at a time: memory is bounded by one batch's activations.

With a ``mask`` (True = active), H is restricted to the active coordinates: the operator is
H[active, active], of size ``dim = active_count(params, mask)``, so its trace is the sum of the
active diagonal entries and its eigenvalues are those of that principal submatrix. Internally the
vectors of the operator are flat float vectors over the active coordinates (in the order of
``jax.flatten_util.ravel_pytree``); inactive coordinates are zero in every probe and are dropped
from every product.

Speed (see BENCHMARKS.md, section 2): a trace probe needs only the quadratic form z^T H_b z, the
second derivative of t -> loss(params + t z) at 0, which forward-over-forward mode (``jax.jvp`` of
``jax.jvp``) computes in forward passes alone: ~1.1x a gradient for a ResNet on CPU, against ~1.9x
for z^T (H_b z) through a Hessian-vector product (whose backward pass has twice a gradient's
arithmetic). Hessian-vector products (Lanczos, the Hutch++ sketch) linearize the gradient once per
batch (``jax.linearize`` of ``jax.grad``, jitted) and are then one JVP of that linearization each.
Probes and products run one after another on CPU (vmap over probes is slower per probe there) and
in vmapped groups on GPU/TPU; the ``batch_probes`` keyword overrides that. All loops over probes
and batches are Python loops over jitted functions (never a conv model inside
``lax.map``/``lax.scan``). Jitted functions take ``loss_fn`` as a pytree
(``_base.as_pytree_fn``): a ``jax.tree_util.Partial`` (what ``snnjax.train.Solution`` gives)
shares compilations across its bound arguments; pass any other function as the same object
across calls to reuse the compilations.

``devices`` (every function that loops over ``data``; None, ``"all"`` or a sequence of
``jax.Device``, as for the per-example estimators, see ``snnjax.estimators._sharding``): each
batch's examples are sharded over the devices along a 1-D ``"data"`` mesh and the params are
replicated; every product and quadratic form then runs as one jitted (GSPMD) program over the
devices. A batch whose size is not a multiple of the device count is split into its largest
multiple (sharded) and the remaining examples (replicated), weighted by their example counts, so
the operator, and every estimate, is the same as on one device up to float32 rounding.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from snnjax.errors import UserError
from snnjax.estimators import _sharding
from snnjax.estimators._base import (Batch, Estimate, apply_mask, as_batches, as_pytree_fn,
                                     check_mask_matches_params)

PyTree = Any
LossFn = Callable[[PyTree, Batch], jax.Array]
Devices = None | str | Sequence[jax.Device]

METHODS = ("hutchinson", "hutchpp")
_Z95 = 1.959963984540054  # two-sided 95% normal quantile
_GPU_BATCH_PROBES = 8


def default_batch_probes() -> int:
  """Probes per vmapped group by default: 1 (sequential) on CPU, 8 on GPU/TPU."""
  return 1 if jax.default_backend() == "cpu" else _GPU_BATCH_PROBES


# ------------------------------------------------------------------------------------------------
# Hessian-vector products.


def hvp(loss_fn: LossFn, params: PyTree, batch: Batch, v: PyTree, *,
        mask: PyTree | None = None) -> PyTree:
  """Hessian-vector product of the batch's mean loss, forward-over-reverse.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar``, the mean loss over the batch's examples.
    params: the point where the Hessian is taken.
    batch: one batch.
    v: a pytree like ``params``.
    mask: optional mask pytree; ``v`` and the result are zeroed on inactive coordinates, i.e. the
      product is with H[active, active] (embedded in the full space).

  Returns:
    H v, a pytree like ``params`` (``jax.jvp`` of ``jax.grad``). Jit-compatible.
  """
  mask = check_mask_matches_params(params, mask)
  v = apply_mask(v, mask)
  _, hv = jax.jvp(lambda p: jax.grad(loss_fn)(p, batch), (params,), (v,))
  return apply_mask(hv, mask)


def hvp_over_data(loss_fn: LossFn, params: PyTree, data: Batch | Iterable[Batch], v: PyTree, *,
                  mask: PyTree | None = None, devices: Devices = None) -> PyTree:
  """Hessian-vector product of the mean loss over all examples of ``data``.

  Returns sum_b (n_b / N) H_b v (a pytree like ``params``), computed one batch at a time with a
  jitted :func:`hvp`; with ``mask``, the product with H[active, active] embedded in the full space.
  ``devices``: shard each batch's examples over devices (module doc).
  """
  op = HessianOperator(loss_fn, params, data, mask, devices=devices)
  return op.to_tree(op.matvec(op.to_active(v)))


# ------------------------------------------------------------------------------------------------
# Jitted kernels (``loss_fn`` static; ``idx`` = int32 active indices into the raveled params, or
# None for all coordinates).


def _to_tree(z: jax.Array, params: PyTree, idx: jax.Array | None) -> PyTree:
  """Flat active vector (dim,) -> pytree like ``params``, zero on inactive coordinates."""
  flat, unravel = ravel_pytree(params)
  z = z.astype(flat.dtype)
  if idx is not None:
    z = jnp.zeros_like(flat).at[idx].set(z)
  return unravel(z)


def _to_active(tree: PyTree, idx: jax.Array | None) -> jax.Array:
  """Pytree like ``params`` -> flat vector (dim,) of its active coordinates."""
  flat, _ = ravel_pytree(tree)
  return flat if idx is None else flat[idx]


def _active_size(params: PyTree, idx: jax.Array | None) -> int:
  return sum(int(np.size(p)) for p in jax.tree.leaves(params)) if idx is None else idx.shape[0]


def _flat_dtype(params: PyTree):
  return jnp.result_type(*jax.tree.leaves(params))


@jax.jit
def _linearize(loss_fn: LossFn, params: PyTree, batch: Batch):
  """The linearized gradient map v -> H_b v of one batch (a ``jax.tree_util.Partial``).

  Returned from a jit cache entry, so its function part is the same object for every batch of the
  same shapes and the kernels below that take it are compiled once.
  """
  _, f_jvp = jax.linearize(lambda p: jax.grad(loss_fn)(p, batch), params)
  return f_jvp


def _probe(key: jax.Array, i: jax.Array, params: PyTree, idx: jax.Array | None,
           basis: jax.Array | None) -> jax.Array:
  """Rademacher probe i of ``key`` over the active coordinates, projected off ``basis`` rows."""
  z = jax.random.rademacher(jax.random.fold_in(key, i), (_active_size(params, idx),),
                            dtype=_flat_dtype(params))
  if basis is not None:  # (k, dim) orthonormal rows: z <- (I - B^T B) z
    z = z - basis.T @ (basis @ z)
  return z


def _quad_form(loss_fn: LossFn, params: PyTree, batch: Batch, v: PyTree) -> jax.Array:
  """v^T H_b v = d^2/dt^2 loss_fn(params + t v, batch) at t = 0, by forward-over-forward mode."""
  def directional(p):
    return jax.jvp(lambda q: loss_fn(q, batch), (p,), (v,))[1]
  return jax.jvp(directional, (params,), (v,))[1]


def _quad_one(loss_fn, params, batch, idx, key, i, basis):
  z = _probe(key, i, params, idx, basis)
  return _quad_form(loss_fn, params, batch, _to_tree(z, params, idx))


_quad_seq = jax.jit(_quad_one)


@jax.jit
def _quad_rows(loss_fn, params, batch, idx, zs):
  """z^T H_b z for each row z of zs (k, dim), vmapped: (k,)."""
  return jax.vmap(lambda z: _quad_form(loss_fn, params, batch, _to_tree(z, params, idx)))(zs)


@jax.jit
def _quad_group(loss_fn, params, batch, idx, key, indices, basis):
  return jax.vmap(_quad_one, in_axes=(None, None, None, None, None, 0, None))(
      loss_fn, params, batch, idx, key, indices, basis)


def _apply_one(f_jvp, params, idx, z):
  return _to_active(f_jvp(_to_tree(z, params, idx)), idx)


_apply_seq = jax.jit(_apply_one)


@jax.jit
def _apply_group(f_jvp, params, idx, zs):
  return jax.vmap(_apply_one, in_axes=(None, None, None, 0))(f_jvp, params, idx, zs)


@jax.jit
def _hvp_active(loss_fn: LossFn, params: PyTree, batch: Batch, idx, z):
  """One fresh forward-over-reverse HVP of a batch, in flat active coordinates."""
  return _to_active(hvp(loss_fn, params, batch, _to_tree(z, params, idx)), idx)


_to_tree_jit = jax.jit(_to_tree)
_to_active_jit = jax.jit(_to_active)


@functools.partial(jax.jit, static_argnums=1)
def _rademacher_rows(key: jax.Array, shape: tuple[int, int], dtype_like: jax.Array) -> jax.Array:
  return jax.random.rademacher(key, shape, dtype=dtype_like.dtype)


# ------------------------------------------------------------------------------------------------
# The operator.


def _num_examples(batch: Batch) -> int:
  if "x" not in batch:
    raise UserError(f"each batch needs an 'x' entry (examples on axis 0); got keys {list(batch)}")
  n = int(np.shape(batch["x"])[0])
  if n == 0:
    raise UserError("a batch holds no examples")
  return n


def _place(batches: list, counts: list[int], devices: Devices):
  """``batches`` on the default device, or sharded over ``devices`` (module doc).

  Returns (placed batches, their example counts): with devices, a batch whose size is not a
  multiple of the device count becomes two, its largest multiple (sharded along axis 0) and the
  rest (replicated).
  """
  devs = _sharding.resolve_devices(devices)
  if devs is None:
    return [jax.device_put(b) for b in batches], counts
  placed, sizes = [], []
  for batch, n in zip(batches, counts):
    whole = n - n % len(devs)
    parts = [(0, whole, True), (whole, n, False)]
    for start, stop, shard in parts:
      if stop == start:
        continue
      part = batch if stop - start == n else jax.tree.map(lambda a: a[start:stop], batch)
      placed.append(_sharding.shard_batch(part, devs) if shard
                    else _sharding.replicate(part, devs))
      sizes.append(stop - start)
  return placed, sizes


def _check_batch_probes(batch_probes: int | None) -> int:
  if batch_probes is None:
    return default_batch_probes()
  if not isinstance(batch_probes, (int, np.integer)) or batch_probes < 1:
    raise UserError(f"batch_probes must be None or a positive int, got {batch_probes!r}")
  return int(batch_probes)


class HessianOperator:
  """H[active, active] of the mean loss over all examples of ``data``, as a linear operator.

  Vectors are flat arrays of length ``dim`` over the active coordinates (all coordinates without a
  mask), in ``ravel_pytree`` order; :meth:`to_tree` / :meth:`to_active` convert to and from param
  pytrees. For products with a single batch its linearization is computed once and kept (memory ~
  that batch's residuals); with several batches each call linearizes batch by batch. Quadratic
  forms (:meth:`quad_forms`) need no linearization. ``devices`` shards each batch's examples over
  devices (module doc).

  Attributes:
    num_examples: N, the examples over all batches.
    dim: the number of active coordinates.
    batch_probes: probes per vmapped group (1 = one after another).
    num_matvecs: Hessian-vector products computed so far (each counts once, over all batches).
    num_quad_forms: quadratic forms z^T H z computed so far (likewise).
  """

  def __init__(self, loss_fn: LossFn, params: PyTree, data: Batch | Iterable[Batch],
               mask: PyTree | None = None, *, batch_probes: int | None = None,
               devices: Devices = None):
    self.loss_fn = as_pytree_fn(loss_fn)  # an ordinary jit argument (see ``as_pytree_fn``)
    self.params = _sharding.replicate(params, devices)
    self.batches = list(as_batches(data))
    if not self.batches:
      raise UserError("data holds no batches")
    counts = [_num_examples(b) for b in self.batches]
    # On the device(s) once: every product and probe reads every batch again.
    self.batches, counts = _place(self.batches, counts, devices)
    self.num_examples = int(sum(counts))
    self.weights = [c / self.num_examples for c in counts]
    mask = check_mask_matches_params(params, mask)
    size = sum(int(np.size(p)) for p in jax.tree.leaves(params))
    if size == 0:
      raise UserError("params hold no coordinates")
    if mask is None:
      self.idx = None
      self.dim = size
    else:
      active = np.flatnonzero(np.asarray(ravel_pytree(mask)[0]) != 0)
      if active.size == 0:
        raise UserError("the mask has no active coordinates")
      self.idx = None if active.size == size else jnp.asarray(active, dtype=jnp.int32)
      self.dim = int(active.size)
    self.batch_probes = _check_batch_probes(batch_probes)
    self.dtype = _flat_dtype(params)
    self.num_matvecs = 0
    self.num_quad_forms = 0
    self._lin = None

  # Conversions.
  def to_tree(self, z: jax.Array | np.ndarray) -> PyTree:
    """Flat active vector (dim,) -> pytree like params (zero on inactive coordinates)."""
    return _to_tree_jit(jnp.asarray(z, self.dtype), self.params, self.idx)

  def to_active(self, tree: PyTree) -> jax.Array:
    """Pytree like params -> its active coordinates, flat (dim,)."""
    return _to_active_jit(tree, self.idx)

  # Linearizations.
  def _linearizations(self):
    """Yields (weight n_b / N, linearized gradient map) per batch."""
    if len(self.batches) == 1:
      if self._lin is None:
        self._lin = _linearize(self.loss_fn, self.params, self.batches[0])
      yield self.weights[0], self._lin
      return
    for weight, batch in zip(self.weights, self.batches):
      yield weight, _linearize(self.loss_fn, self.params, batch)

  # Products.
  def matvec(self, z: jax.Array | np.ndarray) -> jax.Array:
    """H z for a flat active vector z (dim,) -> (dim,)."""
    z = jnp.asarray(z, self.dtype)
    self.num_matvecs += 1
    if len(self.batches) == 1:
      (_, f_jvp), = self._linearizations()
      return _apply_seq(f_jvp, self.params, self.idx, z)
    out = None
    for weight, batch in zip(self.weights, self.batches):
      hz = weight * _hvp_active(self.loss_fn, self.params, batch, self.idx, z)
      out = hz if out is None else out + hz
    return out

  def matmat(self, zs: jax.Array | np.ndarray) -> jax.Array:
    """H applied to each row of zs (k, dim) -> (k, dim); one linearization per batch."""
    zs = jnp.asarray(zs, self.dtype)
    k = zs.shape[0]
    if k == 1:
      return self.matvec(zs[0])[None]
    self.num_matvecs += k
    g = self.batch_probes
    out = None
    for weight, f_jvp in self._linearizations():
      if g == 1:
        rows = jnp.stack([_apply_seq(f_jvp, self.params, self.idx, zs[i]) for i in range(k)])
      else:
        padded = jnp.concatenate([zs, jnp.zeros((-k % g, zs.shape[1]), zs.dtype)])
        rows = jnp.concatenate([_apply_group(f_jvp, self.params, self.idx, padded[s:s + g])
                                for s in range(0, padded.shape[0], g)])[:k]
      out = weight * rows if out is None else out + weight * rows
    return out

  def quad_forms_of(self, zs: jax.Array | np.ndarray) -> np.ndarray:
    """z^T H z for each row z of zs (k, dim): (k,) float64, averaged over all examples."""
    zs = jnp.asarray(zs, self.dtype)
    k = zs.shape[0]
    self.num_quad_forms += k
    g = self.batch_probes
    padded = jnp.concatenate([zs, jnp.zeros((-k % g, zs.shape[1]), zs.dtype)])  # one group shape
    total = None
    for weight, batch in zip(self.weights, self.batches):
      vals = jnp.concatenate([_quad_rows(self.loss_fn, self.params, batch, self.idx,
                                         padded[s:s + g])
                              for s in range(0, padded.shape[0], g)])[:k]
      vals = np.asarray(vals, np.float64) * weight
      total = vals if total is None else total + vals
    return total

  def quad_forms(self, key: jax.Array, start: int, count: int,
                 basis: jax.Array | None = None) -> np.ndarray:
    """z_i^T H z_i for the Rademacher probes i = start, ..., start + count - 1.

    Probe i is ``rademacher(fold_in(key, i), (dim,))`` whatever the batching or grouping, so the
    per-probe values do not depend on how the examples are chunked. With ``basis`` (k, dim),
    orthonormal rows, each probe is first projected: z <- (I - B^T B) z (Hutch++ residual).

    Each value is sum_b (n_b / N) z^T H_b z, with z^T H_b z by forward-over-forward mode (no
    Hessian-vector product, no linearization).

    Returns:
      (count,) float64 per-probe values, averaged over all examples.
    """
    self.num_quad_forms += count
    g = self.batch_probes
    indices = np.arange(start, start + count, dtype=np.int32)
    total = None
    for weight, batch in zip(self.weights, self.batches):
      if g == 1:
        vals = jnp.stack([_quad_seq(self.loss_fn, self.params, batch, self.idx, key,
                                    jnp.int32(i), basis) for i in indices])
      else:
        padded = np.concatenate([indices, np.full(-count % g, start, np.int32)])
        vals = jnp.concatenate([
            _quad_group(self.loss_fn, self.params, batch, self.idx, key,
                        jnp.asarray(padded[s:s + g]), basis)
            for s in range(0, padded.size, g)])[:count]
      vals = np.asarray(vals, np.float64) * weight
      total = vals if total is None else total + vals
    return total


# ------------------------------------------------------------------------------------------------
# Trace estimators.


def _sample_stderr(samples: np.ndarray) -> float:
  if samples.size < 2:
    return float("nan")
  return float(np.std(samples, ddof=1) / np.sqrt(samples.size))


def _run_probes(op: HessianOperator, key: jax.Array, max_probes: int, *, rtol: float | None,
                min_probes: int, check_every: int, offset: float = 0.0,
                basis: jax.Array | None = None) -> tuple[np.ndarray, bool]:
  """Hutchinson probes, in rounds of ``check_every`` when ``rtol`` asks for an early stop.

  Stops once at least ``min_probes`` probes are in and the 95% half-width of ``offset + mean``
  is below ``rtol * |offset + mean|``. Returns (per-probe values, stopped early).
  """
  if rtol is None:
    return op.quad_forms(key, 0, max_probes, basis), False
  samples = np.zeros(0)
  while samples.size < max_probes:
    done = samples.size
    size = min(max_probes - done, max(check_every, min_probes - done))
    samples = np.concatenate([samples, op.quad_forms(key, done, size, basis)])
    if samples.size >= max(min_probes, 2) and samples.size < max_probes:
      half = _Z95 * _sample_stderr(samples)
      if half < rtol * abs(offset + samples.mean()):
        return samples, True
  return samples, False


def hessian_trace(loss_fn: LossFn, params: PyTree, data: Batch | Iterable[Batch], *,
                  key: jax.Array, num_probes: int, mask: PyTree | None = None,
                  method: str = "hutchinson", rtol: float | None = None, min_probes: int = 10,
                  batch_probes: int | None = None, check_every: int | None = None,
                  devices: Devices = None) -> Estimate:
  """Stochastic estimate of Tr(H), the Hessian of the mean loss over all examples of ``data``.

  Methods:
    * ``"hutchinson"``: mean of z^T H z over ``num_probes`` Rademacher probes z (over the active
      coordinates). stderr = sample std of the per-probe values / sqrt(probes used) (nan with a
      single probe).
    * ``"hutchpp"`` (Meyer, Musco, Musco & Woodruff 2021): ``num_probes`` = m operator applications
      in all, k = m // 3 each for the sketch Q = qr(H S) (S Rademacher; k Hessian-vector
      products), Tr(Q^T H Q) (k quadratic forms) and Hutchinson on the residual:
      Tr(H) = Tr(Q^T H Q) + mean_i g_i^T (I - QQ^T) H (I - QQ^T) g_i. The low-rank part is exact
      given Q; stderr is that of the residual Hutchinson part. Q (dim x k) lives on the device.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` (mean over the batch). BatchNorm statistics and
      any other state are closed over by ``loss_fn`` (e.g. eval mode).
    params: the point where the Hessian is taken.
    data: one batch or an iterable of batches; the loss is the mean over all their examples.
    key: PRNG key; probe i uses ``fold_in(key, i)`` (Hutch++: ``split(key)`` into S and residual
      keys), so results do not depend on batching or ``batch_probes``.
    num_probes: Hutchinson probes (upper bound with ``rtol``); Hutch++ matvecs (>= 3).
    mask: optional mask pytree; the estimate is then Tr(H[active, active]).
    method: ``"hutchinson"`` or ``"hutchpp"``.
    rtol: optional early stop once the 95% confidence half-width (1.96 stderr) is below
      ``rtol * |estimate|``, after ``min_probes`` (Hutch++: applies to the residual probes).
    min_probes: probes before the first early-stop check (>= 2).
    batch_probes: probes per vmapped group; None = 1 on CPU (sequential), 8 on GPU/TPU.
    check_every: probes between early-stop checks. Default: ``batch_probes``.
    devices: None, ``"all"`` or a sequence of devices to shard each batch's examples over
      (module doc); the probes and the estimate do not depend on it beyond float32 rounding.

  Returns:
    ``Estimate`` with ``value`` = Tr(H) (a sum over the active coordinates of the example-mean
    Hessian), ``stderr``, ``num_examples`` = N, ``num_probes`` = operator applications used
    (quadratic forms z^T H z, plus Hutch++'s k Hessian-vector products for its sketch), and
    ``extra``: ``method``, ``dim`` (active coordinates), ``samples`` (per-probe values; Hutch++:
    residual part), ``stopped_early``, ``batch_probes``, ``halfwidth95``; Hutch++ adds
    ``lowrank_trace``, ``rank`` (k) and ``residual_probes``.
  """
  if method not in METHODS:
    raise UserError(f"method must be one of {METHODS}, got {method!r}")
  if not isinstance(num_probes, (int, np.integer)) or num_probes < 1:
    raise UserError(f"num_probes must be a positive int, got {num_probes!r}")
  if rtol is not None and not rtol > 0:
    raise UserError(f"rtol must be None or > 0, got {rtol!r}")
  if not isinstance(min_probes, (int, np.integer)) or min_probes < 2:
    raise UserError(f"min_probes must be an int >= 2, got {min_probes!r}")
  if check_every is not None and (not isinstance(check_every, (int, np.integer))
                                  or check_every < 1):
    raise UserError(f"check_every must be None or a positive int, got {check_every!r}")
  op = HessianOperator(loss_fn, params, data, mask, batch_probes=batch_probes, devices=devices)
  if check_every is None:
    check_every = op.batch_probes
  extra = {"method": method, "dim": op.dim, "batch_probes": op.batch_probes}

  if method == "hutchinson":
    samples, stopped = _run_probes(op, key, int(num_probes), rtol=rtol, min_probes=min_probes,
                                   check_every=check_every)
    value = float(samples.mean())
  else:
    k = int(num_probes) // 3
    if k < 1:
      raise UserError(f"hutchpp needs num_probes >= 3 (m/3 matvecs each for S, Q and the "
                      f"residual), got {num_probes}")
    if k > op.dim:
      k = op.dim  # Q then spans the whole active space: the trace is exact.
    key_s, key_g = jax.random.split(key)
    s = _rademacher_rows(key_s, (k, op.dim), jnp.zeros((), op.dtype))
    q, _ = jnp.linalg.qr(op.matmat(s).T)  # (dim, k)
    basis = q.T  # (k, dim), orthonormal rows
    lowrank = float(np.sum(op.quad_forms_of(basis)))
    samples, stopped = _run_probes(op, key_g, k, rtol=rtol, min_probes=min(min_probes, k),
                                   check_every=check_every, offset=lowrank, basis=basis)
    value = lowrank + float(samples.mean())
    extra.update(lowrank_trace=lowrank, rank=k, residual_probes=int(samples.size))
  stderr = _sample_stderr(samples)
  extra.update(samples=samples, stopped_early=stopped, halfwidth95=_Z95 * stderr)
  return Estimate(value=value, stderr=stderr, num_examples=op.num_examples,
                  num_probes=op.num_matvecs + op.num_quad_forms, extra=extra)
