"""Mask utilities: apply, check, count and tabulate.

A mask is a pytree with the params' exact structure whose leaves are bool arrays of each
param's shape (True = active); non-prunable leaves are all True. Densities are computed over
the *prunable* leaves only (see :func:`snnjax.sparsity.selection.prunable`).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import MaskMismatchError
from snnjax.errors import UserError
from snnjax.sparsity.selection import path_str
from snnjax.sparsity.selection import prunable

PyTree = Any


def check_mask(params: PyTree, mask: PyTree) -> None:
  """Raises :class:`MaskMismatchError` unless ``mask`` has ``params``' structure and shapes.

  Works on arrays and on tracers (shapes are static), so it may be called inside jit.
  """
  params_def, mask_def = jax.tree.structure(params), jax.tree.structure(mask)
  if params_def != mask_def:
    p_paths = {path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    m_paths = {path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(mask)[0]}
    only_p, only_m = sorted(p_paths - m_paths), sorted(m_paths - p_paths)
    detail = (f"params-only leaves {only_p[:3]}, mask-only leaves {only_m[:3]}"
              if only_p or only_m else f"{params_def} vs {mask_def}")
    raise MaskMismatchError(f"mask structure differs from the params: {detail}")
  for (path, p), m in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                          jax.tree.leaves(mask)):
    if np.shape(p) != np.shape(m):
      raise MaskMismatchError(f"mask leaf {path_str(path)} has shape {np.shape(m)}, the param "
                              f"{np.shape(p)}")


def apply_mask(params: PyTree, mask: Optional[PyTree]) -> PyTree:
  """``params`` with masked-out entries set to 0 (``mask=None`` returns ``params``).

  Leaves keep their dtype; nonzero mask entries count as active. Jit-able.
  """
  if mask is None:
    return params
  check_mask(params, mask)
  return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask)


def dense_mask(params: PyTree) -> PyTree:
  """The all-True mask of ``params`` (density 1)."""
  return jax.tree.map(lambda p: jnp.ones(np.shape(p), bool), params)


def _prunable_or_default(mask: PyTree, prunable_tree: Optional[PyTree]) -> PyTree:
  tree = prunable(mask) if prunable_tree is None else prunable_tree
  if jax.tree.structure(tree) != jax.tree.structure(mask):
    raise MaskMismatchError("prunable_tree structure differs from the mask's")
  return tree


def layer_densities(mask: PyTree, prunable_tree: Optional[PyTree] = None
                    ) -> dict[str, tuple[int, int, float]]:
  """``{path: (active, total, density)}`` for every prunable leaf, in tree order.

  ``prunable_tree`` defaults to :func:`prunable` of the mask (all conv/dense kernels but the
  ``head``).
  """
  tree = _prunable_or_default(mask, prunable_tree)
  out = {}
  for (path, m), keep in zip(jax.tree_util.tree_flatten_with_path(mask)[0],
                             jax.tree.leaves(tree)):
    if keep:
      m = np.asarray(m)
      active, total = int(np.count_nonzero(m)), int(m.size)
      out[path_str(path)] = (active, total, active / total if total else 1.0)
  return out


def density(mask: PyTree, prunable_tree: Optional[PyTree] = None) -> float:
  """Fraction of active weights over all prunable leaves together (1.0 if there are none)."""
  rows = layer_densities(mask, prunable_tree).values()
  total = sum(r[1] for r in rows)
  return sum(r[0] for r in rows) / total if total else 1.0


def sparsity_of(mask: PyTree, prunable_tree: Optional[PyTree] = None) -> float:
  """``1 - density(mask, prunable_tree)``: the fraction of prunable weights removed."""
  return 1.0 - density(mask, prunable_tree)


def density_table(mask: PyTree, prunable_tree: Optional[PyTree] = None) -> str:
  """A Markdown table of the prunable layers: path, shape, active, total, density; plus total."""
  tree = _prunable_or_default(mask, prunable_tree)
  shapes = {path_str(p): np.shape(m) for p, m in jax.tree_util.tree_flatten_with_path(mask)[0]}
  rows = layer_densities(mask, tree)
  lines = ["| layer | shape | active | total | density |", "|---|---|---:|---:|---:|"]
  for name, (active, total, d) in rows.items():
    shape = "x".join(str(s) for s in shapes[name])
    lines.append(f"| {name} | {shape} | {active:,} | {total:,} | {d:.4f} |")
  active = sum(r[0] for r in rows.values())
  total = sum(r[1] for r in rows.values())
  lines.append(f"| **total** | | {active:,} | {total:,} | "
               f"{(active / total if total else 1.0):.4f} |")
  return "\n".join(lines)


def count_params(params: PyTree) -> int:
  """Number of scalars in ``params`` (every leaf, prunable or not)."""
  return int(sum(np.size(p) for p in jax.tree.leaves(params)))


def validate_sparsity(sparsity: float) -> float:
  """``sparsity`` as a float, or :class:`UserError` unless it lies in [0, 1)."""
  try:
    value = float(sparsity)
  except (TypeError, ValueError) as e:
    raise UserError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from e
  if not 0.0 <= value < 1.0:
    raise UserError(f"sparsity must be in [0, 1), got {sparsity}")
  return value
