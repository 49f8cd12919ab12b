"""Per-example gradients and the trace of the Fisher information / GGN, for any likelihood.

For an example x with outputs z = f(params, x) and the Jacobian J = dz/dparams, the gradient of
the log-likelihood of a label y is J^T s(y), s(y) = d log p(y | z) / dz the likelihood's score
(``snnjax.estimators.likelihoods``: categorical over the last axis (the default; for a softmax
classifier s = e_y - softmax(z)), Gaussian, Bernoulli or the user's), one VJP of the per-example
outputs function. ``likelihood=`` picks it in every function here; the per-example Fisher and
GGN are divided by the outputs' positions (1 for (n, C); T for token outputs (n, T, V): a
per-token average). Inputs and labels are found in any batch pytree with ``x=`` / ``y=``
(``_base.select``; default ``batch["x"]`` / ``batch["y"]`` or a pair ``(x, y)``).

**Labels: one vocabulary.** Every function here takes ``labels=``, which says which labels the
gradients are taken for:

* ``"exact"``: the expectation over the model's own labels, computed exactly (the likelihood's
  output-space Fisher factor: for C classes C VJPs per example, vmapped, optionally in chunks).
  Traces and diagonals only
  (:func:`fisher_trace`, :func:`ggn_trace`): a per-example gradient needs one label;
* ``"sampled"``: labels drawn from softmax(z), ``num_samples`` per example for
  :func:`fisher_trace` (the study: 1000 examples x 5 samples), one per example elsewhere; example
  i of ``data`` uses the key ``fold_in(key, i)``;
* ``"data"``: the dataset labels, selected by ``y=`` (older name ``label_key``; default ``"y"``;
  e.g. ``"y_true"`` for the clean labels under label noise).

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

* ``logits_fn(params, x) -> (n, ...)``; each example is evaluated alone as ``logits_fn(params,
  x[None])[0]``, so BatchNorm must be in eval mode: checked before any work (example 0 alone
  against examples 0 and 1 together, ``_examples``), a UserError otherwise;
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
import warnings
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import UserError
from snnjax.estimators import _convs, _examples, _sharding
from snnjax.estimators import blocks as _blocks
from snnjax.estimators import likelihoods as _likelihoods
from snnjax.estimators.likelihoods import Likelihood
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


def _example_logits(logits_fn: LogitsFn, params: PyTree, x: Any) -> jax.Array:
  """Outputs (*S) of one example x (a pytree of its arrays without the batch axis)."""
  return logits_fn(params, jax.tree.map(lambda a: a[None], x))[0]


def _masked_leaves(grads: PyTree, mask: PyTree | None) -> list:
  """The leaves (k, ...) of k stacked gradients, mask applied."""
  leaves = jax.tree.leaves(grads)
  if mask is None:
    return leaves
  return [g * m for g, m in zip(leaves, jax.tree.leaves(mask))]


def _masked_sqnorms(grads: PyTree, mask: PyTree | None) -> jax.Array:
  """Squared norms (k,) of a pytree of k stacked gradients (leaves (k, ...)), mask applied."""
  return jnp.sum(_masked_leaf_sqnorms(grads, mask), axis=1)


def _row_sums(a: jax.Array) -> jax.Array:
  """Sums (k,) over the rows of a (k, m), pairwise: halves added until <= 1024 columns remain.

  Inside the per-example programs a leaf's plain ``jnp.sum(g ** 2)`` over 36,864 terms (a
  3x3x64x64 kernel) came out 7.4e-6 relative off, against 1.7e-6 for the same program's
  gradients summed outside (BENCHMARKS.md section 14): XLA:CPU added them nearly in sequence.
  Folding the row in halves (elementwise adds of slices) fixes a pairwise order: 1.6e-6, same
  speed.
  """
  while a.shape[1] > 1024:
    if a.shape[1] % 2:
      a = jnp.pad(a, ((0, 0), (0, 1)))
    half = a.shape[1] // 2
    a = a[:, :half] + a[:, half:]
  return jnp.sum(a, axis=1)


def _masked_leaf_sqnorms(grads: PyTree, mask: PyTree | None) -> jax.Array:
  """Per-leaf squared norms (k, L) of k stacked gradients (leaves (k, ...)), mask applied."""
  return jnp.stack([_row_sums(jnp.square(g).reshape(g.shape[0], -1))
                    for g in _masked_leaves(grads, mask)], axis=1)


def _cotangent_grads(logits_fn, params, x, make_cotangents):
  """Gradients J^T u_k of one example for cotangents built from its outputs.

  Returns (grads, aux): grads a pytree with leaves (k, *param_shape); ``make_cotangents(out)``
  returns ((k, *S) cotangents, aux).
  """
  out, vjp_fn = jax.vjp(lambda p: _example_logits(logits_fn, p, x), params)
  cotangents, aux = make_cotangents(out)
  grads = jax.vmap(lambda u: vjp_fn(u.astype(out.dtype))[0])(cotangents)
  return grads, aux


def _example_labels(lik: Likelihood, out: jax.Array, y: Any, k: jax.Array, num_samples: int):
  """Labels stacked on a leading axis (max(num_samples, 1)): ``y`` when ``num_samples`` is 0,
  else ``num_samples`` drawn from the likelihood with key k."""
  if num_samples:
    return lik.sample(k, jax.lax.stop_gradient(out), num_samples)
  return jax.tree.map(lambda a: a[None], y)


def _label_scores(lik: Likelihood, out: jax.Array, labels: Any) -> jax.Array:
  """Cotangents (k, *S): the scores d log p(y_k | out) / d out of k stacked labels."""
  return jax.vmap(lambda yk: lik.score(out, yk))(labels)


def _vmap_examples(one: Callable, cpu_rewrites: bool) -> Callable:
  """``jax.vmap(one)``; with ``cpu_rewrites``, its grouped convolutions as batched dots."""
  batched = jax.vmap(one)
  return _convs.grouped_convs_as_dots(batched) if cpu_rewrites else batched


def _example_keys(key: jax.Array, index: jax.Array) -> jax.Array:
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(index)


@functools.partial(jax.jit, static_argnames=("lik", "rows", "cpu_rewrites"))
def _exact_fisher_chunk(replicated, chunk, *, lik, rows, cpu_rewrites):
  """Per-example, per-leaf sum over the factor rows ``rows`` (start, stop) of
  w_k ||mask * J^T u_k||^2 (``Likelihood.fisher_factor``): (c, L), not divided by positions."""
  logits_fn, params, mask = replicated

  def one(x):
    def make(out):
      u, w = lik.fisher_factor(out)
      return u[rows[0]:rows[1]], w[rows[0]:rows[1]]
    grads, weights = _cotangent_grads(logits_fn, params, x, make)
    return jnp.sum(weights[:, None] * _masked_leaf_sqnorms(grads, mask), axis=0)

  return _vmap_examples(one, cpu_rewrites)(chunk["x"])


@functools.partial(jax.jit, static_argnames=("lik", "num_samples", "cpu_rewrites"))
def _label_sqnorms_chunk(replicated, chunk, *, lik, num_samples, cpu_rewrites):
  """||mask * grad log p(y | f(x))||^2 per example, label and param leaf: (c, k, L).

  Labels are ``chunk["y"]`` when ``num_samples`` is 0, else ``num_samples`` labels per
  example sampled from the likelihood with the key ``fold_in(key, chunk["index"][i])``.
  """
  logits_fn, params, mask, key = replicated

  def one(x, y, k):
    def make(out):
      return _label_scores(lik, out, _example_labels(lik, out, y, k, num_samples)), None
    grads, _ = _cotangent_grads(logits_fn, params, x, make)
    return _masked_leaf_sqnorms(grads, mask)

  keys = _example_keys(key, chunk["index"]) if num_samples else chunk["index"]
  return _vmap_examples(one, cpu_rewrites)(chunk["x"], chunk["y"], keys)


@functools.partial(jax.jit, static_argnames=("lik", "num_samples", "cpu_rewrites"))
def _label_dots_chunk(replicated, chunk, *, lik, num_samples, cpu_rewrites):
  """(<mask * g_i, v>, ||mask * g_i||^2) per example, g_i the NLL gradient: (c,), (c,).

  One label per example: ``chunk["y"]`` (``num_samples`` 0) or sampled as in
  :func:`_label_sqnorms_chunk` (``num_samples`` 1).
  """
  logits_fn, params, mask, key, direction = replicated

  def one(x, y, k):
    def make(out):
      return _label_scores(lik, out, _example_labels(lik, out, y, k, num_samples)), None
    grads, _ = _cotangent_grads(logits_fn, params, x, make)  # grad log p_y = -g_i: (1, ...)
    dot = 0.0
    for g, v in zip(_masked_leaves(grads, mask), jax.tree.leaves(direction)):
      dot = dot + _row_sums(g.reshape(g.shape[0], -1) * v.reshape(1, -1).astype(g.dtype))
    return -dot[0], _masked_sqnorms(grads, mask)[0]

  keys = _example_keys(key, chunk["index"]) if num_samples else chunk["index"]
  return _vmap_examples(one, cpu_rewrites)(chunk["x"], chunk["y"], keys)


@functools.partial(jax.jit, static_argnames=("lik", "cpu_rewrites"))
def _ggn_chunk(replicated, chunk, *, lik, cpu_rewrites):
  """Per-example Tr(H J J^T) with H the likelihood's NLL Hessian in the outputs, J masked: (c,).

  Not divided by positions."""
  logits_fn, params, mask = replicated

  def one(x):
    def make(out):
      d = max(out.size, 1)
      return jnp.eye(d, dtype=jnp.float32).reshape((d,) + out.shape), out
    grads, out = _cotangent_grads(logits_fn, params, x, make)
    gram = 0.0
    for g in _masked_leaves(grads, mask):
      g = g.reshape(g.shape[0], -1)
      gram = gram + g @ g.T
    return jnp.sum(lik.hessian(out) * gram)

  return _vmap_examples(one, cpu_rewrites)(chunk["x"])


@functools.partial(jax.jit, static_argnames=("lik", "sampled", "cpu_rewrites"))
def _grads_chunk(replicated, chunk, *, lik, sampled, cpu_rewrites):
  """Per-example gradients of the NLL -log p(y | f(x)) (summed over positions), masked:
  leaves (c, ...). Labels ``chunk["y"]``, or with ``sampled`` one label per example drawn as
  in :func:`_label_sqnorms_chunk`.
  """
  logits_fn, params, mask, key = replicated

  def one(x, y, k):
    def make(out):
      labels = _example_labels(lik, out, y, k, int(sampled))
      return -_label_scores(lik, out, labels), None
    grads, _ = _cotangent_grads(logits_fn, params, x, make)
    g = jax.tree.map(lambda a: a[0], grads)
    return g if mask is None else jax.tree.map(lambda a, m: a * m, g, mask)

  keys = _example_keys(key, chunk["index"]) if sampled else chunk["index"]
  return _vmap_examples(one, cpu_rewrites)(chunk["x"], chunk["y"], keys)


# ----------------------------------------------------------------------------------------------
# Input handling.


def _check_key(key: Any, what: str) -> jax.Array:
  if key is None:
    raise UserError(f"{what} needs a PRNG key (key=jax.random.key(0))")
  return key


def _check_positive(value: Any, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise UserError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


class _Run(NamedTuple):
  """Per-example results over ``data``: ``out`` (leading size N), N, the per-example output
  shape S and its number of positions P (``likelihoods``)."""
  out: Any
  n: int
  shape: tuple
  positions: int


def _over_data(fn, replicated, data, *, logits_fn, params, lik, x, y, labels, chunk_size,
               devices, what, to_host=True) -> _Run:
  """Runs ``fn(replicated, chunk)`` over every example of ``data`` (``_examples``: the checks
  run on the first batch, before anything is compiled). ``labels``: read and check the data
  labels with the selector ``y``. A short last batch is padded to the first batch's chunk."""
  chunk_size = _sharding.check_chunk_size(chunk_size)
  replicated = _sharding.replicate((as_pytree_fn(logits_fn), *replicated), devices)
  outs, pad_to, shape, n = [], None, None, 0
  for eb, shape in _examples.example_batches(data, logits_fn=logits_fn, params=params,
                                              likelihood=lik, x=x, y=y, labels=labels,
                                              what=what):
    if pad_to is None:  # the first batch sets the chunk shape: a short last batch is padded
      pad_to = min(chunk_size, eb.n)
    outs.append(_sharding.map_examples(fn, replicated, eb.arrays, chunk_size=chunk_size,
                                       devices=devices, to_host=to_host, pad_to=pad_to))
    n = eb.offset + eb.n
  cat = np.concatenate if to_host else jnp.concatenate
  out = jax.tree.map(lambda *xs: cat(xs, axis=0), *outs)
  return _Run(out, n, shape, lik.positions(shape))


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


def _label_setup(labels: str, key: Any, what: str) -> jax.Array:
  """The key replicated to the chunks (a dummy unless ``labels="sampled"``)."""
  if labels == "sampled":
    return _check_key(key, f"{what} with labels='sampled'")
  return jnp.zeros((), jnp.uint32)


def _labels_extra(labels: str, y: Any, lik: Likelihood) -> dict:
  out = {"labels": labels, "likelihood": lik.name}
  if labels == "data":
    out["label_key"] = ("y" if y is None else y if isinstance(y, (str, int))
                        else getattr(y, "__name__", "function"))
  return out


def _kind_to_labels(labels: Any, kind: Any, what: str) -> Any:
  """The deprecated ``kind=`` keyword (first release) mapped to ``labels=``, with a warning."""
  if kind is None:
    return labels
  warnings.warn(f"{what}(kind=...) is deprecated: use labels={labels_for_kind(kind)!r} "
                f"(kind 'exact' / 'mc' / 'empirical' -> labels 'exact' / 'sampled' / 'data')",
                DeprecationWarning, stacklevel=3)
  return labels_for_kind(kind)


# ----------------------------------------------------------------------------------------------
# Public API.


def per_example_grads(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], *,
    labels: str = "data", label_key: Any = None, key: jax.Array | None = None,
    mask: PyTree | None = None, chunk_size: int | None = None, devices: Devices = None,
    cpu_rewrites: bool | None = None, likelihood: Any = "categorical", x: Any = None,
    y: Any = None,
) -> PyTree:
  """Per-example gradients g_i of the negative log-likelihood -log p(y_i | logits_fn(params, x_i)).

  The default likelihood is the softmax cross-entropy; with token outputs (n, T, V) or other
  multi-position outputs g_i is the gradient of the example's NLL SUMMED over its positions.

  Args:
    logits_fn: ``logits_fn(params, x) -> (n, ...)`` (BatchNorm in eval mode: checked).
    params: the params pytree.
    data: one batch (any pytree whose leaves share a leading example axis: a dict, a tuple
      ``(x, y)``) or a list / iterable of them.
    labels: ``"data"`` (y_i from the batch) or ``"sampled"`` (one y_i per example drawn from
      the model's distribution, key ``fold_in(key, i)``).
    label_key: older name of ``y`` (a batch key), kept.
    key: PRNG key, needed for ``labels="sampled"``.
    mask: restricts each gradient to the active coordinates (g * mask); None for dense.
    chunk_size: examples per jitted vmapped call (default 32).
    devices: None, ``"all"`` or a sequence of devices to shard the examples over.
    cpu_rewrites: grouped convolutions as batched dots (None: on CPU only; module doc).
    likelihood: ``"categorical"`` (default), ``"gaussian"``, ``"bernoulli"`` or a
      ``snnjax.estimators.likelihoods`` instance (``Gaussian(variance)``, ``custom(nll, ...)``).
    x, y: where the inputs and labels are in a batch: a key, an index or a function
      ``batch -> pytree``; None: ``batch["x"]`` / ``batch["y"]``, or ``batch[0]`` /
      ``batch[1]`` of a pair.

  Returns:
    A pytree of the params' structure whose leaves have a leading axis N (the examples of
    ``data``, in order): leaf[i] is g_i, pointing uphill in the loss. Jax arrays.
  """
  labels = _check_labels(labels, PER_EXAMPLE_LABELS, "per_example_grads")
  lik = _likelihoods.resolve(likelihood)
  mask = check_mask_matches_params(params, mask)
  key = _label_setup(labels, key, "per_example_grads")
  fn = _sharding.chunk_fn(_grads_chunk, lik=lik, sampled=labels == "sampled",
                          cpu_rewrites=_convs.resolve_cpu_rewrites(cpu_rewrites))
  run = _over_data(fn, (params, mask, key), data, logits_fn=logits_fn, params=params, lik=lik,
                   x=x, y=_examples.label_selector(y, label_key), labels=labels == "data",
                   chunk_size=chunk_size, devices=devices, what="per_example_grads",
                   to_host=False)
  return run.out


def per_example_grad_norms(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], *,
    labels: str = "data", label_key: Any = None, key: jax.Array | None = None,
    mask: PyTree | None = None, chunk_size: int | None = None, squared: bool = True,
    devices: Devices = None, cpu_rewrites: bool | None = None, likelihood: Any = "categorical",
    x: Any = None, y: Any = None,
) -> np.ndarray:
  """Per-example norms of the NLL gradient (= of grad_params log p(y_i | x_i)).

  **By default these are SQUARED norms** ||g_i||^2 (``squared=True``, the default kept for the
  callers); pass ``squared=False`` for ||g_i||. Not averaged: one value per example.

  Args:
    logits_fn, params, data, labels, label_key, key, mask, chunk_size, devices, cpu_rewrites,
      likelihood, x, y: as in :func:`per_example_grads`.
    squared: return ||g_i||^2 (True, default) or ||g_i||.

  Returns:
    float64 numpy array (N,), N the number of examples in ``data``, in data order: ||g_i||^2
    (the sum over all active coordinates of g_i^2) or ||g_i||. Per-block squared norms from the
    same gradients: :func:`per_example_sqnorms_by_block`.
  """
  sq = _leaf_sqnorms(logits_fn, params, data, labels=labels, y=_examples.label_selector(
      y, label_key), key=key, mask=mask, chunk_size=chunk_size, devices=devices,
                     cpu_rewrites=cpu_rewrites, likelihood=likelihood, x=x,
                     what="per_example_grad_norms").sum(axis=1)
  return sq if squared else np.sqrt(sq)


def _leaf_sqnorms(logits_fn, params, data, *, labels, y, key, mask, chunk_size, devices,
                  cpu_rewrites, likelihood, x, what) -> np.ndarray:
  """Per-example, per-leaf squared gradient norms (N, L) float64 (one label per example)."""
  labels = _check_labels(labels, PER_EXAMPLE_LABELS, what)
  lik = _likelihoods.resolve(likelihood)
  mask = check_mask_matches_params(params, mask)
  key = _label_setup(labels, key, what)
  fn = _sharding.chunk_fn(_label_sqnorms_chunk, lik=lik, num_samples=int(labels == "sampled"),
                          cpu_rewrites=_convs.resolve_cpu_rewrites(cpu_rewrites))
  run = _over_data(fn, (params, mask, key), data, logits_fn=logits_fn, params=params, lik=lik,
                   x=x, y=y, labels=labels == "data", chunk_size=chunk_size, devices=devices,
                   what=what)
  return run.out[:, 0].astype(np.float64)


class BlockSqNorms(NamedTuple):
  """Per-example SQUARED gradient norms, total and per block (:func:`per_example_sqnorms_by_block`).

  ``total`` (N,) float64 ||g_i||^2; ``blocks`` {block name: (N,) float64 ||g_i restricted to the
  block||^2}; the blocks sum to ``total`` (float64 rounding). Not averaged over examples.
  """
  total: np.ndarray
  blocks: dict


def per_example_sqnorms_by_block(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], *,
    blocks: _blocks.BlockSpec = "layer", labels: str = "data", label_key: Any = None,
    key: jax.Array | None = None, mask: PyTree | None = None, chunk_size: int | None = None,
    devices: Devices = None, cpu_rewrites: bool | None = None, likelihood: Any = "categorical",
    x: Any = None, y: Any = None,
) -> BlockSqNorms:
  """Per-example squared norms ||g_i||^2 broken down into blocks of params, in one pass.

  The same jitted program (and compilation) as :func:`per_example_grad_norms`, which computes
  per-leaf squared norms and sums them; here the leaves are summed per block instead.
  ``blocks``: ``snnjax.estimators.blocks`` (``"leaf"``, ``"layer"``, a mapping or a callable).
  Other arguments as in :func:`per_example_grads`.
  """
  parts = _blocks.make_blocks(params, blocks)
  sq = _leaf_sqnorms(logits_fn, params, data, labels=labels,
                     y=_examples.label_selector(y, label_key), key=key, mask=mask,
                     chunk_size=chunk_size, devices=devices, cpu_rewrites=cpu_rewrites,
                     likelihood=likelihood, x=x, what="per_example_sqnorms_by_block")
  per_block = parts.sum_leaves(sq)
  return BlockSqNorms(total=sq.sum(axis=1),
                      blocks={name: per_block[:, b] for b, name in enumerate(parts.names)})


def per_example_grad_dots(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], direction: PyTree, *,
    labels: str = "data", label_key: Any = None, key: jax.Array | None = None,
    mask: PyTree | None = None, chunk_size: int | None = None, devices: Devices = None,
    cpu_rewrites: bool | None = None, likelihood: Any = "categorical", x: Any = None,
    y: Any = None,
) -> GradDots:
  """Per-example <g_i, direction> and ||g_i||, g_i the (masked) NLL gradient.

  The same per-example machinery as :func:`per_example_grad_norms` (its ``norms`` are the square
  roots of that function's values), without materializing the gradients: each example's
  gradient is contracted with ``direction`` inside the jitted chunk.

  Args:
    logits_fn, params, data, labels, label_key, key, mask, chunk_size, devices, cpu_rewrites,
      likelihood, x, y: as in :func:`per_example_grads`.
    direction: a pytree like ``params`` (v). With a mask, <mask * g_i, v> is taken, so masking v
      as well changes nothing.

  Returns:
    ``GradDots(dots, norms)``: float64 numpy arrays (N,) of <mask * g_i, v> and ||mask * g_i||,
    in data order (g_i points uphill in the loss: <-g_i, v> = -dots).
  """
  labels = _check_labels(labels, PER_EXAMPLE_LABELS, "per_example_grad_dots")
  lik = _likelihoods.resolve(likelihood)
  mask = check_mask_matches_params(params, mask)
  if direction is None:
    raise UserError("per_example_grad_dots needs a direction (a pytree like params)")
  direction = check_mask_matches_params(params, direction, what="direction")
  key = _label_setup(labels, key, "per_example_grad_dots")
  fn = _sharding.chunk_fn(_label_dots_chunk, lik=lik, num_samples=int(labels == "sampled"),
                          cpu_rewrites=_convs.resolve_cpu_rewrites(cpu_rewrites))
  run = _over_data(fn, (params, mask, key, direction), data, logits_fn=logits_fn, params=params,
                   lik=lik, x=x, y=_examples.label_selector(y, label_key),
                   labels=labels == "data", chunk_size=chunk_size, devices=devices,
                   what="per_example_grad_dots")
  dots, sq = run.out
  return GradDots(np.asarray(dots, np.float64), np.sqrt(np.asarray(sq, np.float64)))


def _factor_size(lik: Likelihood, shape: tuple) -> int:
  """K, the number of rows of the likelihood's Fisher factor for outputs of ``shape``."""
  w = jax.eval_shape(lambda f: lik.fisher_factor(f)[1], jax.ShapeDtypeStruct(shape, jnp.float32))
  return int(w.shape[0])


def fisher_trace(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], *,
    labels: str = "exact", key: jax.Array | None = None, mask: PyTree | None = None,
    num_samples: int = 1, chunk_size: int | None = None, class_chunk_size: int | None = None,
    label_key: Any = None, devices: Devices = None, cpu_rewrites: bool | None = None,
    return_per_example: bool = False, blocks: _blocks.BlockSpec | None = None,
    likelihood: Any = "categorical", x: Any = None, y: Any = None, kind: str | None = None,
) -> Estimate:
  """Trace of the Fisher information, a per-example (and per-position) mean over ``data``.

  The value is a SUM over the active coordinates (a trace) of the per-example Fisher, AVERAGED
  over the examples: mean_i E_y ||grad log p(y | x_i)||^2 / P (squared norms, averaged; P the
  positions of the outputs, ``likelihoods``: 1 for (n, C) or (n, k) outputs, T for token
  outputs (n, T, V), whose value is then a per-token average).

  Args:
    logits_fn: ``logits_fn(params, x) -> (n, ...)`` (BatchNorm in eval mode: checked).
    params: the params pytree.
    data: one batch or an iterable of batches (``per_example_grads``).
    labels: ``"exact"`` (true Fisher, the exact expectation over the labels: the likelihood's
      output-space Fisher factor), ``"sampled"`` (true Fisher, ``num_samples`` labels per
      example sampled from the model) or ``"data"`` (the batch's labels: the empirical Fisher,
      not the model's Fisher). A study config's ``fisher.kind`` maps to these with
      :func:`labels_for_kind`.
    key: PRNG key, needed for ``labels="sampled"``.
    mask: restricts the gradients to the active coordinates (e.g. a sparsity mask combined with
      ``param_subsets.param_subset_mask(params, "kernels")``); None for all params.
    num_samples: sampled labels per example for ``labels="sampled"`` (must be 1 otherwise).
    chunk_size: examples per jitted vmapped call (default 32). Memory per call is about
      chunk_size x (factor rows per call) x num_params floats.
    class_chunk_size: for ``labels="exact"``, factor rows (classes) per call (default: all at
      once); smaller values bound memory at the cost of one forward pass per row chunk.
    label_key: older name of ``y``, kept.
    devices: None, ``"all"`` or a sequence of devices to shard the examples over.
    cpu_rewrites: grouped convolutions as batched dots (None: on CPU only; module doc).
    return_per_example: also return the per-example traces as ``extra["per_example"]``.
    blocks: optional breakdown (``snnjax.estimators.blocks``): ``Estimate.blocks`` then holds
      Tr(F_BB) per block, from the same per-example gradients (and sampled labels) as the total,
      with the same kind of stderr; they sum to ``value``. No extra pass or compilation.
    likelihood, x, y: as in :func:`per_example_grads`.
    kind: DEPRECATED (first release): ``"exact" | "mc" | "empirical"``, mapped to ``labels``
      with a DeprecationWarning.

  Returns:
    An Estimate: ``value`` the mean over examples of the per-example trace. ``stderr``: None for
    ``"exact"`` and ``"data"`` (exact for the given examples); for ``"sampled"`` the standard
    error std_i(v_i) / sqrt(N) of the per-example values v_i (each a mean over its samples),
    which covers the label sampling and the sampling of the examples. ``extra``: ``estimator``,
    ``labels``, ``likelihood``, ``label_key`` (with ``"data"``), ``num_classes`` (the last
    axis of the outputs), ``positions``, ``num_active_params`` (measured coordinates),
    ``example_std`` (std of the per-example values), for ``"sampled"`` with num_samples >= 2
    ``sampling_stderr`` (the standard error from the label sampling alone,
    sqrt(sum_i var_s / S) / N, the error against the exact trace of the same examples), and
    ``per_example`` when asked.
  """
  labels = _check_labels(_kind_to_labels(labels, kind, "fisher_trace"), LABELS, "fisher_trace")
  lik = _likelihoods.resolve(likelihood)
  num_samples = _check_positive(num_samples, "num_samples")
  if labels != "sampled" and num_samples != 1:
    raise UserError(f"num_samples applies to labels='sampled' only (got labels={labels!r})")
  mask = check_mask_matches_params(params, mask)
  rewrites = _convs.resolve_cpu_rewrites(cpu_rewrites)
  y = _examples.label_selector(y, label_key)
  common = dict(logits_fn=logits_fn, params=params, lik=lik, x=x, chunk_size=chunk_size,
                devices=devices, what="fisher_trace")
  extra: dict = {"estimator": "fisher_trace", **_labels_extra(labels, y, lik),
                 "num_active_params": active_count(params, mask)}
  stderr, num_probes = None, 0

  if labels == "exact":
    data = _examples.as_list(data)
    first = next(_examples.example_batches(data, logits_fn=logits_fn, params=params,
                                           likelihood=lik, x=x, what="fisher_trace"))[1]
    num_rows = _factor_size(lik, first)
    step = num_rows if class_chunk_size is None else _check_positive(
        class_chunk_size, "class_chunk_size")
    per_leaf = 0.0
    for start in range(0, num_rows, step):
      fn = _sharding.chunk_fn(_exact_fisher_chunk, lik=lik,
                              rows=(start, min(start + step, num_rows)), cpu_rewrites=rewrites)
      run = _over_data(fn, (params, mask), data, y=None, labels=False, **common)
      per_leaf = per_leaf + run.out.astype(np.float64) / run.positions  # (N, L)
    per_example = per_leaf.sum(axis=1)
  else:
    key = _label_setup(labels, key, "fisher_trace")
    fn = _sharding.chunk_fn(_label_sqnorms_chunk, lik=lik, cpu_rewrites=rewrites,
                            num_samples=num_samples if labels == "sampled" else 0)
    run = _over_data(fn, (params, mask, key), data, y=y, labels=labels == "data", **common)
    samples = run.out.astype(np.float64) / run.positions  # (N, S, L)
    per_leaf = samples.mean(axis=1)
    samples = samples.sum(axis=2)
    per_example = samples.mean(axis=1)
    if labels == "sampled":
      _, stderr = mean_and_stderr(per_example)
      num_probes = num_samples
      if num_samples >= 2:
        extra["sampling_stderr"] = float(
            np.sqrt(np.sum(samples.var(axis=1, ddof=1) / num_samples)) / run.n)
  n = run.n
  value, _ = mean_and_stderr(per_example)
  extra["num_classes"] = run.shape[-1] if run.shape else 1
  extra["positions"] = run.positions
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
    likelihood: Any = "categorical", x: Any = None,
) -> Estimate:
  """Trace of the generalized Gauss-Newton matrix J^T H J, per-example (and per-position) mean.

  Per example, Tr(J^T H J) = Tr(H J J^T) with H the Hessian of the likelihood's NLL in the
  outputs (``Likelihood.hessian``: categorical diag(p) - p p^T per position, Gaussian
  I / variance, Bernoulli diag(s (1 - s)), custom: the user's) and J the (masked) Jacobian of the
  outputs in the params, via the D x D Gram matrix of the rows J^T e_d (D outputs per
  example), divided by the positions P. For these likelihoods it equals
  ``fisher_trace(labels="exact")``, computed through a different formula as a cross-check. H
  does not depend on the labels: ``labels`` accepts ``"exact"`` only. Other arguments as in
  :func:`fisher_trace`.

  Returns:
    An Estimate (``stderr`` None: exact for the given examples), with ``extra`` as for
    ``fisher_trace(labels="exact")``.
  """
  _check_labels(labels, ("exact",), "ggn_trace")
  lik = _likelihoods.resolve(likelihood)
  mask = check_mask_matches_params(params, mask)
  fn = _sharding.chunk_fn(_ggn_chunk, lik=lik,
                          cpu_rewrites=_convs.resolve_cpu_rewrites(cpu_rewrites))
  run = _over_data(fn, (params, mask), data, logits_fn=logits_fn, params=params, lik=lik, x=x,
                   y=None, labels=False, chunk_size=chunk_size, devices=devices,
                   what="ggn_trace")
  n = run.n
  per_example = run.out.astype(np.float64) / run.positions
  extra = {"estimator": "ggn_trace", "labels": "exact", "likelihood": lik.name,
           "num_classes": run.shape[-1] if run.shape else 1, "positions": run.positions,
           "num_active_params": active_count(params, mask),
           "example_std": float(per_example.std(ddof=1)) if n > 1 else None}
  if return_per_example:
    extra["per_example"] = per_example
  value, _ = mean_and_stderr(per_example)
  return Estimate(value=value, stderr=None, num_examples=n, extra=extra)
