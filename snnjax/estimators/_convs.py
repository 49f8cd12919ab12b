"""Grouped convolutions rewritten as batched matrix products, for per-example gradients on CPU.

``jax.vmap`` over examples of a convolution's kernel gradient (the heart of per-example gradients)
batches both of that convolution's operands, and JAX's batching rule turns it into one
convolution with ``feature_group_count`` = the number of examples. XLA:CPU runs such grouped
convolutions 2-4x slower than the form below (ResNet-32 layer shapes, 32 examples: 3.0-9.1 ms
against 1.6-2.1 ms per layer), which makes per-example gradient norms of a ResNet-32 ~1.45x
faster (BENCHMARKS.md, section 2).

:func:`grouped_convs_as_dots` traces a function to a jaxpr and evaluates it with every grouped
convolution (``feature_group_count`` or ``batch_group_count`` > 1) replaced by the same sum
written as a few strided slices of the (padded, dilated) input, each contracted with the kernel by
one ``dot_general`` batched over the groups. It loops over whichever is smaller: the output
positions (a kernel gradient: 3x3 outputs from a whole-image window) or the window positions (a
grouped or depthwise forward convolution). Everything else in the jaxpr, ungrouped convolutions
included, is bound unchanged. The result is the same function (tested against ``lax``
convolutions for every layout, stride, dilation, padding and group kind); it is meant for the
final, not further differentiated, computations of the per-example estimators.

Where it applies: every per-example function of ``snnjax.estimators.fisher`` (per-example
gradients, their norms and dot products, Tr(F) of every label kind, the GGN trace) wraps its
vmapped per-chunk computation with :func:`grouped_convs_as_dots` when ``cpu_rewrites`` (their
keyword, see :func:`resolve_cpu_rewrites`) is on: by default on the CPU backend only. Nothing else
in snnjax uses it (the Hessian and Jacobian estimators have no per-example kernel gradients).
Switching it off (``cpu_rewrites=False``) gives the same numbers to float rounding.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex_core

from snnjax.errors import UserError

MAX_SLICES = 64  # grouped convolutions that would need more slices are left alone
_CALL_PRIMITIVES = ("pjit", "jit", "closed_call", "core_call")


def conv_as_sliced_dots(lhs: jax.Array, rhs: jax.Array, *, window_strides: Sequence[int],
                        padding: Sequence[tuple[int, int]], lhs_dilation: Sequence[int],
                        rhs_dilation: Sequence[int], dimension_numbers: Any,
                        feature_group_count: int, batch_group_count: int, precision: Any = None,
                        preferred_element_type: Any = None, **unused: Any) -> jax.Array:
  """``lax.conv_general_dilated`` with the same arguments, as strided slices and batched dots.

  Takes the parameters of a ``conv_general_dilated`` jaxpr equation. With the input padded and
  dilated to xp, strides s and kernel dilation r, each group computes
  out[n, o, p] = sum_{c, k} xp[n, c, p s + k r] w[o, c, k]. The operands keep their own axis
  order (no transposes of the input): slices are taken along its spatial axes and the group axis
  is split off its batch (``batch_group_count``) or feature (``feature_group_count``) axis.
  """
  dn = dimension_numbers
  nsp = lhs.ndim - 2
  lb, lf, lsp = dn.lhs_spec[0], dn.lhs_spec[1], dn.lhs_spec[2:]
  ro, ri, rsp = dn.rhs_spec[0], dn.rhs_spec[1], dn.rhs_spec[2:]
  ob, of, osp = dn.out_spec[0], dn.out_spec[1], dn.out_spec[2:]
  pads = [(0, 0, 0)] * lhs.ndim
  for i, a in enumerate(lsp):
    pads[a] = (padding[i][0], padding[i][1], lhs_dilation[i] - 1)
  x = lax.pad(lhs, jnp.zeros((), lhs.dtype), pads)
  window = tuple(rhs.shape[a] for a in rsp)
  out_size = tuple((x.shape[a] - (window[i] - 1) * rhs_dilation[i] - 1) // window_strides[i] + 1
                   for i, a in enumerate(lsp))
  by_batch = batch_group_count > 1
  g = batch_group_count if by_batch else feature_group_count
  split = lb if by_batch else lf  # the lhs axis that holds the groups, group-major
  sp_in = "".join(chr(ord("p") + i) for i in range(nsp))  # input/output spatial letters p, q, ..
  sp_w = "".join(chr(ord("i") + i) for i in range(nsp))  # window letters i, j, ...
  x = x.reshape(x.shape[:split] + (g, x.shape[split] // g) + x.shape[split + 1:])
  x_names = {lb: "n", lf: "c", **dict(zip(lsp, sp_in))}
  x_names[split] = "gn" if by_batch else "gc"
  x_sub = "".join(x_names[a] for a in range(lhs.ndim))
  x_axis = {ch: i for i, ch in enumerate(x_sub)}  # letter -> axis of the split x
  dot = functools.partial(jnp.einsum, precision=precision,
                          preferred_element_type=preferred_element_type)

  def strided_slice(starts, sizes, strides):
    start, limit, step = [0] * x.ndim, list(x.shape), [1] * x.ndim
    for i in range(nsp):
      ax = x_axis[sp_in[i]]
      start[ax], step[ax] = starts[i], strides[i]
      limit[ax] = starts[i] + (sizes[i] - 1) * strides[i] + 1
    return lax.slice(x, start, limit, step)

  def split_out_features(w, axis):  # rhs output-feature axis -> (group, feature), group-major
    return w.reshape(w.shape[:axis] + (g, w.shape[axis] // g) + w.shape[axis + 1:])

  if math.prod(out_size) <= math.prod(window):
    # One output position at a time: a window-sized slice contracted over (c, window).
    w_names = {ro: "go", ri: "c", **dict(zip(rsp, sp_w))}
    w_sub = "".join(w_names[a] for a in range(rhs.ndim))
    patch_sub = x_sub.translate(str.maketrans(sp_in, sp_w))
    w = split_out_features(rhs, ro)
    # Kernel first: XLA:CPU lays a dot out as (group, M, K) x (group, K, N) and copies operands
    # into that form, so the kernel (shared by all slices) is the one transposed, once, and each
    # slice is used as it is. Results (G, Og, N') per position, stacked after the group axis.
    cols = [dot(f"{w_sub},{patch_sub}->gon", w,
                strided_slice([pos[i] * window_strides[i] for i in range(nsp)], window,
                              rhs_dilation))
            for pos in itertools.product(*(range(m) for m in out_size))]
    out = jnp.stack(cols, axis=1)  # (G, prod(P), Og, N')
    out = out.reshape((g,) + out_size + out.shape[2:])  # (G, *P, Og, N')
    out = jnp.moveaxis(out, (0, 1 + nsp, 2 + nsp), (1, 2, 0))  # (N', G, Og, *P)
    out = out.reshape((out.shape[0], g * out.shape[2]) + out_size)  # (N', O, *P), canonical
    return jnp.transpose(out, np.argsort(dn.out_spec))
  # One window position at a time: a strided shift of x times that kernel tap, summed.
  kept = [a for a in range(rhs.ndim) if a not in rsp]  # (ro, ri) in rhs order
  tap_sub = "".join("go" if a == ro else "c" for a in kept)
  o_names = {ob: "n", of: "go", **dict(zip(osp, sp_in))}
  out_sub = "".join(o_names[a] for a in range(lhs.ndim))
  out = None
  for pos in itertools.product(*(range(m) for m in window)):
    index = tuple(pos[rsp.index(a)] if a in rsp else slice(None) for a in range(rhs.ndim))
    tap = split_out_features(rhs[index], kept.index(ro))
    shifted = strided_slice([pos[i] * rhs_dilation[i] for i in range(nsp)], out_size,
                            window_strides)
    term = dot(f"{x_sub},{tap_sub}->{out_sub}", shifted, tap)
    out = term if out is None else out + term
  return out.reshape(out.shape[:of] + (out.shape[of] * out.shape[of + 1],) + out.shape[of + 2:])


def _slices_needed(eqn) -> int:
  """How many slices :func:`conv_as_sliced_dots` would take for this equation."""
  lhs, rhs = (v.aval for v in eqn.invars)
  out = eqn.outvars[0].aval
  dn = eqn.params["dimension_numbers"]
  window = [rhs.shape[i] for i in dn.rhs_spec[2:]]
  out_size = [out.shape[i] for i in dn.out_spec[2:]]
  return min(math.prod(window), math.prod(out_size))


def _rewrite(eqn) -> bool:
  p = eqn.params
  return (eqn.primitive is lax.conv_general_dilated_p
          and (p["feature_group_count"] > 1 or p["batch_group_count"] > 1)
          and _slices_needed(eqn) <= MAX_SLICES)


def _eval_jaxpr(jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
  env: dict = {}

  def read(v):
    return v.val if isinstance(v, jex_core.Literal) else env[v]

  def write(v, val):
    if not isinstance(v, jex_core.DropVar):
      env[v] = val

  for v, val in zip(jaxpr.constvars, consts):
    write(v, val)
  for v, val in zip(jaxpr.invars, args):
    write(v, val)
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    if _rewrite(eqn):
      outvals = [conv_as_sliced_dots(*invals, **eqn.params).astype(eqn.outvars[0].aval.dtype)]
    elif eqn.primitive.name in _CALL_PRIMITIVES and isinstance(
        eqn.params.get("jaxpr"), jex_core.ClosedJaxpr):
      inner = eqn.params["jaxpr"]
      outvals = _eval_jaxpr(inner.jaxpr, inner.consts, invals)
    else:
      bind_params = eqn.primitive.get_bind_params(eqn.params)
      subfuns = []
      if isinstance(bind_params, tuple):  # older jax: (subfuns, params)
        subfuns, bind_params = bind_params
      with eqn.ctx.manager:
        outvals = eqn.primitive.bind(*subfuns, *invals, **bind_params)
      if not eqn.primitive.multiple_results:
        outvals = [outvals]
    for v, val in zip(eqn.outvars, outvals):
      write(v, val)
  return [read(v) for v in jaxpr.outvars]


def resolve_cpu_rewrites(cpu_rewrites: bool | None) -> bool:
  """Whether to apply :func:`grouped_convs_as_dots`: None = on for the CPU backend only."""
  if cpu_rewrites is None:
    return jax.default_backend() == "cpu"
  if not isinstance(cpu_rewrites, (bool, np.bool_)):
    raise UserError(f"cpu_rewrites must be None, True or False, got {cpu_rewrites!r}")
  return bool(cpu_rewrites)


def grouped_convs_as_dots(fn: Callable[..., Any]) -> Callable[..., Any]:
  """``fn`` with its grouped convolutions computed by :func:`conv_as_sliced_dots`.

  The returned function takes and returns the same pytrees as ``fn`` (positional arguments
  only) and is traced anew at each call, so call it inside ``jax.jit``. Do not differentiate it:
  the rewrite evaluates ``fn``'s jaxpr, in which any custom derivative rules are already applied.
  """

  @functools.wraps(fn)
  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    outs = _eval_jaxpr(closed.jaxpr, closed.consts, jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

  return wrapped
