"""Examples of ``data`` for the per-example estimators: inputs, labels and the checks before work.

The per-example estimators (``fisher``, ``diagonals.fisher_diagonal``, ``jacobian``) evaluate
``logits_fn(params, x)`` on each example alone. :func:`example_batches` walks the batches of
``data`` (any pytree batches, ``_base.select`` finds their inputs ``x`` and labels ``y``) and,
on the first one, before any compiled work, checks in one UserError line each:

* that ``logits_fn`` returns one array (n, ...) whose per-example shape fits the likelihood;
* that example 0's outputs do not depend on the other examples of the batch (the train-mode
  BatchNorm trap): ``logits_fn`` on example 0 alone against examples 0 and 1 together, one
  eager forward pass of one and of two examples.

Each chunk then holds ``{"x": inputs pytree, "y": labels, "index": position in data}``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, NamedTuple

import jax
import numpy as np

from snnjax.errors import UserError
from snnjax.estimators import likelihoods as _lik
from snnjax.estimators._base import (as_batches, eval_shape_or_error, is_one_batch,
                                     leading_size, select)

INDEPENDENCE_RTOL = 1e-3  # example 0's outputs alone vs with example 1: relative tolerance


def output_shape(logits_fn: Callable, params: Any, x: Any, what: str) -> tuple[int, ...]:
  """The per-example output shape S of ``logits_fn`` (traced with one example, nothing run)."""
  one = jax.tree.map(lambda a: jax.ShapeDtypeStruct((1,) + np.shape(a)[1:],
                                                    getattr(a, "dtype", np.result_type(a))), x)
  out = eval_shape_or_error(logits_fn, params, one,
                            call=f"{what}: logits_fn(params, x) on one example")
  if not isinstance(out, jax.ShapeDtypeStruct):
    raise UserError(f"{what}: logits_fn(params, x) must return one array (n, ...), got "
                    f"{type(out).__name__} (with flax mutable=[...] it returns (outputs, updates):"
                    f" use BatchNorm in eval mode and return the outputs only)")
  if len(out.shape) < 1 or out.shape[0] != 1:
    raise UserError(f"{what}: logits_fn(params, x) must return outputs with a leading example "
                    f"axis, got shape {out.shape} for one example")
  return tuple(int(d) for d in out.shape[1:])


def check_independent(logits_fn: Callable, params: Any, x: Any, what: str) -> None:
  """UserError when example 0's outputs change with example 1 in the batch (module doc)."""
  first = np.asarray(logits_fn(params, jax.tree.map(lambda a: a[:1], x)), np.float64)
  pair = np.asarray(logits_fn(params, jax.tree.map(lambda a: a[:2], x)), np.float64)[:1]
  scale = max(float(np.max(np.abs(pair))) if pair.size else 0.0, 1e-6)
  diff = float(np.max(np.abs(first - pair))) if pair.size else 0.0
  if not np.isfinite(diff) or diff > INDEPENDENCE_RTOL * scale:
    raise UserError(f"{what}: logits_fn's outputs for an example depend on the other examples "
                    f"of the batch (example 0 alone vs with example 1: max difference "
                    f"{diff:.3g}); put BatchNorm in eval mode (train=False / "
                    f"use_running_average=True)")


class ExampleBatch(NamedTuple):
  arrays: dict  # {"x": inputs pytree, "y": labels, "index": (n,) int32}
  n: int
  offset: int  # position of the batch's first example in data


def example_batches(data: Any, *, logits_fn: Callable, params: Any,
                    likelihood: _lik.Likelihood | None, x: Any = None, y: Any = None,
                    labels: bool = False, what: str) -> Iterator[tuple[ExampleBatch, tuple]]:
  """Yields (ExampleBatch, per-example output shape S) for each non-empty batch of ``data``.

  ``labels``: read the labels with the selector ``y`` and check them against ``likelihood``;
  otherwise ``"y"`` holds placeholder labels. Checks on the first batch: module doc. Raises
  UserError when ``data`` holds no examples.
  """
  shape, offset, checked = None, 0, False
  for batch in as_batches(data):
    inputs = select(batch, x, "x")
    n = leading_size(inputs, "batch's inputs")
    if shape is None:
      shape = output_shape(logits_fn, params, inputs, what)
      if likelihood is not None:
        likelihood.check_outputs(shape)
    if n == 0:
      continue
    if not checked and n >= 2:
      check_independent(logits_fn, params, inputs, what)
      checked = True
    if labels:
      ys = likelihood.check_labels(select(batch, y, "y"), n, shape, what)
    elif likelihood is not None:
      ys = likelihood.dummy_labels(n, shape)
    else:
      ys = np.zeros((n,), np.int32)
    arrays = {"x": inputs, "y": ys, "index": np.arange(offset, offset + n, dtype=np.int32)}
    yield ExampleBatch(arrays, n, offset), shape
    offset += n
  if offset == 0:
    raise UserError(f"{what}: data holds no examples")


def label_selector(y: Any, label_key: Any) -> Any:
  """The labels selector from ``y=`` and the older ``label_key=`` (``y`` wins when given)."""
  return y if y is not None else label_key


def as_list(data: Any) -> Any:
  """``data`` as something that can be walked twice (one batch stays as it is)."""
  return data if is_one_batch(data) else list(data)
