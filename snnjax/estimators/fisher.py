"""Per-example gradients and the trace of the Fisher information of a softmax classifier.

For an example x with logits z = f(params, x) (C classes), p = softmax(z) and the Jacobian
J = dz/dparams (C, P), the gradient of the log-likelihood of class c is

  grad_params log p_c(x) = J^T (e_c - p),

one VJP of the per-example logits function with the cotangent e_c - p (the negative of the
cross-entropy gradient; the sign does not matter for norms). Traces, per-example means over the
examples of ``data``:

* ``kind="exact"``: the true Fisher, expectation over the model's own labels computed exactly,
  Tr(F) = mean_i sum_c p_c(x_i) ||grad log p_c(x_i)||^2 (C VJPs per example, vmapped over the
  classes, optionally in chunks of classes);
* ``kind="mc"``: the true Fisher by Monte Carlo, ``num_samples`` labels per example sampled from
  softmax(z): mean_i mean_s ||grad log p_{y_is}(x_i)||^2 (the study: 1000 examples x 5 samples);
* ``kind="empirical"``: the "empirical Fisher" with the dataset labels, mean_i ||grad log
  p_{y_i}(x_i)||^2. It is the mean squared per-example gradient norm, not the Fisher of the model.

:func:`ggn_trace` computes Tr(J^T H J) with H = diag(p) - p p^T, the Hessian of the cross-entropy
in the logits, through the per-example Gram matrix J J^T; for softmax cross-entropy it equals the
exact Fisher trace (a cross-check that shares no formula with ``kind="exact"``).

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
  over ``devices`` (see ``snnjax.estimators._sharding``); averages are taken on the host in
  float64. On CPU the chunk's grouped convolutions (the per-example kernel gradients that
  ``vmap`` makes) are computed as batched dots (``snnjax.estimators._convs``): same values,
  ~1.45x faster per-example gradients for a ResNet.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import UserError
from snnjax.estimators import _convs, _sharding
from snnjax.estimators._base import (Batch, Estimate, PyTree, active_count, as_batches,
                                     as_pytree_fn,
                                     check_mask_matches_params, mean_and_stderr)

LogitsFn = Callable[[PyTree, jax.Array], jax.Array]
Devices = None | str | Sequence[jax.Device]
FISHER_KINDS = ("exact", "mc", "empirical")


# ----------------------------------------------------------------------------------------------
# Per-example pieces (traced inside jit; one example at a time, vmapped by the callers).


def _example_logits(logits_fn: LogitsFn, params: PyTree, x: jax.Array) -> jax.Array:
  """Logits (C,) of one example x (its shape without the batch axis)."""
  return logits_fn(params, x[None])[0]


def _masked_sqnorms(grads: PyTree, mask: PyTree | None) -> jax.Array:
  """Squared norms (k,) of a pytree of k stacked gradients (leaves (k, ...)), mask applied."""
  total = 0.0
  leaves = jax.tree.leaves(grads)
  mask_leaves = [None] * len(leaves) if mask is None else jax.tree.leaves(mask)
  for g, m in zip(leaves, mask_leaves):
    if m is not None:
      g = g * m
    total = total + jnp.sum(jnp.square(g).reshape(g.shape[0], -1), axis=1)
  return total


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


def _vmap_examples(one: Callable) -> Callable:
  """``jax.vmap(one)``; on CPU with its grouped convolutions as batched dots (see ``_convs``)."""
  batched = jax.vmap(one)
  return _convs.grouped_convs_as_dots(batched) if jax.default_backend() == "cpu" else batched


def _example_keys(key: jax.Array, index: jax.Array) -> jax.Array:
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(index)


@jax.jit
def _exact_fisher_chunk(replicated, chunk):
  """Per-example sum over the classes ``classes`` of p_c ||mask * grad log p_c||^2: (c,)."""
  logits_fn, params, mask, classes = replicated

  def one(x):
    def make(logits):
      p = jax.nn.softmax(logits.astype(jnp.float32))
      return jax.nn.one_hot(classes, logits.shape[-1], dtype=jnp.float32) - p[None, :], p[classes]
    grads, weights = _cotangent_grads(logits_fn, params, x, make)
    return jnp.sum(weights * _masked_sqnorms(grads, mask))

  return _vmap_examples(one)(chunk["x"])


@functools.partial(jax.jit, static_argnames=("num_samples",))
def _label_sqnorms_chunk(replicated, chunk, *, num_samples):
  """||mask * grad log p_y||^2 per example and label: (c, k).

  Labels are ``chunk["y"]`` (c,) when ``num_samples`` is 0, else ``num_samples`` labels per
  example sampled from the model's softmax with the key ``fold_in(key, chunk["index"][i])``.
  """
  logits_fn, params, mask, key = replicated

  def one(x, y, k):
    def make(logits):
      if num_samples:
        labels = jax.random.categorical(k, logits.astype(jnp.float32), shape=(num_samples,))
      else:
        labels = y[None]
      return _label_cotangents(logits, labels), None
    grads, _ = _cotangent_grads(logits_fn, params, x, make)
    return _masked_sqnorms(grads, mask)

  keys = _example_keys(key, chunk["index"]) if num_samples else chunk["index"]
  return _vmap_examples(one)(chunk["x"], chunk["y"], keys)


@jax.jit
def _ggn_chunk(replicated, chunk):
  """Per-example Tr(H_ce J J^T) with H_ce = diag(p) - p p^T, J masked: (c,)."""
  logits_fn, params, mask = replicated

  def one(x):
    grads, logits = _cotangent_grads(
        logits_fn, params, x, lambda z: (jnp.eye(z.shape[-1], dtype=jnp.float32), z))
    leaves = jax.tree.leaves(grads)
    mask_leaves = [None] * len(leaves) if mask is None else jax.tree.leaves(mask)
    gram = 0.0
    for g, m in zip(leaves, mask_leaves):
      if m is not None:
        g = g * m
      g = g.reshape(g.shape[0], -1)
      gram = gram + g @ g.T
    p = jax.nn.softmax(logits.astype(jnp.float32))
    h = jnp.diag(p) - jnp.outer(p, p)
    return jnp.sum(h * gram)

  return _vmap_examples(one)(chunk["x"])


@jax.jit
def _grads_chunk(replicated, chunk):
  """Per-example gradients of -log softmax(logits)[y] (cross-entropy), masked: leaves (c, ...)."""
  logits_fn, params, mask = replicated

  def one(x, y):
    def loss(p):
      return -jax.nn.log_softmax(_example_logits(logits_fn, p, x).astype(jnp.float32))[y]
    g = jax.grad(loss)(params)
    return g if mask is None else jax.tree.map(lambda a, m: a * m, g, mask)

  return _vmap_examples(one)(chunk["x"], chunk["y"])


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
  outs, offset, num_classes = [], 0, None
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
    outs.append(_sharding.map_examples(fn, replicated, arrays, chunk_size=chunk_size,
                                       devices=devices, to_host=to_host))
    offset += n
  if not outs:
    raise UserError("data holds no examples")
  cat = np.concatenate if to_host else jnp.concatenate
  return jax.tree.map(lambda *xs: cat(xs, axis=0), *outs), offset, num_classes


# ----------------------------------------------------------------------------------------------
# Public API.


def per_example_grads(
    logits_fn: LogitsFn, params: PyTree, batch: Batch, *, labels: Any = None,
    mask: PyTree | None = None, chunk_size: int | None = None, devices: Devices = None,
) -> PyTree:
  """Per-example gradients of the cross-entropy -log softmax(logits_fn(params, x_i))[y_i].

  Args:
    logits_fn: ``logits_fn(params, x) -> (n, C)`` (BatchNorm in eval mode).
    params: the params pytree.
    batch: a batch dict with ``"x"`` (n, ...) and, unless ``labels`` is given, ``"y"`` (n,).
    labels: None (``batch["y"]``), the name of another label entry of the batch (e.g.
      ``"y_true"``), or an integer array (n,).
    mask: restricts each gradient to the active coordinates (g * mask); None for dense.
    chunk_size: examples per jitted vmapped call (default 32).
    devices: None, ``"all"`` or a sequence of devices to shard the examples over.

  Returns:
    A pytree of the params' structure whose leaves have a leading axis n: leaf[i] is the gradient
    for example i (the gradient of the cross-entropy, pointing uphill in the loss).
  """
  mask = check_mask_matches_params(params, mask)
  if labels is None or isinstance(labels, str):
    label_key = "y" if labels is None else labels
    data = batch
  else:
    if "x" not in batch:
      raise UserError(f"batch has no inputs 'x' (keys: {sorted(batch)})")
    data, label_key = {"x": batch["x"], "_labels": labels}, "_labels"
  fn = _sharding.chunk_fn(_grads_chunk)
  grads, _, _ = _over_data(fn, (params, mask), data, logits_fn=logits_fn, params=params,
                           label_key=label_key, chunk_size=chunk_size, devices=devices,
                           to_host=False)
  return grads


def per_example_grad_norms(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], *,
    labels: str = "data", key: jax.Array | None = None, mask: PyTree | None = None,
    chunk_size: int | None = None, squared: bool = True, label_key: str = "y",
    devices: Devices = None,
) -> np.ndarray:
  """Per-example norms of grad_params log p_y(x_i), i.e. of the cross-entropy gradient.

  Args:
    logits_fn: ``logits_fn(params, x) -> (n, C)`` (BatchNorm in eval mode).
    params: the params pytree.
    data: one batch or an iterable of batches.
    labels: ``"data"`` (the batch's labels under ``label_key``) or ``"sampled"`` (one label per
      example from softmax(logits), key ``fold_in(key, i)`` for the i-th example of ``data``).
    key: PRNG key, needed for ``labels="sampled"``.
    mask: restricts the gradients to the active coordinates; None for dense.
    chunk_size: examples per jitted vmapped call (default 32).
    squared: return ||g_i||^2 (True) or ||g_i||.
    label_key: the batch entry holding the labels for ``labels="data"`` (e.g. ``"y_true"``).
    devices: None, ``"all"`` or a sequence of devices to shard the examples over.

  Returns:
    float64 numpy array (N,), N the number of examples in ``data``, in data order.
  """
  mask = check_mask_matches_params(params, mask)
  if labels == "data":
    num_samples, key = 0, jnp.zeros((), jnp.uint32)
  elif labels == "sampled":
    num_samples, key, label_key = 1, _check_key(key, "labels='sampled'"), None
  else:
    raise UserError(f"labels must be 'data' or 'sampled', got {labels!r}")
  fn = _sharding.chunk_fn(_label_sqnorms_chunk, num_samples=num_samples)
  sq, _, _ = _over_data(fn, (params, mask, key), data, logits_fn=logits_fn, params=params,
                        label_key=label_key, chunk_size=chunk_size, devices=devices)
  sq = sq[:, 0].astype(np.float64)
  return sq if squared else np.sqrt(sq)


def fisher_trace(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], *, kind: str = "exact",
    key: jax.Array | None = None, mask: PyTree | None = None, num_samples: int = 1,
    chunk_size: int | None = None, class_chunk_size: int | None = None, label_key: str = "y",
    devices: Devices = None, return_per_example: bool = False,
) -> Estimate:
  """Trace of the Fisher information, a per-example mean over the examples of ``data``.

  Args:
    logits_fn: ``logits_fn(params, x) -> (n, C)`` (BatchNorm in eval mode).
    params: the params pytree.
    data: one batch or an iterable of batches.
    kind: ``"exact"`` (true Fisher, exact expectation over the C classes), ``"mc"`` (true
      Fisher, ``num_samples`` labels per example sampled from the model) or ``"empirical"``
      (dataset labels under ``label_key``: the empirical Fisher, not the model's Fisher).
    key: PRNG key, needed for ``kind="mc"``.
    mask: restricts the gradients to the active coordinates (e.g. a sparsity mask combined with
      ``param_subsets.param_subset_mask(params, "kernels")``); None for all params.
    num_samples: sampled labels per example for ``kind="mc"`` (must be 1 otherwise).
    chunk_size: examples per jitted vmapped call (default 32). Memory per call is about
      chunk_size x (classes per call) x num_params floats.
    class_chunk_size: for ``kind="exact"``, classes per call (default: all C at once); smaller
      values bound memory at the cost of recomputing the forward pass once per class chunk.
    label_key: the batch entry holding the labels for ``kind="empirical"``.
    devices: None, ``"all"`` or a sequence of devices to shard the examples over.
    return_per_example: also return the per-example traces as ``extra["per_example"]``.

  Returns:
    An Estimate: ``value`` the mean over examples of the per-example trace. ``stderr``: None for
    ``"exact"`` and ``"empirical"`` (exact for the given examples); for ``"mc"`` the standard
    error std_i(v_i) / sqrt(N) of the per-example values v_i (each a mean over its samples),
    which covers the label sampling and the sampling of the examples. ``extra``: ``kind``,
    ``labels`` (how the labels were obtained), ``num_classes``, ``num_active_params`` (measured
    coordinates), ``example_std`` (std of the per-example values), for ``"mc"`` with
    num_samples >= 2 ``sampling_stderr`` (the standard error from the label sampling alone,
    sqrt(sum_i var_s / S) / N, the error against the exact trace of the same examples), and
    ``per_example`` when asked.
  """
  if kind not in FISHER_KINDS:
    raise UserError(f"kind must be one of {FISHER_KINDS}, got {kind!r}")
  num_samples = _check_positive(num_samples, "num_samples")
  if kind != "mc" and num_samples != 1:
    raise UserError(f"num_samples applies to kind='mc' only (got kind={kind!r})")
  mask = check_mask_matches_params(params, mask)
  common = dict(logits_fn=logits_fn, params=params, chunk_size=chunk_size, devices=devices)
  extra: dict = {"estimator": "fisher_trace", "kind": kind,
                 "num_active_params": active_count(params, mask)}
  stderr, num_probes = None, 0

  if kind == "exact":
    extra["labels"] = "exact expectation over the model's softmax"
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
    fn = _sharding.chunk_fn(_exact_fisher_chunk)
    per_example, n = 0.0, 0
    for start in range(0, num_classes, step):
      classes = jnp.arange(start, min(start + step, num_classes), dtype=jnp.int32)
      part, n, _ = _over_data(fn, (params, mask, classes), data, label_key=None, **common)
      per_example = per_example + part.astype(np.float64)
  elif kind == "mc":
    extra["labels"] = "sampled from the model's softmax"
    key = _check_key(key, "kind='mc'")
    fn = _sharding.chunk_fn(_label_sqnorms_chunk, num_samples=num_samples)
    samples, n, num_classes = _over_data(fn, (params, mask, key), data, label_key=None, **common)
    samples = samples.astype(np.float64)
    per_example = samples.mean(axis=1)
    _, stderr = mean_and_stderr(per_example)
    num_probes = num_samples
    if num_samples >= 2:
      extra["sampling_stderr"] = float(
          np.sqrt(np.sum(samples.var(axis=1, ddof=1) / num_samples)) / n)
  else:
    extra["labels"] = f"dataset labels {label_key!r} (empirical Fisher)"
    fn = _sharding.chunk_fn(_label_sqnorms_chunk, num_samples=0)
    samples, n, num_classes = _over_data(fn, (params, mask, jnp.zeros((), jnp.uint32)), data,
                                         label_key=label_key, **common)
    per_example = samples[:, 0].astype(np.float64)

  value, _ = mean_and_stderr(per_example)
  extra["num_classes"] = num_classes
  extra["example_std"] = float(per_example.std(ddof=1)) if n > 1 else None
  if return_per_example:
    extra["per_example"] = per_example
  return Estimate(value=value, stderr=stderr, num_examples=n, num_probes=num_probes, extra=extra)


def ggn_trace(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], *,
    mask: PyTree | None = None, chunk_size: int | None = None, devices: Devices = None,
    return_per_example: bool = False,
) -> Estimate:
  """Trace of the Gauss-Newton matrix of the softmax cross-entropy, per-example mean.

  Per example, Tr(J^T H J) = Tr(H J J^T) with H = diag(p) - p p^T and J the (masked) Jacobian of
  the logits in the params, via the C x C Gram matrix of the rows J^T e_c. For softmax
  cross-entropy this equals ``fisher_trace(kind="exact")``; it is computed through a different
  formula as a cross-check. Arguments as in :func:`fisher_trace`.

  Returns:
    An Estimate (``stderr`` None: exact for the given examples), with ``extra`` as for
    ``fisher_trace(kind="exact")``.
  """
  mask = check_mask_matches_params(params, mask)
  fn = _sharding.chunk_fn(_ggn_chunk)
  per_example, n, num_classes = _over_data(
      fn, (params, mask), data, logits_fn=logits_fn, params=params, label_key=None,
      chunk_size=chunk_size, devices=devices)
  per_example = per_example.astype(np.float64)
  extra = {"estimator": "ggn_trace", "num_classes": num_classes,
           "num_active_params": active_count(params, mask),
           "example_std": float(per_example.std(ddof=1)) if n > 1 else None}
  if return_per_example:
    extra["per_example"] = per_example
  value, _ = mean_and_stderr(per_example)
  return Estimate(value=value, stderr=None, num_examples=n, extra=extra)
