"""Dynamic sparse training: the drop-fraction schedule and the drop/grow mask update (RigL, SET).

Every ``update_every`` steps until ``end_step`` (RigL, Evci et al. 2020; SET, Mocanu et al. 2018),
each prunable leaf drops its ``k`` lowest-|w| active weights and grows ``k`` inactive ones, so its
active count never changes. ``k = floor(f * n_active + 1/2)`` (round half up, computed in float32),
with ``f`` the schedule's drop fraction at that step and ``n_active`` the leaf's active count.
What is grown is an algorithm's choice, found by name in :data:`UPDATERS` (jaxpruner style):

* ``rigl``: the ``k`` largest |dense gradient| (the gradient on the current batch at every
  coordinate, active or not);
* ``set``: ``k`` uniformly at random, from a seeded key.

Candidates for growth are the coordinates inactive after the drop (a weight just dropped may be
grown again, as in RigL). Grown weights start at exactly 0 and their optimizer state (momentum) is
zeroed (:func:`zero_changed`), so after every update the pruned weights and their momentum are
exactly 0. Ties are broken by the flat index (stable sorts): the update is deterministic.

Everything here is a pure, jittable function of params / mask / gradient pytrees (no models).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import UserError
from snnjax.sparsity.selection import path_str

PyTree = Any
DECAYS = ("cosine", "constant")


@dataclasses.dataclass(frozen=True)
class DropSchedule:
  """When the mask changes and by how much.

  ``fraction(t) = f0 / 2 * (1 + cos(pi * t / end_step))`` (``decay="cosine"``; ``f0`` for
  ``"constant"``) for ``0 < t <= end_step``; an update happens after step ``t`` (1-based: ``t``
  optimizer steps done) when ``t % update_every == 0`` and ``t <= end_step``.
  """

  end_step: int
  update_every: int = 100
  initial_fraction: float = 0.3
  decay: str = "cosine"

  def __post_init__(self):
    if self.update_every < 1:
      raise UserError(f"dst.update_every must be >= 1, got {self.update_every}")
    if not 0.0 <= self.initial_fraction <= 1.0:
      raise UserError(f"dst.drop_fraction must be in [0, 1], got {self.initial_fraction}")
    if self.decay not in DECAYS:
      raise UserError(f"dst.decay must be one of {DECAYS}, got {self.decay!r}")

  def fraction(self, step) -> float:
    """The drop fraction at step ``step`` (a host number; 0 after ``end_step``)."""
    if step > self.end_step or self.end_step <= 0:
      return 0.0
    if self.decay == "constant":
      return float(self.initial_fraction)
    return float(self.initial_fraction / 2 * (1 + math.cos(math.pi * step / self.end_step)))

  def is_update_step(self, step: int) -> bool:
    """Whether the mask is updated after ``step`` optimizer steps (host ints)."""
    return 0 < step <= self.end_step and step % self.update_every == 0

  def update_steps(self) -> list[int]:
    """Every step after which the mask changes, in order."""
    return list(range(self.update_every, self.end_step + 1, self.update_every))


def make_schedule(dst_config, total_steps: int) -> DropSchedule:
  """The schedule of a ``config.dst`` block (``update_every``, ``end_fraction``, ``drop_fraction``,
  ``decay``) for a run of ``total_steps`` optimizer steps: ``end_step = floor(end_fraction *
  total_steps)``."""
  end_fraction = float(dst_config.end_fraction)
  if not 0.0 <= end_fraction <= 1.0:
    raise UserError(f"dst.end_fraction must be in [0, 1], got {end_fraction}")
  return DropSchedule(end_step=int(end_fraction * total_steps),
                      update_every=int(dst_config.update_every),
                      initial_fraction=float(dst_config.drop_fraction), decay=str(dst_config.decay))


def num_to_update(fraction, n_active) -> jax.Array:
  """``k = floor(fraction * n_active + 1/2)`` as int32 (float32 arithmetic; works on tracers)."""
  f = jnp.asarray(fraction, jnp.float32)
  return jnp.floor(f * jnp.asarray(n_active, jnp.float32) + 0.5).astype(jnp.int32)


def _lowest(scores: jax.Array, k) -> jax.Array:
  """Bool array of ``scores``' shape: True at the ``k`` smallest entries (ties: lower flat index
  first). ``k`` may be a tracer."""
  flat = scores.reshape(-1)
  order = jnp.argsort(flat, stable=True)
  rank = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
  return (rank < k).reshape(scores.shape)


def drop_grow(weight: jax.Array, mask: jax.Array, grow_score: jax.Array, fraction
              ) -> tuple[jax.Array, jax.Array]:
  """One leaf's update: returns ``(new_mask, kept)`` (bool, the weight's shape).

  ``kept``: the active weights that survive the drop (all but the ``k`` lowest |w|); ``new_mask``:
  ``kept`` plus the ``k`` largest ``grow_score`` entries among the coordinates not kept. The active
  count of ``new_mask`` equals that of ``mask`` exactly.
  """
  mask = mask.astype(bool)
  n_active = jnp.sum(mask)
  k = num_to_update(fraction, n_active)
  drop_score = jnp.where(mask, jnp.abs(weight).astype(jnp.float32), jnp.inf)
  dropped = _lowest(drop_score, k) & mask
  kept = mask & ~dropped
  score = jnp.where(kept, -jnp.inf, grow_score.astype(jnp.float32))
  grown = _lowest(-score, k) & ~kept
  return kept | grown, kept


# ---- growth criteria: grow_score(key, params, grads) -> a score pytree (larger grows first) ----

def rigl_scores(key: jax.Array, params: PyTree, grads: PyTree) -> PyTree:
  """RigL: |dense gradient| (``key`` unused)."""
  del key, params
  return jax.tree.map(jnp.abs, grads)


def set_scores(key: jax.Array, params: PyTree, grads: PyTree) -> PyTree:
  """SET: i.i.d. uniform scores, leaf ``i`` from ``fold_in(key, i)`` (``grads`` unused, may be None)."""
  del grads
  leaves, treedef = jax.tree.flatten(params)
  return treedef.unflatten([jax.random.uniform(jax.random.fold_in(key, i), jnp.shape(p))
                            for i, p in enumerate(leaves)])


@dataclasses.dataclass(frozen=True)
class Updater:
  """A dynamic-sparsity algorithm: its growth criterion and whether it needs the dense gradient."""

  name: str
  grow_scores: Callable[[jax.Array, PyTree, PyTree], PyTree]
  needs_gradient: bool


UPDATERS = {
    "rigl": Updater("rigl", rigl_scores, needs_gradient=True),
    "set": Updater("set", set_scores, needs_gradient=False),
}


def get_updater(name: str) -> Updater:
  if name not in UPDATERS:
    raise UserError(f"unknown dynamic-sparsity algorithm {name!r}; choose one of {tuple(UPDATERS)}")
  return UPDATERS[name]


def update_mask(params: PyTree, mask: PyTree, scores: PyTree, prunable_tree: PyTree, fraction
                ) -> tuple[PyTree, PyTree]:
  """:func:`drop_grow` on every prunable leaf; returns ``(new_mask, kept)`` pytrees.

  ``prunable_tree`` (Python bools, the params' structure) is static; non-prunable leaves keep their
  mask and are all kept.
  """
  p_leaves, treedef = jax.tree.flatten(params)
  new, kept = [], []
  for p, m, s, keep in zip(p_leaves, jax.tree.leaves(mask), jax.tree.leaves(scores),
                           jax.tree.leaves(prunable_tree)):
    if keep:
      n, k = drop_grow(p, m, s, fraction)
    else:
      n, k = jnp.asarray(m).astype(bool), jnp.asarray(m).astype(bool)
    new.append(n)
    kept.append(k)
  return treedef.unflatten(new), treedef.unflatten(kept)


def zero_changed(tree: PyTree, params: PyTree, kept: PyTree) -> PyTree:
  """``tree`` (an optimizer state) with every sub-tree of ``params``' structure zeroed where
  ``kept`` is False (momentum of pruned and grown weights); other leaves (counts) unchanged."""
  params_def = jax.tree.structure(params)

  def is_params_like(node) -> bool:
    return jax.tree.structure(node) == params_def

  def zero(node):
    if not is_params_like(node):
      return node
    return jax.tree.map(lambda a, k: jnp.where(k, a, jnp.zeros_like(a)), node, kept)

  return jax.tree.map(zero, tree, is_leaf=is_params_like)


def apply_update(params: PyTree, opt_state: PyTree, kept: PyTree) -> tuple[PyTree, PyTree]:
  """Params and optimizer state after a mask update: 0 wherever the weight was not kept (pruned,
  or grown: grown weights start at exactly 0 with zero momentum)."""
  new_params = jax.tree.map(lambda p, k: jnp.where(k, p, jnp.zeros_like(p)), params, kept)
  return new_params, zero_changed(opt_state, params, kept)


def dst_update(updater: Updater, key: jax.Array, params: PyTree, mask: PyTree, opt_state: PyTree,
               grads: PyTree | None, fraction, prunable_tree: PyTree
               ) -> tuple[PyTree, PyTree, PyTree]:
  """One drop/grow update of ``updater``: returns ``(params, mask, opt_state)``.

  ``grads``: the dense gradient on the current batch (``None`` for an updater that does not need
  one). Jittable with ``updater`` and ``prunable_tree`` static.
  """
  if updater.needs_gradient and grads is None:
    raise ValueError(f"{updater.name} grows by the dense gradient: pass grads")
  scores = updater.grow_scores(key, params, grads)
  new_mask, kept = update_mask(params, mask, scores, prunable_tree, fraction)
  new_params, new_opt_state = apply_update(params, opt_state, kept)
  return new_params, new_mask, new_opt_state


def mask_change(mask: PyTree, initial_mask: PyTree, prunable_tree: PyTree) -> dict[str, float]:
  """``{layer path: fraction of its active weights not active in initial_mask}`` (host numpy),
  for every prunable leaf: 0 = the initial mask, 1 = no weight in common."""
  out = {}
  for (path, m), m0, keep in zip(jax.tree_util.tree_flatten_with_path(mask)[0],
                                 jax.tree.leaves(initial_mask), jax.tree.leaves(prunable_tree)):
    if keep:
      m, m0 = np.asarray(m).astype(bool), np.asarray(m0).astype(bool)
      active = int(m.sum())
      out[path_str(path)] = float((m & ~m0).sum() / active) if active else 0.0
  return out
