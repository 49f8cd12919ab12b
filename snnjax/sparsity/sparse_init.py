"""Sparse-aware initialization (Evci et al., AAAI 2022, "Gradient Flow in Sparse Neural Networks
and How Lottery Tickets Win"), and the layerwise mask shuffle (Frankle et al. 2021's control).

A dense initialization under a mask gives each output unit the variance its *dense* fan-in (or
fan-out) calls for, although only a fraction of its inputs is active. The sparse-aware init draws
each unit's incoming weights for its *active* fan-in (He): for a prunable kernel of shape
``(..., out)`` (a dense ``(in, out)`` or a conv ``(kh, kw, in, out)`` kernel) and its mask ``m``,

  ``n_j = sum(m[..., j])``   (the active inputs of output unit j)
  ``w[..., j] = z[..., j] * sqrt(gain / n_j) * m[..., j]``,   ``z ~ N(0, 1)`` i.i.d.

so each active weight of unit j has variance ``gain / n_j`` (``gain = 2``: He, for ReLU) and every
pruned weight is exactly 0. A unit with ``n_j = 0`` (no active input) keeps all-zero weights: it
has nothing to scale. Non-prunable leaves (biases, BatchNorm, the unpruned classifier) are left as
they are. ``z`` is a fresh draw per prunable leaf i from a numpy generator seeded with the key data
of ``fold_in(key, i)`` (no per-shape JAX compilation).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import MaskMismatchError
from snnjax.sparsity.selection import prunable

PyTree = Any
HE_GAIN = 2.0


def _rng(key: jax.Array, index: int) -> np.random.Generator:
  seed = np.asarray(jax.random.key_data(jax.random.fold_in(key, index))).astype(np.uint64)
  return np.random.default_rng(seed.ravel().tolist())


def _flags(params: PyTree, prunable_tree: Optional[PyTree]) -> list[bool]:
  tree = prunable(params) if prunable_tree is None else prunable_tree
  if jax.tree.structure(tree) != jax.tree.structure(params):
    raise MaskMismatchError("prunable_tree structure differs from the params'")
  return [bool(f) for f in jax.tree.leaves(tree)]


def active_fan_in(mask_leaf) -> np.ndarray:
  """(out,) int: the active inputs of each output unit of a ``(..., out)`` kernel's mask."""
  m = np.asarray(mask_leaf).astype(bool)
  return m.reshape(-1, m.shape[-1]).sum(axis=0)


def unit_variances(mask_leaf, gain: float = HE_GAIN) -> np.ndarray:
  """(out,) the stated variance ``gain / n_j`` of each unit's active weights (0 where n_j = 0)."""
  n = active_fan_in(mask_leaf)
  return np.where(n > 0, gain / np.maximum(n, 1), 0.0)


def sparse_aware_init(key: jax.Array, params: PyTree, mask: PyTree, *,
                      prunable_tree: Optional[PyTree] = None, gain: float = HE_GAIN) -> PyTree:
  """``params`` with every prunable kernel redrawn for its units' active fan-in (module doc).

  Args:
    key: a JAX key (the run's init stream).
    params: the params pytree (its prunable leaves' values are replaced, the rest kept).
    mask: bool pytree of ``params``' structure.
    prunable_tree: which leaves are prunable (default :func:`prunable` of ``params``).
    gain: the variance numerator (2: He).
  Returns:
    The new params (jax arrays of the leaves' dtypes), pruned weights exactly 0.
  """
  leaves, treedef = jax.tree.flatten(params)
  masks = jax.tree.leaves(mask)
  if len(masks) != len(leaves):
    raise MaskMismatchError("mask structure differs from the params'")
  out = []
  for i, (leaf, m, flag) in enumerate(zip(leaves, masks, _flags(params, prunable_tree))):
    if not flag:
      out.append(leaf)
      continue
    m = np.asarray(m).astype(bool)
    std = np.sqrt(unit_variances(m, gain))
    z = _rng(key, i).standard_normal(np.shape(leaf))
    w = np.where(m, z * std, 0.0).astype(np.asarray(leaf).dtype)
    out.append(jnp.asarray(w))
  return jax.tree.unflatten(treedef, out)


def shuffle_mask(key: jax.Array, mask: PyTree, *, prunable_tree: Optional[PyTree] = None
                 ) -> PyTree:
  """Each prunable layer's mask entries permuted uniformly at random (its count kept; layer i
  permuted by a numpy generator seeded with ``fold_in(key, i)``); other leaves unchanged."""
  leaves, treedef = jax.tree.flatten(mask)
  out = []
  for i, (m, flag) in enumerate(zip(leaves, _flags(mask, prunable_tree))):
    if not flag:
      out.append(m)
      continue
    flat = np.asarray(m).astype(bool).ravel()
    out.append(jnp.asarray(flat[_rng(key, i).permutation(flat.size)].reshape(np.shape(m))))
  return jax.tree.unflatten(treedef, out)
