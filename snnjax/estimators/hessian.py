"""Hessian-vector products and estimates of the Hessian trace (Hutchinson, Hutch++, XTrace, exact).

The Hessian is that of the **mean loss over all examples of** ``data``: with batches b of n_b
examples (N in all), H = sum_b (n_b / N) H_b, where H_b is the Hessian of ``loss_fn(params, b)``
(itself a mean over the batch). Products with H are therefore example-count-weighted averages of
per-batch products, computed one batch at a time: memory is bounded by one batch's activations.

With a ``mask`` (True = active), H is restricted to the active coordinates: the operator is
H[active, active], of size ``dim = active_count(params, mask)``, so its trace is the sum of the
active diagonal entries and its eigenvalues are those of that principal submatrix. The public
vectors of :class:`HessianOperator` are flat float vectors over the active coordinates (in the
order of ``jax.flatten_util.ravel_pytree``). The device kernels work in the FULL raveled space
with a 0/1 mask vector (probes are drawn over all coordinates and multiplied by it), so masks
of any density, probe counts and sketch sizes (Hutch++ pads its basis to a power of two) share
their compilations; the host converts between the two spaces in numpy.

Per-block traces (``blocks=``, ``snnjax.estimators.blocks``): each probe's z^T H z is split as
sum_l <z_l, (H z)_l> over the param leaves l, from one Hessian-vector product per probe (through
the kept linearization with one batch), so block traces use the same probes as the total and sum
to it; measured cost against the plain total in BENCHMARKS.md ("Curvature toolkit").

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
from snnjax.estimators import blocks as _blocks
from snnjax.estimators import sketch as _sketch
from snnjax.estimators._base import (Batch, Estimate, apply_mask, as_batches, as_pytree_fn,
                                     check_mask_matches_params, embed_active,
                                     eval_shape_or_error, leading_size)

PyTree = Any
LossFn = Callable[[PyTree, Batch], jax.Array]
Devices = None | str | Sequence[jax.Device]

METHODS = ("hutchinson", "hutchpp", "xtrace", "exact")
EXACT_MAX_DIM = 4096  # active coordinates above which method="exact" needs max_dim= to run
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
  check_scalar_loss(loss_fn, params, batch)
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
# Jitted kernels. Every vector here lives in the FULL raveled parameter space (``size``
# coordinates, ``ravel_pytree`` order) and ``mvec`` is the (size,) 0/1 mask vector (None = dense):
# masks of any density, and probes over any number of active coordinates, share one compilation.
# ``loss_fn`` / ``f_jvp`` are pytree arguments (``_base.as_pytree_fn``), never static.


def _flat_dtype(params: PyTree):
  return jnp.result_type(*jax.tree.leaves(params))


def _size(params: PyTree) -> int:
  return sum(int(np.size(p)) for p in jax.tree.leaves(params))


def _masked(z: jax.Array, mvec: jax.Array | None) -> jax.Array:
  return z if mvec is None else z * mvec


def _ravel(tree: PyTree) -> jax.Array:
  return ravel_pytree(tree)[0]


def _unravel(z: jax.Array, params: PyTree) -> PyTree:
  flat, unravel = ravel_pytree(params)
  return unravel(z.astype(flat.dtype))


def _leaf_dots(a: PyTree, b: PyTree) -> jax.Array:
  """(L,) per-leaf inner products <a_l, b_l>, leaves in ``jax.tree.leaves`` order."""
  return jnp.stack([jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))])


@jax.jit
def _linearize(loss_fn: LossFn, params: PyTree, batch: Batch):
  """The linearized gradient map v -> H_b v of one batch (a ``jax.tree_util.Partial``).

  Returned from a jit cache entry, so its function part is the same object for every batch of the
  same shapes and the kernels below that take it are compiled once.
  """
  _, f_jvp = jax.linearize(lambda p: jax.grad(loss_fn)(p, batch), params)
  return f_jvp


def _probe(key: jax.Array, i: jax.Array, params: PyTree, mvec: jax.Array | None,
           basis: jax.Array | None) -> jax.Array:
  """Rademacher probe i of ``key``, (size,), zero off the mask, projected off ``basis`` rows.

  ``basis`` (k, size): orthonormal rows, zero on inactive coordinates; z <- (I - B^T B) z.
  """
  z = jax.random.rademacher(jax.random.fold_in(key, i), (_size(params),),
                            dtype=_flat_dtype(params))
  z = _masked(z, mvec)
  if basis is not None:
    z = z - basis.T @ (basis @ z)
  return z


_probe_jit = jax.jit(_probe)


def _quad_form(loss_fn: LossFn, params: PyTree, batch: Batch, v: PyTree) -> jax.Array:
  """v^T H_b v = d^2/dt^2 loss_fn(params + t v, batch) at t = 0, by forward-over-forward mode."""
  def directional(p):
    return jax.jvp(lambda q: loss_fn(q, batch), (p,), (v,))[1]
  return jax.jvp(directional, (params,), (v,))[1]


def _quad_one(loss_fn, params, batch, mvec, key, i, basis):
  return _quad_form(loss_fn, params, batch, _unravel(_probe(key, i, params, mvec, basis), params))


_quad_seq = jax.jit(_quad_one)


@jax.jit
def _quad_rows(loss_fn, params, batch, mvec, zs):
  """z^T H_b z for each row z of zs (k, size) (masked first), vmapped: (k,)."""
  return jax.vmap(lambda z: _quad_form(loss_fn, params, batch,
                                       _unravel(_masked(z, mvec), params)))(zs)


@jax.jit
def _quad_group(loss_fn, params, batch, mvec, key, indices, basis):
  return jax.vmap(_quad_one, in_axes=(None, None, None, None, None, 0, None))(
      loss_fn, params, batch, mvec, key, indices, basis)


def _apply_one(f_jvp, params, mvec, z):
  return _masked(_ravel(f_jvp(_unravel(_masked(z, mvec), params))), mvec)


_apply_seq = jax.jit(_apply_one)


@jax.jit
def _apply_group(f_jvp, params, mvec, zs):
  return jax.vmap(_apply_one, in_axes=(None, None, None, 0))(f_jvp, params, mvec, zs)


@jax.jit
def _hvp_full(loss_fn: LossFn, params: PyTree, batch: Batch, mvec, z):
  """One fresh forward-over-reverse HVP of a batch, full space, masked in and out."""
  v = _unravel(_masked(z, mvec), params)
  _, hv = jax.jvp(lambda p: jax.grad(loss_fn)(p, batch), (params,), (v,))
  return _masked(_ravel(hv), mvec)


@functools.partial(jax.jit, static_argnames=("what",))
def _probe_products(fn, params, batch, mvec, key, indices, *, what):
  """Per-probe pieces of z ⊙ H_b z for the Rademacher probes ``indices`` (g,).

  ``fn`` is the batch's linearized gradient map when ``batch`` is None, else ``loss_fn`` (a fresh
  forward-over-reverse product). ``what="leaf"``: (g, L) per-leaf sums <z_l, (H_b z)_l>, whose
  sum over leaves is z^T H_b z (block traces from the same probes as the total);
  ``what="diag"``: (g, size) the vectors z ⊙ H_b z (Hutchinson diagonal samples).
  """
  def one(i):
    z = _probe(key, i, params, mvec, None)
    zt = _unravel(z, params)
    if batch is None:
      hz = fn(zt)
    else:
      hz = jax.jvp(lambda p: jax.grad(fn)(p, batch), (params,), (zt,))[1]
    if what == "leaf":
      return _leaf_dots(zt, hz)
    return z * _masked(_ravel(hz), mvec)

  if indices.shape[0] == 1:  # CPU default: no vmap (slower per probe there)
    return one(indices[0])[None]
  return jax.vmap(one)(indices)

# ------------------------------------------------------------------------------------------------
# The operator.


def _num_examples(batch: Batch) -> int:
  """Examples in a batch: the common leading size of its array leaves (any pytree)."""
  n = leading_size(batch)
  if n == 0:
    raise UserError("a batch holds no examples")
  return n


def check_scalar_loss(loss_fn: LossFn, params: PyTree, batch: Batch) -> None:
  """UserError unless ``loss_fn(params, batch)`` is one real scalar (traced, nothing run)."""
  out = eval_shape_or_error(loss_fn, params, batch, call="loss_fn(params, batch)")
  if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
    got = out.shape if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
    raise UserError(f"loss_fn(params, batch) must return the scalar mean loss over the batch, "
                    f"got {got} (per-example losses? take their mean)")
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise UserError(f"loss_fn(params, batch) must return a real floating scalar, got {out.dtype}")


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

  Public vectors are flat arrays of length ``dim`` over the active coordinates (all coordinates
  without a mask), in ``ravel_pytree`` order; :meth:`to_tree` / :meth:`to_active` convert to and
  from param pytrees, :meth:`to_full` / :meth:`to_dim` to and from the full raveled space
  (``size`` coordinates). The device kernels work in the full space with a 0/1 mask vector, so
  masks of any density share their compilations (the conversions run on the host in numpy).
  For products with a single batch its linearization is computed once and kept (memory ~
  that batch's residuals); with several batches each call linearizes batch by batch. Quadratic
  forms (:meth:`quad_forms`) need no linearization. ``devices`` shards each batch's examples over
  devices (module doc). Batches of different sizes compile once per size (a mean loss cannot be
  padded): give equal batches where the compile time matters.

  Attributes:
    num_examples: N, the examples over all batches.
    dim: the number of active coordinates; ``size``: all coordinates.
    idx: (dim,) int64 numpy active indices into the raveled params, or None (all active).
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
    check_scalar_loss(loss_fn, params, self.batches[0])
    # On the device(s) once: every product and probe reads every batch again.
    self.batches, counts = _place(self.batches, counts, devices)
    self.num_examples = int(sum(counts))
    self.weights = [c / self.num_examples for c in counts]
    mask = check_mask_matches_params(params, mask)
    self.size = _size(params)
    if self.size == 0:
      raise UserError("params hold no coordinates")
    self.dtype = _flat_dtype(params)
    if mask is None:
      self.idx, self.mvec, self.dim = None, None, self.size
    else:
      flat_mask = np.asarray(ravel_pytree(mask)[0]) != 0
      active = np.flatnonzero(flat_mask)
      if active.size == 0:
        raise UserError("the mask has no active coordinates")
      self.dim = int(active.size)
      if active.size == self.size:
        self.idx, self.mvec = None, None
      else:
        self.idx = active
        self.mvec = _sharding.replicate(jnp.asarray(flat_mask, self.dtype), devices)
    self.batch_probes = _check_batch_probes(batch_probes)
    self.num_matvecs = 0
    self.num_quad_forms = 0
    self._lin = None
    self._unravel = ravel_pytree(params)[1]

  # Conversions (host, numpy: no compilation depends on ``dim``).
  def to_full(self, z: Any) -> np.ndarray:
    """Active vector(s) (..., dim) -> full raveled vector(s) (..., size), zero off the mask."""
    return embed_active(z, self.idx, self.size, self.dtype)

  def to_dim(self, z: Any) -> np.ndarray:
    """Full raveled vector(s) (..., size) -> their active coordinates (..., dim)."""
    z = np.asarray(z)
    return z if self.idx is None else z[..., self.idx]

  def to_tree(self, z: Any) -> PyTree:
    """Flat active vector (dim,) -> pytree like params (zero on inactive coordinates)."""
    return self._unravel(jnp.asarray(self.to_full(z)))

  def to_active(self, tree: PyTree) -> np.ndarray:
    """Pytree like params -> its active coordinates, flat (dim,)."""
    return self.to_dim(np.asarray(ravel_pytree(tree)[0]))

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

  # Products in the full space (device arrays).
  # Every loop below stacks, pads and sums on the host (numpy): an eager jnp op on a (k, ...)
  # array would compile once per k.
  def _padded(self, zs: Any) -> np.ndarray:
    zs = np.asarray(zs, self.dtype)
    return np.concatenate([zs, np.zeros((-zs.shape[0] % self.batch_probes, zs.shape[1]),
                                        self.dtype)])

  def matmat_full(self, zs: Any) -> np.ndarray:
    """H applied to each row of zs (k, size) -> (k, size) float32 numpy, masked in and out."""
    zs = np.asarray(zs, self.dtype)
    k = zs.shape[0]
    self.num_matvecs += k
    g = self.batch_probes
    out = None
    if len(self.batches) > 1 and k == 1:
      for weight, batch in zip(self.weights, self.batches):
        hz = weight * np.asarray(_hvp_full(self.loss_fn, self.params, batch, self.mvec, zs[0]))
        out = hz if out is None else out + hz
      return out[None]
    for weight, f_jvp in self._linearizations():
      if g == 1:
        rows = np.stack([np.asarray(_apply_seq(f_jvp, self.params, self.mvec, zs[i]))
                         for i in range(k)])
      else:
        padded = self._padded(zs)
        rows = np.concatenate([np.asarray(_apply_group(f_jvp, self.params, self.mvec,
                                                       padded[s:s + g]))
                               for s in range(0, padded.shape[0], g)])[:k]
      out = weight * rows if out is None else out + weight * rows
    return out

  def quad_forms_full(self, zs: Any) -> np.ndarray:
    """z^T H z for each row z of zs (k, size) (masked): (k,) float64, averaged over examples."""
    k = np.shape(zs)[0]
    self.num_quad_forms += k
    g = self.batch_probes
    padded = self._padded(zs)  # one group shape
    total = None
    for weight, batch in zip(self.weights, self.batches):
      vals = np.concatenate([np.asarray(_quad_rows(self.loss_fn, self.params, batch, self.mvec,
                                                   padded[s:s + g]), np.float64)
                             for s in range(0, padded.shape[0], g)])[:k]
      total = vals * weight if total is None else total + vals * weight
    return total

  # Products in active coordinates (host arrays).
  def matvec(self, z: Any) -> np.ndarray:
    """H z for a flat active vector z (dim,) -> (dim,) float32 numpy."""
    return self.to_dim(np.asarray(self.matmat_full(self.to_full(z)[None])[0]))

  def matmat(self, zs: Any) -> np.ndarray:
    """H applied to each row of zs (k, dim) -> (k, dim); one linearization per batch."""
    return self.to_dim(np.asarray(self.matmat_full(self.to_full(zs))))

  def quad_forms_of(self, zs: Any) -> np.ndarray:
    """z^T H z for each row z of zs (k, dim): (k,) float64, averaged over all examples."""
    return self.quad_forms_full(self.to_full(zs))

  def probe(self, key: jax.Array, i: int) -> np.ndarray:
    """Rademacher probe i of ``key`` over the active coordinates, (dim,) (as the estimators use)."""
    return self.to_dim(np.asarray(_probe_jit(key, np.int32(i), self.params, self.mvec, None)))

  def _groups(self, start: int, count: int):
    """Probe indices start..start+count-1 padded to whole groups of ``batch_probes``."""
    g = self.batch_probes
    indices = np.arange(start, start + count, dtype=np.int32)
    padded = np.concatenate([indices, np.full(-count % g, start, np.int32)])
    return [padded[s:s + g] for s in range(0, padded.size, g)]

  def quad_forms(self, key: jax.Array, start: int, count: int,
                 basis: jax.Array | None = None) -> np.ndarray:
    """z_i^T H z_i for the Rademacher probes i = start, ..., start + count - 1.

    Probe i is ``rademacher(fold_in(key, i), (size,))`` times the mask (its active part, see
    :meth:`probe`) whatever the batching or grouping, so the per-probe values do not depend on
    how the examples are chunked. With ``basis`` (k, size), orthonormal rows zero off the mask,
    each probe is first projected: z <- (I - B^T B) z (Hutch++ residual).

    Each value is sum_b (n_b / N) z^T H_b z, with z^T H_b z by forward-over-forward mode (no
    Hessian-vector product, no linearization).

    Returns:
      (count,) float64 per-probe values, averaged over all examples.
    """
    self.num_quad_forms += count
    total = None
    for weight, batch in zip(self.weights, self.batches):
      if self.batch_probes == 1:
        vals = np.array([float(_quad_seq(self.loss_fn, self.params, batch, self.mvec, key,
                                         np.int32(i), basis))
                         for i in range(start, start + count)])
      else:
        vals = np.concatenate([np.asarray(_quad_group(self.loss_fn, self.params, batch,
                                                      self.mvec, key, group, basis), np.float64)
                               for group in self._groups(start, count)])[:count]
      vals = vals * weight
      total = vals if total is None else total + vals
    return total

  def probe_products(self, key: jax.Array, start: int, count: int, what: str) -> np.ndarray:
    """Per-probe z ⊙ H z pieces for probes start..start+count-1 (same probes as quad_forms).

    ``what="leaf"``: (count, L) float64 per-leaf sums <z_l, (H z)_l> (L = number of param
    leaves, ``jax.tree.leaves`` order; their row sums are z^T H z); ``what="diag"``: (count, dim)
    float64 active coordinates of z ⊙ H z. One Hessian-vector product per probe (through the
    kept linearization with one batch), averaged over all examples.
    """
    self.num_matvecs += count
    groups = self._groups(start, count)
    total = None
    if len(self.batches) == 1:
      sources = [(w, lin, None) for w, lin in self._linearizations()]
    else:
      sources = [(w, self.loss_fn, b) for w, b in zip(self.weights, self.batches)]
    for weight, fn, batch in sources:
      vals = np.concatenate([np.asarray(_probe_products(fn, self.params, batch, self.mvec, key,
                                                        group, what=what), np.float64)
                             for group in groups])[:count]
      if what == "diag":
        vals = self.to_dim(vals)
      vals = vals * weight
      total = vals if total is None else total + vals
    return total

  def dense(self, max_dim: int | None = None) -> np.ndarray:
    """The dense (dim, dim) float64 matrix H[active, active], by ``dim`` products with e_i.

    Guarded: raises UserError when ``dim`` exceeds ``max_dim`` (default ``EXACT_MAX_DIM``).
    Columns run in groups of ``batch_probes`` (at least 16) vmapped products.
    """
    limit = EXACT_MAX_DIM if max_dim is None else int(max_dim)
    if self.dim > limit:
      raise UserError(f"exact curvature needs {self.dim} Hessian-vector products and a "
                      f"{self.dim}x{self.dim} matrix, above the limit max_dim={limit}; pass "
                      f"max_dim={self.dim} (or more) to compute it anyway")
    saved, self.batch_probes = self.batch_probes, max(self.batch_probes, min(16, self.dim))
    try:
      cols = []
      for s in range(0, self.dim, 256):
        eye = np.zeros((min(256, self.dim - s), self.dim), self.dtype)
        eye[np.arange(eye.shape[0]), s + np.arange(eye.shape[0])] = 1
        cols.append(np.asarray(self.matmat(eye), np.float64))
    finally:
      self.batch_probes = saved
    h = np.concatenate(cols)
    return 0.5 * (h + h.T)


# ------------------------------------------------------------------------------------------------
# Trace estimators.


def _sample_stderr(samples: np.ndarray) -> float:
  if samples.size < 2:
    return float("nan")
  return float(np.std(samples, ddof=1) / np.sqrt(samples.size))


def _run_probes(sample: Callable[[int, int], np.ndarray], max_probes: int, *,
                rtol: float | None, min_probes: int, check_every: int,
                offset: float = 0.0) -> tuple[np.ndarray, bool]:
  """Probes ``sample(start, count) -> (count, ...)``, in rounds when ``rtol`` asks for a stop.

  A probe's total is its value, or the sum of its row (per-leaf pieces). Stops once at least
  ``min_probes`` probes are in and the 95% half-width of ``offset + mean`` total is below
  ``rtol * |offset + mean|``. Returns (per-probe values, stopped early).
  """
  if rtol is None:
    return sample(0, max_probes), False
  samples = None
  while samples is None or samples.shape[0] < max_probes:
    done = 0 if samples is None else samples.shape[0]
    size = min(max_probes - done, max(check_every, min_probes - done))
    new = sample(done, size)
    samples = new if samples is None else np.concatenate([samples, new])
    totals = samples if samples.ndim == 1 else samples.sum(axis=1)
    if totals.size >= max(min_probes, 2) and totals.size < max_probes:
      half = _Z95 * _sample_stderr(totals)
      if half < rtol * abs(offset + totals.mean()):
        return samples, True
  return samples, False


def _bucket(k: int) -> int:
  return 1 << max(int(k) - 1, 0).bit_length()


def _leaf_of_coordinate(op: HessianOperator) -> np.ndarray:
  """(dim,) index of the param leaf each active coordinate belongs to."""
  sizes = [int(np.size(p)) for p in jax.tree.leaves(op.params)]
  return op.to_dim(np.repeat(np.arange(len(sizes)), sizes))


def _block_estimates(blocks: _blocks.Blocks, leaf_samples: np.ndarray | None,
                     leaf_values: np.ndarray | None, num_examples: int, num_probes: int) -> dict:
  """{block name: Estimate}: per-probe block sums (mean, stderr) or exact per-leaf values."""
  out = {}
  if leaf_samples is not None:
    per_block = blocks.sum_leaves(leaf_samples)  # (probes, B)
    for b, name in enumerate(blocks.names):
      out[name] = Estimate(value=float(per_block[:, b].mean()),
                           stderr=_sample_stderr(per_block[:, b]), num_examples=num_examples,
                           num_probes=num_probes, extra={"samples": per_block[:, b]})
  else:
    per_block = blocks.sum_leaves(leaf_values)
    for b, name in enumerate(blocks.names):
      out[name] = Estimate(value=float(per_block[b]), stderr=None, num_examples=num_examples)
  return out


def hessian_trace(loss_fn: LossFn, params: PyTree, data: Batch | Iterable[Batch], *,
                  key: jax.Array | None = None, num_probes: int | None = None,
                  mask: PyTree | None = None, method: str = "hutchinson",
                  rtol: float | None = None, min_probes: int = 10,
                  batch_probes: int | None = None, check_every: int | None = None,
                  blocks: _blocks.BlockSpec | None = None, max_dim: int | None = None,
                  devices: Devices = None) -> Estimate:
  """Estimate (or exact value) of Tr(H), the Hessian of the mean loss over all examples of ``data``.

  Methods:
    * ``"hutchinson"``: mean of z^T H z over ``num_probes`` Rademacher probes z (over the active
      coordinates). stderr = sample std of the per-probe values / sqrt(probes used) (nan with a
      single probe). Each z^T H z is a forward-over-forward second derivative; with ``blocks``
      each probe is one Hessian-vector product instead and z^T H z = sum_l <z_l, (Hz)_l>.
    * ``"hutchpp"`` (Meyer, Musco, Musco & Woodruff 2021): ``num_probes`` = m operator applications
      in all, k = m // 3 each for the sketch Q = qr(H S) (S Rademacher; k Hessian-vector
      products), Tr(Q^T H Q) (k quadratic forms) and Hutchinson on the residual:
      Tr(H) = Tr(Q^T H Q) + mean_i g_i^T (I - QQ^T) H (I - QQ^T) g_i. **Its stderr covers the
      residual Hutchinson part only** (the variation of Tr(Q^T H Q) over sketches S is not in
      it; ``extra["stderr_covers"] = "residual"``): for an error bar on the whole estimate use
      ``"xtrace"`` or repeat with several keys.
    * ``"xtrace"`` (Epperly, Tropp & Webber 2024; ``snnjax.estimators.sketch``): ``num_probes``
      = m products, s = m // 2 test vectors (s >= 2), exact on operators of rank < s; its stderr
      (std of the s leave-one-out estimates / sqrt(s)) covers the whole estimate.
    * ``"exact"``: Tr of the dense H[active, active] built from ``dim`` Hessian-vector products
      (a reference for small models; UserError above ``max_dim`` active coordinates, default
      ``EXACT_MAX_DIM``). stderr None; ``key`` and ``num_probes`` are not used.

    Which to pick: see ``snnjax.estimators.sketch`` (module doc) and BENCHMARKS.md.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` (mean over the batch). BatchNorm statistics and
      any other state are closed over by ``loss_fn`` (e.g. eval mode). Pass a
      ``jax.tree_util.Partial`` to share compilations across closures over different arrays.
    params: the point where the Hessian is taken.
    data: one batch or an iterable of batches; the loss is the mean over all their examples.
    key: PRNG key (stochastic methods); probe i uses ``fold_in(key, i)`` (Hutch++: ``split(key)``
      into S and residual keys), so results do not depend on batching or ``batch_probes``.
    num_probes: REQUIRED for the stochastic methods (the default None is for ``"exact"``, which
      does not use it; a UserError otherwise): Hutchinson probes (upper bound with ``rtol``);
      Hutch++ matvecs (>= 3); XTrace matvecs (>= 4).
    mask: optional mask pytree; the estimate is then Tr(H[active, active]).
    method: ``"hutchinson"``, ``"hutchpp"``, ``"xtrace"`` or ``"exact"``.
    rtol: optional early stop once the 95% confidence half-width (1.96 stderr) is below
      ``rtol * |estimate|``, after ``min_probes`` (Hutch++: applies to the residual probes;
      not for XTrace or exact).
    min_probes: probes before the first early-stop check (>= 2).
    batch_probes: probes per vmapped group; None = 1 on CPU (sequential), 8 on GPU/TPU.
    check_every: probes between early-stop checks. Default: ``batch_probes``.
    blocks: optional breakdown (``snnjax.estimators.blocks``: ``"leaf"``, ``"layer"``, a mapping
      or a callable) for ``"hutchinson"`` and ``"exact"``: block traces Tr(H_BB) from the same
      probes (or the same dense diagonal) as the total, which is their sum.
    max_dim: the size guard of ``"exact"``.
    devices: None, ``"all"`` or a sequence of devices to shard each batch's examples over
      (module doc); the probes and the estimate do not depend on it beyond float32 rounding.

  Returns:
    ``Estimate`` with ``value`` = Tr(H) (a **sum** over the active coordinates of the diagonal
    of the example-**mean** Hessian), ``stderr``, ``num_examples`` = N, ``num_probes`` =
    operator applications used (quadratic forms and Hessian-vector products), ``blocks``
    ({name: Estimate of Tr(H_BB)} when asked; per-probe block values in their ``extra["samples"]``)
    and ``extra``: ``method``, ``dim`` (active coordinates), ``samples`` (per-probe values;
    Hutch++: residual part; XTrace: the leave-one-out estimates), ``stopped_early``,
    ``batch_probes``, ``halfwidth95``, ``stderr_covers`` (``"all"``, ``"residual"`` or
    ``"exact"``); Hutch++ adds ``lowrank_trace``, ``rank`` (k) and ``residual_probes``.
  """
  if method not in METHODS:
    raise UserError(f"method must be one of {METHODS}, got {method!r}")
  if method != "exact":
    if key is None:
      raise UserError(f"method={method!r} needs a PRNG key (key=jax.random.key(0))")
    if not isinstance(num_probes, (int, np.integer)) or num_probes < 1:
      raise UserError(f"num_probes must be a positive int, got {num_probes!r}")
  if rtol is not None and not rtol > 0:
    raise UserError(f"rtol must be None or > 0, got {rtol!r}")
  if rtol is not None and method in ("xtrace", "exact"):
    raise UserError(f"rtol does not apply to method={method!r}")
  if not isinstance(min_probes, (int, np.integer)) or min_probes < 2:
    raise UserError(f"min_probes must be an int >= 2, got {min_probes!r}")
  if check_every is not None and (not isinstance(check_every, (int, np.integer))
                                  or check_every < 1):
    raise UserError(f"check_every must be None or a positive int, got {check_every!r}")
  if blocks is not None and method not in ("hutchinson", "exact"):
    raise UserError(f"blocks= is supported for method 'hutchinson' and 'exact', not {method!r}")
  parts = None if blocks is None else _blocks.make_blocks(params, blocks)
  op = HessianOperator(loss_fn, params, data, mask, batch_probes=batch_probes, devices=devices)
  if check_every is None:
    check_every = op.batch_probes
  extra = {"method": method, "dim": op.dim, "batch_probes": op.batch_probes,
           "stderr_covers": "all"}
  block_ests = None

  if method == "exact":
    diag = np.diag(op.dense(max_dim))
    value, stderr = float(diag.sum()), None
    extra.update(stderr_covers="exact", diagonal=diag)
    if parts is not None:
      leaf_values = np.bincount(_leaf_of_coordinate(op), weights=diag,
                                minlength=parts.of_leaf.size)
      block_ests = _block_estimates(parts, None, leaf_values, op.num_examples, 0)
    return Estimate(value=value, stderr=None, num_examples=op.num_examples,
                    num_probes=op.num_matvecs, extra=extra, blocks=block_ests)

  if method == "hutchinson":
    if parts is None:
      sample = lambda start, count: op.quad_forms(key, start, count)
    else:
      sample = lambda start, count: op.probe_products(key, start, count, "leaf")
    samples, stopped = _run_probes(sample, int(num_probes), rtol=rtol, min_probes=min_probes,
                                   check_every=check_every)
    if parts is not None:
      block_ests = _block_estimates(parts, samples, None, op.num_examples, samples.shape[0])
      samples = samples.sum(axis=1)
    value = float(samples.mean())
  elif method == "hutchpp":
    k = int(num_probes) // 3
    if k < 1:
      raise UserError(f"hutchpp needs num_probes >= 3 (m/3 matvecs each for S, Q and the "
                      f"residual), got {num_probes}")
    if k > op.dim:
      k = op.dim  # Q then spans the whole active space: the trace is exact.
    key_s, key_g = jax.random.split(key)
    s = np.stack([op.probe(key_s, i) for i in range(k)])  # (k, dim)
    q, _ = np.linalg.qr(np.asarray(op.matmat(s), np.float64).T)  # (dim, k), on the host
    # (k', size): orthonormal rows, zero off the mask, padded with zero rows to k' = the next
    # power of two (they project nothing), so sketch sizes share compilations.
    basis = op.to_full(q.T)
    lowrank = float(np.sum(op.quad_forms_full(basis)))  # k forms, in groups: no k-shaped compile
    basis = np.concatenate([basis, np.zeros((_bucket(k) - k, op.size), basis.dtype)])
    sample = lambda start, count: op.quad_forms(key_g, start, count, basis)
    samples, stopped = _run_probes(sample, k, rtol=rtol, min_probes=min(min_probes, k),
                                   check_every=check_every, offset=lowrank)
    value = lowrank + float(samples.mean())
    extra.update(lowrank_trace=lowrank, rank=k, residual_probes=int(samples.size),
                 stderr_covers="residual")
  else:  # xtrace
    s = min(int(num_probes) // 2, op.dim)
    if s < 2:
      raise UserError(f"xtrace needs num_probes >= 4 (two products per test vector), got "
                      f"{num_probes}")
    omega = np.stack([op.probe(key, i) for i in range(s)])
    value, stderr, samples, _ = _sketch.xtrace(op.matmat, omega)
    stopped = False
  stderr = _sample_stderr(samples)
  extra.update(samples=samples, stopped_early=stopped, halfwidth95=_Z95 * stderr)
  return Estimate(value=value, stderr=stderr, num_examples=op.num_examples,
                  num_probes=op.num_matvecs + op.num_quad_forms, extra=extra, blocks=block_ests)
