"""Input-output Jacobian norms of any model, averaged over examples.

For an example x (one input, any pytree) and f(x) = logits_fn(params, x[None])[0] (any shape
S: (), (k,), (T, V)) or its softmax probabilities over the last axis, J(x) = df/dx has one row
per output entry. The study's Jacobian norm is
the squared Frobenius norm E_x ||J(x)||_F^2 over training examples, with x the normalized input.

* Exact (``num_projections=None``): ||J||_F^2 = sum_d ||J^T e_d||^2, one VJP per output entry,
  vmapped over the entries and over the examples of a chunk.
* Random projections: ||J||_F^2 = E_v ||J^T v||^2 for v with E[v v^T] = I (Rademacher or standard
  Gaussian entries in output space), ``num_projections`` vectors per example. Unbiased for the
  squared norm only.

Examples run in chunks of ``chunk_size`` (default 32), one jitted vmapped call per chunk, sharded
over ``devices`` (see ``snnjax.estimators._sharding``); averages are taken on the host in float64.
Each example is evaluated alone, so BatchNorm must be in eval mode.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import UserError
from snnjax.estimators import _examples, _sharding
from snnjax.estimators._base import Batch, Estimate, PyTree, as_pytree_fn, mean_and_stderr

LogitsFn = Callable[[PyTree, jax.Array], jax.Array]
OUTPUTS = ("logits", "probs")
PROJECTIONS = ("rademacher", "gaussian")


def _output_fn(logits_fn: LogitsFn, params: PyTree,
               output: str) -> Callable[[jax.Array], jax.Array]:
  """f(x) (*S) for one example x (a pytree): its outputs or their softmax over the last axis."""
  def f(x):
    logits = logits_fn(params, jax.tree.map(lambda a: a[None], x))[0]
    return jax.nn.softmax(logits, axis=-1) if output == "probs" else logits
  return f


def _sq_rows(vjps: Any) -> jax.Array:
  """Squared norms (k,) of k stacked input-shaped VJPs (a pytree of leaves (k, ...))."""
  return sum(jnp.sum(jnp.square(v).reshape(v.shape[0], -1), axis=1)
             for v in jax.tree.leaves(vjps))


@functools.partial(jax.jit, static_argnames=("output",))
def _exact_chunk(replicated, chunk, *, output):
  """||df/dx||_F^2 per example: (c,)."""
  logits_fn, params = replicated
  f = _output_fn(logits_fn, params, output)

  def one(x):
    out, vjp_fn = jax.vjp(f, x)
    d = max(out.size, 1)
    eye = jnp.eye(d, dtype=out.dtype).reshape((d,) + out.shape)
    return jnp.sum(_sq_rows(jax.vmap(lambda u: vjp_fn(u)[0])(eye)))

  return jax.vmap(one)(chunk["x"])


@functools.partial(jax.jit, static_argnames=("output", "num_projections", "projection"))
def _projected_chunk(replicated, chunk, *, output, num_projections, projection):
  """||v_k^T df/dx||^2 per example and projection: (c, num_projections).

  The projections of example i are drawn with the key ``fold_in(key, chunk["index"][i])``.
  """
  logits_fn, params, key = replicated
  f = _output_fn(logits_fn, params, output)

  def one(x, k):
    out, vjp_fn = jax.vjp(f, x)
    shape = (num_projections,) + out.shape
    if projection == "rademacher":
      v = jax.random.rademacher(k, shape, dtype=out.dtype)
    else:
      v = jax.random.normal(k, shape, dtype=out.dtype)
    return _sq_rows(jax.vmap(lambda u: vjp_fn(u)[0])(v))

  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(chunk["index"])
  return jax.vmap(one)(chunk["x"], keys)


def jacobian_norm(
    logits_fn: LogitsFn, params: PyTree, data: Batch | Iterable[Batch], *,
    key: jax.Array | None = None, num_projections: int | None = None, squared: bool = True,
    output: str = "logits", projection: str = "rademacher", chunk_size: int | None = None,
    devices: None | str | Sequence[jax.Device] = None, return_per_example: bool = False,
    x: Any = None,
) -> Estimate:
  """Mean over the examples of ``data`` of the SQUARED Frobenius norm of the input-output
  Jacobian (by default; ``squared=False`` for the norm itself).

  The Jacobian of one example is that of all its outputs (any shape: (n,), (n, k), (n, T, V)
  outputs give 1, k, T V rows) in all its inputs (any pytree): ||J||_F^2 sums over every output
  entry and input coordinate, per example (no per-position averaging).

  Args:
    logits_fn: ``logits_fn(params, x) -> (n, ...)`` (BatchNorm in eval mode: checked).
    params: the params pytree (held fixed; the derivative is in the input).
    data: one batch (any pytree whose leaves share a leading example axis) or an iterable of
      batches; labels unused.
    key: PRNG key, needed when ``num_projections`` is given; example i of ``data`` uses
      ``fold_in(key, i)``, so results do not depend on ``chunk_size`` or ``devices``.
    num_projections: None for the exact norm (one VJP per output entry), or the number of
      random output-space vectors per example for the projection estimate.
    squared: the squared norm ||J||_F^2 (True, the default and the study's definition) or
      ||J||_F; the mean is over the per-example values either way (the mean of norms, not the
      root of the mean). The projection estimate needs ``squared=True``.
    output: differentiate the ``"logits"`` or the ``"probs"`` (softmax over the last axis).
    projection: ``"rademacher"`` or ``"gaussian"`` entries of the projection vectors.
    chunk_size: examples per jitted vmapped call (default 32).
    devices: None, ``"all"`` or a sequence of devices to shard the examples over.
    return_per_example: also return the per-example values as ``extra["per_example"]``.
    x: where the inputs are in a batch (``fisher.per_example_grads``); None: ``batch["x"]``,
      ``batch[0]`` of a pair, or the batch itself when it is one array.

  Returns:
    An Estimate of the mean over examples. ``stderr``: None when exact; with projections, the
    standard error std_i(v_i) / sqrt(N) of the per-example estimates (each a mean over its
    projections), covering projection noise and the sampling of the examples. ``extra``:
    ``squared``, ``output``, ``method`` (``"exact"`` or the projection kind), ``example_std``,
    ``output_shape`` (per example), with >= 2 projections ``projection_stderr`` (the standard
    error from the projections alone, the error against the exact value on the same examples),
    and ``per_example`` when asked.
  """
  if output not in OUTPUTS:
    raise UserError(f"output must be one of {OUTPUTS}, got {output!r}")
  if projection not in PROJECTIONS:
    raise UserError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
  if num_projections is not None:
    if (isinstance(num_projections, bool) or not isinstance(num_projections, (int, np.integer))
        or num_projections < 1):
      raise UserError(f"num_projections must be None or a positive integer, "
                      f"got {num_projections!r}")
    if not squared:
      raise UserError("the projection estimate is unbiased for the squared norm only: "
                      "use squared=True or num_projections=None")
    if key is None:
      raise UserError("num_projections needs a PRNG key (key=jax.random.key(0))")
    fn = _sharding.chunk_fn(_projected_chunk, output=output,
                           num_projections=int(num_projections), projection=projection)
    replicated = (as_pytree_fn(logits_fn), params, key)
  else:
    fn = _sharding.chunk_fn(_exact_chunk, output=output)
    replicated = (as_pytree_fn(logits_fn), params)

  chunk_size = _sharding.check_chunk_size(chunk_size)
  replicated = _sharding.replicate(replicated, devices)
  outs, n, shape = [], 0, None
  for eb, shape in _examples.example_batches(data, logits_fn=logits_fn, params=params,
                                              likelihood=None, x=x, what="jacobian_norm"):
    if output == "probs" and not shape:
      raise UserError("jacobian_norm(output='probs') needs outputs (n, ..., C) to take a "
                      "softmax over; these outputs are (n,): use output='logits'")
    arrays = {"x": eb.arrays["x"], "index": eb.arrays["index"]}
    outs.append(_sharding.map_examples(fn, replicated, arrays, chunk_size=chunk_size,
                                       devices=devices))
    n = eb.offset + eb.n
  values = np.concatenate(outs, axis=0).astype(np.float64)

  extra: dict = {"estimator": "jacobian_norm", "squared": bool(squared), "output": output,
                 "output_shape": shape}
  if num_projections is None:
    per_example = values if squared else np.sqrt(values)
    value, _ = mean_and_stderr(per_example)
    stderr, num_probes = None, 0
    extra["method"] = "exact"
  else:
    per_example = values.mean(axis=1)
    value, stderr = mean_and_stderr(per_example)
    num_probes = int(num_projections)
    extra["method"] = projection
    if num_projections >= 2:
      extra["projection_stderr"] = float(
          np.sqrt(np.sum(values.var(axis=1, ddof=1) / num_projections)) / n)
  extra["example_std"] = float(per_example.std(ddof=1)) if n > 1 else None
  if return_per_example:
    extra["per_example"] = per_example
  return Estimate(value=value, stderr=stderr, num_examples=n, num_probes=num_probes, extra=extra)
