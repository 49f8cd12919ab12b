"""Per-example gradients and the trace of the Fisher information of a softmax classifier.

For an example x with logits z = f(params, x) (C classes), p = softmax(z) and the Jacobian
J = dz/dparams (C, P), the gradient of the log-likelihood of class c is

  grad_params log p_c(x) = J^T (e_c - p),

one VJP of the per-example logits function with the cotangent e_c - p (the negative of the
cross-entropy gradient; the sign does not matter for norms).

**Labels: one vocabulary.** Every function here takes ``labels=``, which says which labels the
gradients are taken for:

* ``"exact"``: the expectation over the model's own labels, computed exactly over the C classes
  (C VJPs per example, vmapped over the classes, optionally in chunks of classes). Traces only
  (:func:`fisher_trace`, :func:`ggn_trace`): a per-example gradient needs one label;
* ``"sampled"``: labels drawn from softmax(z), ``num_samples`` per example for
  :func:`fisher_trace` (the study: 1000 examples x 5 samples), one per example elsewhere; example
  i of ``data`` uses the key ``fold_in(key, i)``;
* ``"data"``: the dataset labels, the batch entry named by ``label_key`` (default ``"y"``; e.g.
  ``"y_true"`` for the clean labels under label noise).

Traces, per-example means over the examples of ``data``: ``labels="exact"`` is the true Fisher,
Tr(F) = mean_i sum_c p_c(x_i) ||grad log p_c(x_i)||^2; ``"sampled"`` is the true Fisher by Monte
Carlo, mean_i mean_s ||grad log p_{y_is}(x_i)||^2; ``"data"`` is the "empirical Fisher", mean_i
||grad log p_{y_i}(x_i)||^2: the mean squared per-example gradient norm, not the Fisher of the
model. The study configs name these ``fisher.kind = "exact" | "mc" | "empirical"``;
:func:`labels_for_kind` maps those names (kept: cached results are keyed by them).

:func:`ggn_trace` computes Tr(J^T H J) with H = diag(p) - p p^T, the Hessian of the cross-entropy
in the logits, through the per-example Gram matrix J J^T; for softmax cross-entropy it equals the
exact Fisher trace (a cross-check that shares no formula with ``labels="exact"``).

Conventions shared by every function here:

* ``logits_fn(params, x) -> (n, C)``; each example is evaluated alone as ``logits_fn(params,
  x[None])[0]``, so BatchNorm must be in eval mode (the closure's business);
* a ``mask`` (the params' structure, bool or 0/1 leaves) restricts the gradient to its active
  coordinates (g * mask). It does not change the network: pass params whose pruned coordinates are
  already zero, as masked training leaves them. Combine a sparsity mask with a parameter subset
  (``snnjax.estimators.param_subsets``) to measure e.g. kernels only;
* sampled labels use the key ``fold_in(key, i)`` for the i-th example of ``data`` (counting over
  all its batches), so results do not depend on ``chunk_size`` or ``devices``;
* examples run in chunks of ``chunk_size`` (default 32), one jitted vmapped call per chunk, sharded
  over ``devices`` (None, ``"all"`` or a sequence of ``jax.Device``; see
  ``snnjax.estimators._sharding``); averages are taken on the host in float64;
* ``cpu_rewrites`` (None = on for the CPU backend only): compute the chunk's grouped convolutions
  (the per-example kernel gradients that ``vmap`` makes) as batched dots
  (``snnjax.estimators._convs``): same values to float rounding, ~1.45x faster per-example
  gradients for a ResNet on CPU. ``False`` runs the plain vmapped program.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import UserError
from snnjax.estimators import _convs, _sharding
from snnjax.estimators import blocks as _blocks
from snnjax.estimators._base import (Batch, Estimate, PyTree, active_count, as_batches,
                                     as_pytree_fn, check_mask_matches_params, mean_and_stderr)

LogitsFn = Callable[[PyTree, jax.Array], jax.Array]
Devices = None | str | Sequence[jax.Device]
LABELS = ("exact", "sampled", "data")  # ``labels=`` of the traces
PER_EXAMPLE_LABELS = ("sampled", "data")  # ``labels=`` of the per-example functions
FISHER_KINDS = ("exact", "mc", "empirical")  # the study configs' ``fisher.kind`` names
_LABELS_OF_KIND = dict(zip(FISHER_KINDS, LABELS))


class GradDots(NamedTuple):
  """Per-example results of :func:`per_example_grad_dots`, float64 (N,) each."""
  dots: np.ndarray  # <mask * g_i, direction>
  norms: np.ndarray  # ||mask * g_i||


# ----------------------------------------------------------------------------------------------
# Per-example pieces (traced inside jit; one example at a time, vmapped by the callers).


def _example_logits(logits_fn: LogitsFn, params: PyTree, x: jax.Array) -> jax.Array:
  """Logits (C,) of one example x (its shape without the batch axis)."""
  return logits_fn(params, x[None])[0]


def _masked_leaves(grads: PyTree, mask: PyTree | None) -> list:
  """The leaves (k, ...) of k stacked gradients, mask applied."""
  leaves = jax.tree.leaves(grads)
  if mask is None:
    return leaves
  return [g * m for g, m in zip(leaves, jax.tree.leaves(mask))]


def _masked_sqnorms(grads: PyTree, mask: PyTree | None) -> jax.Array:
  """Squared norms (k,) of a pytree of k stacked gradients (leaves (k, ...)), mask applied."""
  return jnp.sum(_masked_leaf_sqnorms(grads, mask), axis=1)


def _masked_leaf_sqnorms(grads: PyTree, mask: PyTree | None) -> jax.Array:
  """Per-leaf squared norms (k, L) of k stacked gradients (leaves (k, ...)), mask applied."""
  return jnp.stack([jnp.sum(jnp.square(g).reshape(g.shape[0], -1), axis=1)
                    for g in _masked_leaves(grads, mask)], axis=1)


def _cotangent_grads(logits_fn, params, x, make_cotangents):
  """Gradients J^T u_k of one example for cotangents built from its logits.

  Returns (grads, aux): grads a pytree with leaves (k, *param_shape); ``make_cotangents(logits)``
  returns ((k, C) cotangents, aux).
  """
  logits, vjp_fn = jax.vjp(lambda p: _example_logits(logits_fn, p, x), params)
  cotangents, aux = make_cotangents(logits)
  grads = jax.vmap(lambda u: vjp_fn(u.astype(logits.dtype))[0])(cotangents)
  return grads, aux


def _label_cotangents(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Cotangents e_y - p (k, C) for labels (k,): J^T of them is grad log p_y."""
  p = jax.nn.softmax(logits.astype(jnp.float32))
  return jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32) - p[None, :]


def _example_labels(logits: jax.Array, y: jax.Array, k: jax.Array, num_samples: int):
  """Labels (max(num_samples, 1),): ``y`` when ``num_samples`` is 0, else drawn with key k."""
  if num_samples:
    return jax.random.categorical(k, logits.astype(jnp.float32), shape=(num_samples,))
  return y[None]


def _vmap_examples(one: Callable, cpu_rewrites: bool) -> Callable:
  """``jax.vmap(one)``; with ``cpu_rewrites``, its grouped convolutions as batched dots."""
  batched = jax.vmap(one)
  return _convs.grouped_convs_as_dots(batched) if cpu_rewrites else batched


def _example_keys(key: jax.Array, index: jax.Array) -> jax.Array:
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(index)


@functools.partial(jax.jit, static_argnames=("cpu_rewrites",))
def _exact_fisher_chunk(replicated, chunk, *, cpu_rewrites):
  """Per-example, per-leaf sum over ``classes`` of p_c ||mask * grad log p_c||^2: (c, L)."""
  logits_fn, params, mask, classes = replicated

  def one(x):
    def make(logits):
      p = jax.nn.softmax(logits.astype(jnp.float32))
      return jax.nn.one_hot(classes, logits.shape[-1], dtype=jnp.float32) - p[None, :], p[classes]
    grads, weights = _cotangent_grads(logits_fn, params, x, make)
    return jnp.sum(weights[:, None] * _masked_leaf_sqnorms(grads, mask), axis=0)

  return _vmap_examples(one, cpu_rewrites)(chunk["x"])


@functools.partial(jax.jit, static_argnames=("num_samples", "cpu_rewrites"))
def _label_sqnorms_chunk(replicated, chunk, *, num_samples, cpu_rewrites):
  """||mask * grad log p_y||^2 per example, label and param leaf: (c, k, L).

  Labels are ``chunk["y"]`` (c,) when ``num_samples`` is 0, else ``num_samples`` labels per
  example sampled from the model's softmax with the key ``fold_in(key, chunk["index"][i])``.
  """
  logits_fn, params, mask, key = replicated

  def one(x, y, k):
    def make(logits):
      return _label_cotangents(logits, _example_labels(logits, y, k, num_samples)), None
    grads, _ = _cotangent_grads(logits_fn, params, x, make)
    return _masked_leaf_sqnorms(grads, mask)

  keys = _example_keys(key, chunk["index"]) if num_samples else chunk["index"]
  return _vmap_examples(one, cpu_rewrites)(chunk["x"], chunk["y"], keys)


@functools.partial(jax.jit, static_argnames=("num_samples", "cpu_rewrites"))
def _label_dots_chunk(replicated, chunk, *, num_samples, cpu_rewrites):
  """(<mask * g_i, v>, ||mask * g_i||^2) per example, g_i the cross-entropy gradient: (c,), (c,).

  One label per example: ``chunk["y"]`` (``num_samples`` 0) or sampled as in
  :func:`_label_sqnorms_chunk` (``num_samples`` 1).
  """
  logits_fn, params, mask, key, direction = replicated

  def one(x, y, k):
    def make(logits):
      return _label_cotangents(logits, _example_labels(logits, y, k, num_samples)), None
    grads, _ = _cotangent_grads(logits_fn, params, x, make)  # grad log p_y = -g_i: (1, ...)
    dot = 0.0
    for g, v in zip(_masked_leaves(grads, mask), jax.tree.leaves(direction)):
      dot = dot + jnp.sum(g.reshape(g.shape[0], -1) * v.reshape(1, -1).astype(g.dtype), axis=1)
    return -dot[0], _masked_sqnorms(grads, mask)[0]

  keys = _example_keys(key, chunk["index"]) if num_samples else chunk["index"]
  return _vmap_examples(one, cpu_rewrites)(chunk["x"], chunk["y"], keys)


@functools.partial(jax.jit, static_argnames=("cpu_rewrites",))
def _ggn_chunk(replicated, chunk, *, cpu_rewrites):
  """Per-example Tr(H_ce J J^T) with H_ce = diag(p) - p p^T, J masked: (c,)."""
  logits_fn, params, mask = replicated

  def one(x):
    grads, logits = _cotangent_grads(
        logits_fn, params, x, lambda z: (jnp.eye(z.shape[-1], dtype=jnp.float32), z))
    gram = 0.0
    for g in _masked_leaves(grads, mask):
      g = g.reshape(g.shape[0], -1)
      gram = gram + g @ g.T
    p = jax.nn.softmax(logits.astype(jnp.float32))
    h = jnp.diag(p) - jnp.outer(p, p)
    return jnp.sum(h * gram)

  return _vmap_examples(one, cpu_rewrites)(chunk["x"])


@functools.partial(jax.jit, static_argnames=("sampled", "cpu_rewrites"))
def _grads_chunk(replicated, chunk, *, sampled, cpu_rewrites):
  """Per-example gradients of -log softmax(logits)[y] (cross-entropy), masked: leaves (c, ...).

  Labels ``chunk["y"]``, or with ``sampled`` one label per example drawn as in
  :func:`_label_sqnorms_chunk`.
  """
  logits_fn, params, mask, key = replicated

  def one(x, y, k):
    if sampled:
      logits = jax.lax.stop_gradient(_example_logits(logits_fn, params, x))
      y = _example_labels(logits, y, k, 1)[0]

    def loss(p):
      return -jax.nn.log_softmax(_example_logits(logits_fn, p, x).astype(jnp.float32))[y]
    g = jax.grad(loss)(params)
    return g if mask is None else jax.tree.map(lambda a, m: a * m, g, mask)

  keys = _example_keys(key, chunk["index"]) if sampled else chunk["index"]
  return _vmap_examples(one, cpu_rewrites)(chunk["x"], chunk["y"], keys)


# ----------------------------------------------------------------------------------------------
# Input handling.


def _num_classes(logits_fn: LogitsFn, params: PyTree, x: Any) -> int:
  """Number of classes, from the logits' shape (traced, nothing computed)."""
  shape = np.shape(x)
  if len(shape) < 1 or shape[0] < 1:
    raise UserError(f"batch 'x' needs a leading example axis with at least one example, "
                    f"got shape {shape}")
  dtype = x.dtype if hasattr(x, "dtype") else np.result_type(x)
  out = jax.eval_shape(logits_fn, params, jax.ShapeDtypeStruct((1,) + shape[1:], dtype))
  if len(out.shape) != 2 or out.shape[0] != 1:
    raise UserError(f"logits_fn(params, x) must return (n, num_classes), got {out.shape} for n=1")
  return int(out.shape[1])


def _labels_of(batch: Batch, key: str, n: int, num_classes: int) -> np.ndarray:
  if key not in batch:
    raise UserError(f"batch has no labels {key!r} (keys: {sorted(batch)})")
  y = np.asarray(batch[key])
  if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
    raise UserError(f"labels {key!r} must be integers of shape ({n},), got {y.dtype} {y.shape}")
  if n and (y.min() < 0 or y.max() >= num_classes):
    raise UserError(f"labels {key!r} must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
  return y.astype(np.int32)


def _check_key(key: Any, what: str) -> jax.Array:
  if key is None:
    raise UserError(f"{what} needs a PRNG key (key=jax.random.key(0))")
  return key


def _check_positive(value: Any, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise UserError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


def _over_data(fn, replicated, data, *, logits_fn, params, label_key, chunk_size, devices,
               to_host=True):
  """Runs ``fn(replicated, chunk)`` over every example of ``data``; returns per-example results.

  Chunks carry ``"x"``, ``"index"`` (position of the example in ``data``, int32) and, when
  ``label_key`` is not None, ``"y"`` (the labels under that key, checked); otherwise ``"y"`` is a
  dummy 0. Returns (results with leading size N, N, num_classes).
  """
  chunk_size = _sharding.check_chunk_size(chunk_size)
  replicated = _sharding.replicate((as_pytree_fn(logits_fn), *replicated), devices)
  outs, offset, num_classes, pad_to = [], 0, None, None
  for batch in as_batches(data):
    if "x" not in batch:
      raise UserError(f"batch has no inputs 'x' (keys: {sorted(batch)})")
    x = batch["x"]
    if num_classes is None:
      num_classes = _num_classes(logits_fn, params, x)
    n = int(np.shape(x)[0])
    if n == 0:
      continue
    if label_key is None:
      y = np.zeros((n,), np.int32)
    else:
      y = _labels_of(batch, label_key, n, num_classes)
    arrays = {"x": x, "y": y, "index": np.arange(offset, offset + n, dtype=np.int32)}
    if pad_to is None:  # the first batch sets the chunk shape: a short last batch is padded
      pad_to = min(chunk_size, n)
    outs.append(_sharding.map_examples(fn, replicated, arrays, chunk_size=chunk_size,
                                       devices=devices, to_host=to_host, pad_to=pad_to))
    offset += n
  if not outs:
    raise UserError("data holds no examples")
  cat = np.concatenate if to_host else jnp.concatenate
  return jax.tree.map(lambda *xs: cat(xs, axis=0), *outs), offset, num_classes


# ----------------------------------------------------------------------------------------------
# Label handling shared by the public functions.


def labels_for_kind(kind: str) -> str:
  """The ``labels`` word for a study config's ``fisher.kind`` (``"exact" | "mc" | "empirical"``).

  ``"exact"`` -> ``"exact"``, ``"mc"`` -> ``"sampled"``, ``"empirical"`` -> ``"data"``.
  """
  if kind not in _LABELS_OF_KIND:
    raise UserError(f"kind must be one of {FISHER_KINDS}, got {kind!r}")
  return _LABELS_OF_KIND[kind]


def _check_labels(labels: Any, allowed: tuple[str, ...], what: str) -> str:
  if not isinstance(labels, str) or labels not in allowed:
    hint = (" (one label per example; labels='exact' is for the traces)"
            if labels == "exact" else "")
    raise UserError(f"{what}: labels must be one of {allowed}, got {labels!r}{hint}")
  return labels


def _label_setup(labels: str, key: Any, label_key: str, what: str):
  """(the key replicated to the chunks, the batch entry holding the labels or None)."""
  if labels == "sampled":
    return _check_key(key, f"{what} with labels='sampled'"), None
  return jnp.zeros((), jnp.uint32), (label_key if labels == "data" else None)


def _labels_extra(labels: str, label_key: str) -> dict:
  out = {"labels": labels}
  if labels == "data":
    out["label_key"] = label_key
  return out


# ----------------------------------------------------------------------------------------------
# Public API.


def per_example_grads(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], *,
    labels: str = "data", label_key: str = "y", key: jax.Array | None = None,
    mask: PyTree | None = None, chunk_size: int | None = None, devices: Devices = None,
    cpu_rewrites: bool | None = None,
) -> PyTree:
  """Per-example gradients g_i of the cross-entropy -log softmax(logits_fn(params, x_i))[y_i].

  Args:
    logits_fn: ``logits_fn(params, x) -> (n, C)`` (BatchNorm in eval mode).
    params: the params pytree.
    data: one batch dict with ``"x"`` (n, ...) (and the labels) or an iterable of them.
    labels: ``"data"`` (y_i = the batch entry ``label_key``) or ``"sampled"`` (one y_i per
      example drawn from softmax(logits), key ``fold_in(key, i)``).
    label_key: the batch entry holding the labels for ``labels="data"`` (e.g. ``"y_true"``).
    key: PRNG key, needed for ``labels="sampled"``.
    mask: restricts each gradient to the active coordinates (g * mask); None for dense.
    chunk_size: examples per jitted vmapped call (default 32).
    devices: None, ``"all"`` or a sequence of devices to shard the examples over.
    cpu_rewrites: grouped convolutions as batched dots (None: on CPU only; module doc).

  Returns:
    A pytree of the params' structure whose leaves have a leading axis N (the examples of
    ``data``, in order): leaf[i] is g_i, pointing uphill in the loss. Jax arrays.
  """
  labels = _check_labels(labels, PER_EXAMPLE_LABELS, "per_example_grads")
  mask = check_mask_matches_params(params, mask)
  key, source = _label_setup(labels, key, label_key, "per_example_grads")
  fn = _sharding.chunk_fn(_grads_chunk, sampled=labels == "sampled",
                          cpu_rewrites=_convs.resolve_cpu_rewrites(cpu_rewrites))
  grads, _, _ = _over_data(fn, (params, mask, key), data, logits_fn=logits_fn, params=params,
                           label_key=source, chunk_size=chunk_size, devices=devices,
                           to_host=False)
  return grads


def per_example_grad_norms(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], *,
    labels: str = "data", label_key: str = "y", key: jax.Array | None = None,
    mask: PyTree | None = None, chunk_size: int | None = None, squared: bool = True,
    devices: Devices = None, cpu_rewrites: bool | None = None,
) -> np.ndarray:
  """Per-example norms of the cross-entropy gradient (= of grad_params log p_y(x_i)).

  **By default these are SQUARED norms** ||g_i||^2 (``squared=True``, the default kept for the
  callers); pass ``squared=False`` for ||g_i||. Not averaged: one value per example.

  Args:
    logits_fn, params, data, labels, label_key, key, mask, chunk_size, devices, cpu_rewrites:
      as in :func:`per_example_grads`.
    squared: return ||g_i||^2 (True, default) or ||g_i||.

  Returns:
    float64 numpy array (N,), N the number of examples in ``data``, in data order: ||g_i||^2
    (the sum over all active coordinates of g_i^2) or ||g_i||. Per-block squared norms from the
    same gradients: :func:`per_example_sqnorms_by_block`.
  """
  sq = _leaf_sqnorms(logits_fn, params, data, labels=labels, label_key=label_key, key=key,
                     mask=mask, chunk_size=chunk_size, devices=devices,
                     cpu_rewrites=cpu_rewrites, what="per_example_grad_norms").sum(axis=1)
  return sq if squared else np.sqrt(sq)


def _leaf_sqnorms(logits_fn, params, data, *, labels, label_key, key, mask, chunk_size, devices,
                  cpu_rewrites, what) -> np.ndarray:
  """Per-example, per-leaf squared gradient norms (N, L) float64 (one label per example)."""
  labels = _check_labels(labels, PER_EXAMPLE_LABELS, what)
  mask = check_mask_matches_params(params, mask)
  key, source = _label_setup(labels, key, label_key, what)
  fn = _sharding.chunk_fn(_label_sqnorms_chunk, num_samples=int(labels == "sampled"),
                          cpu_rewrites=_convs.resolve_cpu_rewrites(cpu_rewrites))
  sq, _, _ = _over_data(fn, (params, mask, key), data, logits_fn=logits_fn, params=params,
                        label_key=source, chunk_size=chunk_size, devices=devices)
  return sq[:, 0].astype(np.float64)


class BlockSqNorms(NamedTuple):
  """Per-example SQUARED gradient norms, total and per block (:func:`per_example_sqnorms_by_block`).

  ``total`` (N,) float64 ||g_i||^2; ``blocks`` {block name: (N,) float64 ||g_i restricted to the
  block||^2}; the blocks sum to ``total`` (float64 rounding). Not averaged over examples.
  """
  total: np.ndarray
  blocks: dict


def per_example_sqnorms_by_block(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], *,
    blocks: _blocks.BlockSpec = "layer", labels: str = "data", label_key: str = "y",
    key: jax.Array | None = None, mask: PyTree | None = None, chunk_size: int | None = None,
    devices: Devices = None, cpu_rewrites: bool | None = None,
) -> BlockSqNorms:
  """Per-example squared norms ||g_i||^2 broken down into blocks of params, in one pass.

  The same jitted program (and compilation) as :func:`per_example_grad_norms`, which computes
  per-leaf squared norms and sums them; here the leaves are summed per block instead.
  ``blocks``: ``snnjax.estimators.blocks`` (``"leaf"``, ``"layer"``, a mapping or a callable).
  Other arguments as in :func:`per_example_grads`.
  """
  parts = _blocks.make_blocks(params, blocks)
  sq = _leaf_sqnorms(logits_fn, params, data, labels=labels, label_key=label_key, key=key,
                     mask=mask, chunk_size=chunk_size, devices=devices,
                     cpu_rewrites=cpu_rewrites, what="per_example_sqnorms_by_block")
  per_block = parts.sum_leaves(sq)
  return BlockSqNorms(total=sq.sum(axis=1),
                      blocks={name: per_block[:, b] for b, name in enumerate(parts.names)})


def per_example_grad_dots(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], direction: PyTree, *,
    labels: str = "data", label_key: str = "y", key: jax.Array | None = None,
    mask: PyTree | None = None, chunk_size: int | None = None, devices: Devices = None,
    cpu_rewrites: bool | None = None,
) -> GradDots:
  """Per-example <g_i, direction> and ||g_i||, g_i the (masked) cross-entropy gradient.

  The same per-example machinery as :func:`per_example_grad_norms` (its ``norms`` are the square
  roots of that function's values), without materializing the gradients: each example's
  gradient is contracted with ``direction`` inside the jitted chunk.

  Args:
    logits_fn, params, data, labels, label_key, key, mask, chunk_size, devices, cpu_rewrites:
      as in :func:`per_example_grads`.
    direction: a pytree like ``params`` (v). With a mask, <mask * g_i, v> is taken, so masking v
      as well changes nothing.

  Returns:
    ``GradDots(dots, norms)``: float64 numpy arrays (N,) of <mask * g_i, v> and ||mask * g_i||,
    in data order (g_i points uphill in the loss: <-g_i, v> = -dots).
  """
  labels = _check_labels(labels, PER_EXAMPLE_LABELS, "per_example_grad_dots")
  mask = check_mask_matches_params(params, mask)
  if direction is None:
    raise UserError("per_example_grad_dots needs a direction (a pytree like params)")
  direction = check_mask_matches_params(params, direction, what="direction")
  key, source = _label_setup(labels, key, label_key, "per_example_grad_dots")
  fn = _sharding.chunk_fn(_label_dots_chunk, num_samples=int(labels == "sampled"),
                          cpu_rewrites=_convs.resolve_cpu_rewrites(cpu_rewrites))
  (dots, sq), _, _ = _over_data(fn, (params, mask, key, direction), data, logits_fn=logits_fn,
                                params=params, label_key=source, chunk_size=chunk_size,
                                devices=devices)
  return GradDots(np.asarray(dots, np.float64), np.sqrt(np.asarray(sq, np.float64)))


def fisher_trace(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], *,
    labels: str = "exact", key: jax.Array | None = None, mask: PyTree | None = None,
    num_samples: int = 1, chunk_size: int | None = None, class_chunk_size: int | None = None,
    label_key: str = "y", devices: Devices = None, cpu_rewrites: bool | None = None,
    return_per_example: bool = False, blocks: _blocks.BlockSpec | None = None,
) -> Estimate:
  """Trace of the Fisher information, a per-example mean over the examples of ``data``.

  The value is a SUM over the active coordinates (a trace) of the per-example Fisher, AVERAGED
  over the examples: mean_i E_y ||grad log p_y(x_i)||^2 (squared norms, averaged).

  Args:
    logits_fn: ``logits_fn(params, x) -> (n, C)`` (BatchNorm in eval mode).
    params: the params pytree.
    data: one batch or an iterable of batches.
    labels: ``"exact"`` (true Fisher, exact expectation over the C classes), ``"sampled"`` (true
      Fisher, ``num_samples`` labels per example sampled from the model) or ``"data"`` (dataset
      labels under ``label_key``: the empirical Fisher, not the model's Fisher). A study config's
      ``fisher.kind`` maps to these with :func:`labels_for_kind`.
    key: PRNG key, needed for ``labels="sampled"``.
    mask: restricts the gradients to the active coordinates (e.g. a sparsity mask combined with
      ``param_subsets.param_subset_mask(params, "kernels")``); None for all params.
    num_samples: sampled labels per example for ``labels="sampled"`` (must be 1 otherwise).
    chunk_size: examples per jitted vmapped call (default 32). Memory per call is about
      chunk_size x (classes per call) x num_params floats.
    class_chunk_size: for ``labels="exact"``, classes per call (default: all C at once); smaller
      values bound memory at the cost of recomputing the forward pass once per class chunk.
    label_key: the batch entry holding the labels for ``labels="data"``.
    devices: None, ``"all"`` or a sequence of devices to shard the examples over.
    cpu_rewrites: grouped convolutions as batched dots (None: on CPU only; module doc).
    return_per_example: also return the per-example traces as ``extra["per_example"]``.
    blocks: optional breakdown (``snnjax.estimators.blocks``): ``Estimate.blocks`` then holds
      Tr(F_BB) per block, from the same per-example gradients (and sampled labels) as the total,
      with the same kind of stderr; they sum to ``value``. No extra pass or compilation.

  Returns:
    An Estimate: ``value`` the mean over examples of the per-example trace. ``stderr``: None for
    ``"exact"`` and ``"data"`` (exact for the given examples); for ``"sampled"`` the standard
    error std_i(v_i) / sqrt(N) of the per-example values v_i (each a mean over its samples),
    which covers the label sampling and the sampling of the examples. ``extra``: ``estimator``,
    ``labels`` (the word above; ``label_key`` with ``"data"``), ``num_classes``,
    ``num_active_params`` (measured coordinates), ``example_std`` (std of the per-example
    values), for ``"sampled"`` with num_samples >= 2 ``sampling_stderr`` (the standard error from
    the label sampling alone, sqrt(sum_i var_s / S) / N, the error against the exact trace of the
    same examples), and ``per_example`` when asked.
  """
  labels = _check_labels(labels, LABELS, "fisher_trace")
  num_samples = _check_positive(num_samples, "num_samples")
  if labels != "sampled" and num_samples != 1:
    raise UserError(f"num_samples applies to labels='sampled' only (got labels={labels!r})")
  mask = check_mask_matches_params(params, mask)
  rewrites = _convs.resolve_cpu_rewrites(cpu_rewrites)
  common = dict(logits_fn=logits_fn, params=params, chunk_size=chunk_size, devices=devices)
  extra: dict = {"estimator": "fisher_trace", **_labels_extra(labels, label_key),
                 "num_active_params": active_count(params, mask)}
  stderr, num_probes = None, 0

  if labels == "exact":
    data = list(as_batches(data))
    num_classes = None
    for batch in data:
      if "x" in batch:
        num_classes = _num_classes(logits_fn, params, batch["x"])
        break
    if num_classes is None:
      raise UserError("data holds no examples")
    step = num_classes if class_chunk_size is None else _check_positive(
        class_chunk_size, "class_chunk_size")
    fn = _sharding.chunk_fn(_exact_fisher_chunk, cpu_rewrites=rewrites)
    per_example, n = 0.0, 0
    for start in range(0, num_classes, step):
      classes = jnp.arange(start, min(start + step, num_classes), dtype=jnp.int32)
      part, n, _ = _over_data(fn, (params, mask, classes), data, label_key=None, **common)
      per_example = per_example + part.astype(np.float64)  # (N, L)
    per_leaf = per_example
    per_example = per_leaf.sum(axis=1)
  else:
    key, source = _label_setup(labels, key, label_key, "fisher_trace")
    fn = _sharding.chunk_fn(_label_sqnorms_chunk, cpu_rewrites=rewrites,
                            num_samples=num_samples if labels == "sampled" else 0)
    samples, n, num_classes = _over_data(fn, (params, mask, key), data, label_key=source,
                                         **common)
    samples = samples.astype(np.float64)  # (N, S, L)
    per_leaf = samples.mean(axis=1)
    samples = samples.sum(axis=2)
    per_example = samples.mean(axis=1)
    if labels == "sampled":
      _, stderr = mean_and_stderr(per_example)
      num_probes = num_samples
      if num_samples >= 2:
        extra["sampling_stderr"] = float(
            np.sqrt(np.sum(samples.var(axis=1, ddof=1) / num_samples)) / n)

  value, _ = mean_and_stderr(per_example)
  extra["num_classes"] = num_classes
  extra["example_std"] = float(per_example.std(ddof=1)) if n > 1 else None
  if return_per_example:
    extra["per_example"] = per_example
  block_ests = None
  if blocks is not None:
    parts = _blocks.make_blocks(params, blocks)
    per_block = parts.sum_leaves(per_leaf)  # (N, B)
    block_ests = {}
    for b, name in enumerate(parts.names):
      v, se = mean_and_stderr(per_block[:, b])
      block_ests[name] = Estimate(value=v, stderr=se if labels == "sampled" else None,
                                  num_examples=n, num_probes=num_probes,
                                  extra={"labels": labels})
  return Estimate(value=value, stderr=stderr, num_examples=n, num_probes=num_probes, extra=extra,
                  blocks=block_ests)


def ggn_trace(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], *,
    labels: str = "exact", mask: PyTree | None = None, chunk_size: int | None = None,
    devices: Devices = None, cpu_rewrites: bool | None = None, return_per_example: bool = False,
) -> Estimate:
  """Trace of the Gauss-Newton matrix of the softmax cross-entropy, per-example mean.

  Per example, Tr(J^T H J) = Tr(H J J^T) with H = diag(p) - p p^T and J the (masked) Jacobian of
  the logits in the params, via the C x C Gram matrix of the rows J^T e_c. For softmax
  cross-entropy this equals ``fisher_trace(labels="exact")``; it is computed through a different
  formula as a cross-check. H does not depend on the labels: ``labels`` accepts ``"exact"`` only
  (the GGN is the exact expectation over the model's labels) and is there for the shared
  vocabulary. Other arguments as in :func:`fisher_trace`.

  Returns:
    An Estimate (``stderr`` None: exact for the given examples), with ``extra`` as for
    ``fisher_trace(labels="exact")``.
  """
  _check_labels(labels, ("exact",), "ggn_trace")
  mask = check_mask_matches_params(params, mask)
  fn = _sharding.chunk_fn(_ggn_chunk, cpu_rewrites=_convs.resolve_cpu_rewrites(cpu_rewrites))
  per_example, n, num_classes = _over_data(
      fn, (params, mask), data, logits_fn=logits_fn, params=params, label_key=None,
      chunk_size=chunk_size, devices=devices)
  per_example = per_example.astype(np.float64)
  extra = {"estimator": "ggn_trace", "labels": "exact", "num_classes": num_classes,
           "num_active_params": active_count(params, mask),
           "example_std": float(per_example.std(ddof=1)) if n > 1 else None}
  if return_per_example:
    extra["per_example"] = per_example
  value, _ = mean_and_stderr(per_example)
  return Estimate(value=value, stderr=None, num_examples=n, extra=extra)
