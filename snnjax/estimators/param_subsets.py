"""Parameter subsets as masks: which coordinates an estimator measures.

A subset mask has the params' structure with one bool array per leaf (True = measured), the same
form as a sparsity mask, so the two combine with :func:`combine_masks`. The study measures Tr(F)
over conv and linear weights only (``include="kernels"``, no biases, no BatchNorm) and Tr(H) over
all trainable params (``include="all"``); both on the active coordinates of the sparsity mask:

  mask = combine_masks(sparsity_mask, param_subset_mask(params, "kernels"))

A mask given to an estimator selects coordinates of gradients; it does not change the network.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from snnjax.errors import UserError
from snnjax.estimators._base import check_mask_matches_params

PyTree = Any
SubsetFn = Callable[[tuple[str, ...], Any], bool]


def _key_name(entry: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def leaf_path(path: tuple) -> tuple[str, ...]:
  """A tree path (from ``jax.tree_util.tree_flatten_with_path``) as a tuple of names.

  E.g. ``("params", "stem", "kernel")`` for ``params["params"]["stem"]["kernel"]``.
  """
  return tuple(_key_name(e) for e in path)


def is_kernel(path: tuple[str, ...], leaf: Any) -> bool:
  """True for conv and linear weights: leaves named ``kernel`` with ndim >= 2."""
  return bool(path) and path[-1] == "kernel" and np.ndim(leaf) >= 2


def param_subset_mask(params: PyTree, include: str | SubsetFn = "all") -> PyTree:
  """A bool mask (the params' structure, each leaf all-True or all-False) selecting a subset.

  Args:
    params: the params pytree.
    include: ``"all"`` (every leaf), ``"kernels"`` (leaves named ``kernel`` of ndim >= 2: conv
      and linear weights, no biases, no BatchNorm scale/bias), or a callable
      ``include(path, leaf) -> bool`` with ``path`` a tuple of key names such as
      ``("block1", "conv1", "kernel")``.

  Returns:
    A pytree of bool arrays, each of its leaf's shape.
  """
  if isinstance(include, str):
    if include == "all":
      select = lambda path, leaf: True
    elif include == "kernels":
      select = is_kernel
    else:
      raise UserError(f"include must be 'all', 'kernels' or a callable, got {include!r}")
  elif callable(include):
    select = include
  else:
    raise UserError(f"include must be 'all', 'kernels' or a callable, got {include!r}")
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  leaves = [np.full(np.shape(leaf), bool(select(leaf_path(path), leaf)), dtype=bool)
            for path, leaf in flat]
  return jax.tree.unflatten(treedef, leaves)


def combine_masks(a: PyTree | None, b: PyTree | None) -> PyTree | None:
  """The coordinates active in both masks (logical and); None stands for all-active.

  Raises:
    MaskMismatchError: the two masks differ in tree structure or leaf shapes.
  """
  if a is None:
    return b
  if b is None:
    return a
  check_mask_matches_params(a, b)
  return jax.tree.map(lambda x, y: np.logical_and(np.asarray(x) != 0, np.asarray(y) != 0), a, b)
