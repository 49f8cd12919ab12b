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

SET's original rule (Mocanu et al. 2018; ``configs/set95.py:mocanu``) is offered by two options
(:class:`Rule`): ``signed_drop`` drops the fraction ``f`` of the positive weights closest to 0 and,
separately, the fraction ``f`` of the negative weights closest to 0 (``k_pos = floor(f * n_pos +
1/2)``, ``k_neg`` likewise; an active weight that is exactly 0 is dropped too), then grows as many
as were dropped; ``grow_std > 0`` starts each grown weight at ``grow_std * N(0, 1)`` (Mocanu's
code: ``randn() / 10``) instead of 0, from ``fold_in(fold_in(key, GROW_INIT_STREAM), leaf)``.

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
DROP_RULES = ("magnitude", "signed")  # k lowest |w| | SET's per-sign drop (Mocanu et al. 2018)
GROW_INITS = ("zero", "normal")       # grown weights start at 0 | at grow_std * N(0, 1)


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


def make_schedule(dst_config, total_steps: int, steps_per_epoch: int | None = None
                  ) -> DropSchedule:
  """The schedule of a ``config.dst`` block (``update_every``, ``end_fraction``, ``drop_fraction``,
  ``decay``) for a run of ``total_steps`` optimizer steps: ``end_step = floor(end_fraction *
  total_steps)``.

  With ``update_every_epochs = e > 0`` (SET's rewiring once per epoch: e = 1) the update comes
  after every e-th epoch's last step instead (``update_every = e * steps_per_epoch``), never after
  the run's last step (SET does not rewire after the last epoch)."""
  end_fraction = float(dst_config.end_fraction)
  if not 0.0 <= end_fraction <= 1.0:
    raise UserError(f"dst.end_fraction must be in [0, 1], got {end_fraction}")
  end_step = int(end_fraction * total_steps)
  update_every = int(dst_config.update_every)
  epochs = int(dst_config.get("update_every_epochs", 0))
  if epochs:
    if not steps_per_epoch:
      raise UserError("dst.update_every_epochs needs the number of steps per epoch")
    update_every = epochs * int(steps_per_epoch)
    end_step = min(end_step, total_steps - 1)
  return DropSchedule(end_step=end_step, update_every=update_every,
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


@dataclasses.dataclass(frozen=True)
class Rule:
  """How a drop/grow update treats the weights (static under jit): ``signed_drop`` (SET's
  original drop: per sign, see the module doc) and ``grow_std`` (0: grown weights start at 0;
  > 0: at ``grow_std * N(0, 1)``). The default is snnjax's RigL/SET rule."""

  signed_drop: bool = False
  grow_std: float = 0.0


GROW_INIT_STREAM = 0x5E7  # the fold_in stream of the grown weights' initial values


def signed_dropped(weight: jax.Array, mask: jax.Array, fraction) -> jax.Array:
  """SET's drop (Mocanu et al. 2018): the ``floor(f * n_pos + 1/2)`` smallest positive and the
  ``floor(f * n_neg + 1/2)`` largest negative active weights, and any active weight exactly 0."""
  mask = mask.astype(bool)
  w = weight.astype(jnp.float32)
  pos, neg = mask & (w > 0), mask & (w < 0)
  drop_pos = _lowest(jnp.where(pos, w, jnp.inf), num_to_update(fraction, jnp.sum(pos))) & pos
  drop_neg = _lowest(jnp.where(neg, -w, jnp.inf), num_to_update(fraction, jnp.sum(neg))) & neg
  return drop_pos | drop_neg | (mask & (w == 0))


def drop_grow(weight: jax.Array, mask: jax.Array, grow_score: jax.Array, fraction, *,
              signed_drop: bool = False) -> tuple[jax.Array, jax.Array]:
  """One leaf's update: returns ``(new_mask, kept)`` (bool, the weight's shape).

  ``kept``: the active weights that survive the drop (all but the ``k`` lowest |w|; with
  ``signed_drop`` SET's per-sign drop, :func:`signed_dropped`); ``new_mask``: ``kept`` plus as
  many of the largest ``grow_score`` entries among the coordinates not kept as were dropped. The
  active count of ``new_mask`` equals that of ``mask`` exactly.
  """
  mask = mask.astype(bool)
  if signed_drop:
    dropped = signed_dropped(weight, mask, fraction)
    k = jnp.sum(dropped).astype(jnp.int32)
  else:
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


def update_mask(params: PyTree, mask: PyTree, scores: PyTree, prunable_tree: PyTree, fraction,
                *, signed_drop: bool = False) -> tuple[PyTree, PyTree]:
  """:func:`drop_grow` on every prunable leaf; returns ``(new_mask, kept)`` pytrees.

  ``prunable_tree`` (Python bools, the params' structure) is static; non-prunable leaves keep their
  mask and are all kept.
  """
  p_leaves, treedef = jax.tree.flatten(params)
  new, kept = [], []
  for p, m, s, keep in zip(p_leaves, jax.tree.leaves(mask), jax.tree.leaves(scores),
                           jax.tree.leaves(prunable_tree)):
    if keep:
      n, k = drop_grow(p, m, s, fraction, signed_drop=signed_drop)
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


def apply_update(params: PyTree, opt_state: PyTree, kept: PyTree, *,
                 grown_values: PyTree | None = None, new_mask: PyTree | None = None
                 ) -> tuple[PyTree, PyTree]:
  """Params and optimizer state after a mask update: 0 wherever the weight was not kept (pruned,
  or grown: grown weights start at exactly 0 with zero momentum), or with ``grown_values`` (and
  ``new_mask``) the grown weights start at those values (their momentum still 0)."""
  new_params = jax.tree.map(lambda p, k: jnp.where(k, p, jnp.zeros_like(p)), params, kept)
  if grown_values is not None:
    new_params = jax.tree.map(
        lambda p, k, n, v: jnp.where(n & ~k, v.astype(p.dtype), p), new_params, kept, new_mask,
        grown_values)
  return new_params, zero_changed(opt_state, params, kept)


def grown_initial_values(key: jax.Array, params: PyTree, std: float) -> PyTree:
  """``std * N(0, 1)`` of every leaf's shape, leaf ``i`` from
  ``fold_in(fold_in(key, GROW_INIT_STREAM), i)`` (SET's new weights, Mocanu et al. 2018)."""
  base = jax.random.fold_in(key, GROW_INIT_STREAM)
  leaves, treedef = jax.tree.flatten(params)
  return treedef.unflatten([std * jax.random.normal(jax.random.fold_in(base, i), jnp.shape(p))
                            for i, p in enumerate(leaves)])


def dst_update(updater: Updater, key: jax.Array, params: PyTree, mask: PyTree, opt_state: PyTree,
               grads: PyTree | None, fraction, prunable_tree: PyTree, rule: Rule = Rule()
               ) -> tuple[PyTree, PyTree, PyTree]:
  """One drop/grow update of ``updater``: returns ``(params, mask, opt_state)``.

  ``grads``: the dense gradient on the current batch (``None`` for an updater that does not need
  one). ``rule``: :class:`Rule` (default: snnjax's). Jittable with ``updater``, ``prunable_tree``
  and ``rule`` static.
  """
  if updater.needs_gradient and grads is None:
    raise ValueError(f"{updater.name} grows by the dense gradient: pass grads")
  scores = updater.grow_scores(key, params, grads)
  new_mask, kept = update_mask(params, mask, scores, prunable_tree, fraction,
                               signed_drop=rule.signed_drop)
  grown = (grown_initial_values(key, params, rule.grow_std) if rule.grow_std > 0 else None)
  new_params, new_opt_state = apply_update(params, opt_state, kept, grown_values=grown,
                                           new_mask=new_mask)
  return new_params, new_mask, new_opt_state


def make_rule(dst_config) -> Rule:
  """The :class:`Rule` of a ``config.dst`` block (``drop_rule``: ``magnitude`` | ``signed``;
  ``grow_init``: ``zero`` | ``normal`` with ``grow_std``); a block without them: the default."""
  drop_rule = str(dst_config.get("drop_rule", "magnitude"))
  grow_init = str(dst_config.get("grow_init", "zero"))
  if drop_rule not in DROP_RULES:
    raise UserError(f"dst.drop_rule must be one of {DROP_RULES}, got {drop_rule!r}")
  if grow_init not in GROW_INITS:
    raise UserError(f"dst.grow_init must be one of {GROW_INITS}, got {grow_init!r}")
  return Rule(signed_drop=drop_rule == "signed",
              grow_std=float(dst_config.get("grow_std", 0.1)) if grow_init == "normal" else 0.0)


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
