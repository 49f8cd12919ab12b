"""Mask builders: magnitude (global or layerwise), uniform random, and ERK.

All return a bool mask with ``params``' structure (jax arrays); non-prunable leaves are all
True. Counts are exact: with ``n`` prunable weights (in total or in a layer) the builder
prunes ``round(sparsity * n)`` of them (round half up):

* ``magnitude_mask(scope="global")``: over all prunable weights together;
* ``magnitude_mask(scope="layerwise")`` and ``random_mask``: in each layer separately;
* ``erk_mask``: the total over all prunable weights, split among layers by ERK.

Ties in ``|w|`` are broken by position: among equal magnitudes the weight that comes first
(leaves in tree-flatten order, entries in row-major order) is pruned first.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import MaskMismatchError
from snnjax.errors import UserError
from snnjax.sparsity import erk
from snnjax.sparsity.masks import validate_sparsity
from snnjax.sparsity.selection import prunable

PyTree = Any
SCOPES = ("global", "layerwise")


def _split(params: PyTree, prunable_tree: Optional[PyTree]):
  """(leaves, treedef, flags): the params' leaves and whether each is prunable."""
  tree = prunable(params) if prunable_tree is None else prunable_tree
  leaves, treedef = jax.tree.flatten(params)
  flags = jax.tree.leaves(tree)
  if jax.tree.structure(tree) != treedef:
    raise MaskMismatchError("prunable_tree structure differs from the params'")
  return leaves, treedef, [bool(f) for f in flags]


def _assemble(leaves, treedef, flags, keeps) -> PyTree:
  """The mask pytree: ``keeps`` (flat bool arrays, one per prunable leaf) reshaped in place."""
  keeps = iter(keeps)
  out = []
  for leaf, flag in zip(leaves, flags):
    shape = np.shape(leaf)
    out.append(jnp.asarray(next(keeps).reshape(shape)) if flag else jnp.ones(shape, bool))
  return jax.tree.unflatten(treedef, out)


def _keep_largest(scores: np.ndarray, num_pruned: int) -> np.ndarray:
  """Flat bool keep-vector pruning the ``num_pruned`` smallest scores (ties: earliest first)."""
  keep = np.ones(scores.shape[0], bool)
  keep[np.argsort(scores, kind="stable")[:num_pruned]] = False
  return keep


def magnitude_mask(params: PyTree, sparsity: float, *, scope: str = "global",
                   prunable_tree: Optional[PyTree] = None, within: Optional[PyTree] = None
                   ) -> PyTree:
  """Keeps the largest-``|w|`` prunable weights.

  Args:
    params: the params pytree (e.g. the dense solution Sol-D).
    sparsity: fraction of prunable weights to remove, in [0, 1).
    scope: ``"global"`` (one threshold over all prunable weights, the study's choice) or
      ``"layerwise"`` (the same fraction in every prunable layer).
    prunable_tree: bool pytree of prunable leaves; default :func:`prunable` of ``params``.
    within: optional bool mask: weights outside it are pruned first, so that the result is nested
      in it whenever ``sparsity`` is at least its sparsity (iterative magnitude pruning).

  Returns:
    The bool mask pytree.
  """
  return score_mask(jax.tree.map(lambda p: np.abs(np.asarray(p, np.float32)), params), sparsity,
                    scope=scope, prunable_tree=prunable_tree, within=within)


def score_mask(scores: PyTree, sparsity: float, *, scope: str = "global",
               prunable_tree: Optional[PyTree] = None, within: Optional[PyTree] = None
               ) -> PyTree:
  """Keeps the highest-scored prunable weights (``scores`` has the params' structure).

  Prunes ``round(sparsity * n)`` of the n prunable weights (``scope="global"``: over all of them
  together; ``"layerwise"``: in each prunable layer). Weights outside ``within`` (a bool mask)
  score -inf, so they are pruned first; ties are broken by position (earliest pruned first).
  """
  sparsity = validate_sparsity(sparsity)
  if scope not in SCOPES:
    raise UserError(f"mask scope must be one of {SCOPES}, got {scope!r}")
  leaves, treedef, flags = _split(scores, prunable_tree)
  inside = (jax.tree.leaves(within) if within is not None else [None] * len(leaves))
  if len(inside) != len(leaves):
    raise MaskMismatchError("within has another structure than the scores")
  flat_scores = []
  for leaf, flag, keep in zip(leaves, flags, inside):
    if flag:
      s = np.asarray(leaf, np.float64).ravel()
      if keep is not None:
        s = np.where(np.asarray(keep).ravel(), s, -np.inf)
      flat_scores.append(s)
  if scope == "layerwise":
    keeps = [_keep_largest(s, erk.round_half_up(sparsity * s.size)) for s in flat_scores]
  else:
    flat = np.concatenate(flat_scores) if flat_scores else np.zeros(0)
    keep = _keep_largest(flat, erk.round_half_up(sparsity * flat.size))
    keeps = (np.split(keep, np.cumsum([s.size for s in flat_scores])[:-1]) if flat_scores
             else [])
  return _assemble(leaves, treedef, flags, keeps)


def _random_keeps(key: jax.Array, sizes, num_active) -> list[np.ndarray]:
  """Per layer i, ``num_active[i]`` of ``sizes[i]`` positions drawn without replacement.

  Layer i's positions come from ``numpy.random.default_rng`` seeded with the key data of
  ``fold_in(key, i)``: a deterministic function of ``key`` with no per-size JAX compilation.
  """
  keeps = []
  for i, (n, a) in enumerate(zip(sizes, num_active)):
    seed = np.asarray(jax.random.key_data(jax.random.fold_in(key, i))).astype(np.uint64)
    keep = np.zeros(n, bool)
    keep[np.random.default_rng(seed.ravel().tolist()).permutation(n)[:a]] = True
    keeps.append(keep)
  return keeps


def random_mask(key: jax.Array, params: PyTree, sparsity: float, *,
                prunable_tree: Optional[PyTree] = None) -> PyTree:
  """Uniformly random mask with the same sparsity in every prunable layer.

  Each prunable layer of n weights keeps a uniformly random ``n - round(sparsity * n)`` of them;
  layer i (in tree order of the prunable leaves) draws from ``fold_in(key, i)`` (its key data
  seeds a numpy generator).
  """
  sparsity = validate_sparsity(sparsity)
  leaves, treedef, flags = _split(params, prunable_tree)
  sizes = [int(np.size(l)) for l, f in zip(leaves, flags) if f]
  active = [n - erk.round_half_up(sparsity * n) for n in sizes]
  return _assemble(leaves, treedef, flags, _random_keeps(key, sizes, active))


def erk_mask(key: jax.Array, params: PyTree, sparsity: float, *,
             prunable_tree: Optional[PyTree] = None, power_scale: float = 1.0) -> PyTree:
  """Random mask with Erdos-Renyi-Kernel layer densities (Evci et al. 2020).

  Layer densities follow :func:`snnjax.sparsity.erk.erk_densities` (proportional to
  ``(sum(shape) / prod(shape)) ** power_scale``, capped at 1 with the excess redistributed);
  integer counts per layer by largest remainder, so that the total number of active prunable
  weights is exactly ``N - round(sparsity * N)``. Positions within a layer are uniformly
  random, drawn as in :func:`random_mask`.
  """
  sparsity = validate_sparsity(sparsity)
  leaves, treedef, flags = _split(params, prunable_tree)
  shapes = [np.shape(l) for l, f in zip(leaves, flags) if f]
  active = erk.erk_counts(shapes, sparsity, power_scale=power_scale) if shapes else []
  sizes = [int(np.prod(s)) for s in shapes]
  return _assemble(leaves, treedef, flags, _random_keeps(key, sizes, active))
