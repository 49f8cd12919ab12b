"""Dynamic sparse training in a run (regimes ``rigl`` and ``set``): when and how the mask moves.

A ``rigl`` / ``set`` run starts exactly like ``scratch`` (``starting_point``: the same Init-S and mask
source) and trains with the same plain step. After every optimizer step ``t`` that the drop schedule
marks (``t % dst.update_every == 0`` and ``t <= floor(dst.end_fraction * total steps)``), one drop/grow
update (``snnjax.sparsity.dynamic``) changes the mask, the params and the momentum in the train state:

* RigL's dense gradient is computed by :func:`make_dense_grad_fn`, a separate jitted function called
  at update steps only: the mean cross-entropy on the step's own batch (same indices, same
  augmentation key), BatchNorm in train mode (its statistics are not updated), at the params
  after step ``t``; every coordinate, active or not.
* SET's random growth uses ``fold_in(dst_key(config), t)`` (and, with ``dst.grow_init=normal``,
  the grown weights' initial values a stream of the same key: ``dynamic.grown_initial_values``).
* SET's original rule (``configs/set95.py:mocanu``): ``dst.drop_rule=signed``,
  ``dst.grow_init=normal`` (``dst.grow_std``), ``dst.update_every_epochs=1`` with a constant drop
  fraction (``snnjax.sparsity.dynamic``, docs/ALGORITHMS.md).

Everything derives from the config and the step count, so a resumed run repeats the same updates.
The mask lives in the train state (and in every checkpoint); each epoch's record gets
``mask_change`` (per prunable layer: the fraction of its active weights not active in the initial
mask), ``mask_change_all`` (over all prunable weights) and ``mask_updates`` (updates done so far).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from snnjax.sparsity import dynamic, layer_densities
from snnjax.train import config_io, starting_point
from snnjax.train.state import TrainState
from snnjax.train.step import cross_entropy, forward, gather_batch

PyTree = Any


def dst_key(config: ml_collections.ConfigDict) -> jax.Array:
  """The run's mask-update key (SET's growth); update step ``t`` uses ``fold_in(key, t)``."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 2000),
                            int(config.dst.seed))


def make_dense_grad_fn(apply_fn: Callable, *, augment: bool, compute_dtype=None,
                       batch_sharding=None) -> Callable:
  """Jitted ``grads(state, data, idx, key) -> dense gradient pytree`` of the mean cross-entropy
  over the batch ``idx`` (gathered and augmented as ``step.make_train_step`` does with ``key``)."""

  def grads(state, data, idx, key):
    batch, _ = gather_batch(data, idx, key, augment=augment, batch_sharding=batch_sharding)

    def loss_fn(params):
      logits, _ = forward(apply_fn, params, state.batch_stats, batch["x"], train=True,
                          compute_dtype=compute_dtype)
      return jnp.mean(cross_entropy(logits, batch["y"]))

    return jax.grad(loss_fn)(state.params)

  return jax.jit(grads)


def make_update_fn(updater: dynamic.Updater, prunable_tree: PyTree,
                   rule: dynamic.Rule = dynamic.Rule()) -> Callable:
  """Jitted ``update(state, grads, key, fraction) -> state`` (the state buffers are donated)."""

  def update(state: TrainState, grads, key, fraction):
    params, mask, opt_state = dynamic.dst_update(updater, key, state.params, state.mask,
                                                 state.opt_state, grads, fraction, prunable_tree,
                                                 rule)
    return state.replace(params=params, mask=mask, opt_state=opt_state)

  return jax.jit(update, donate_argnums=(0,))


@dataclasses.dataclass
class DynamicSparsity:
  """A run's mask updates: the schedule, the algorithm and the jitted functions."""

  updater: dynamic.Updater
  schedule: dynamic.DropSchedule
  prunable_tree: PyTree
  initial_mask: PyTree
  key: jax.Array
  update_fn: Callable
  grad_fn: Callable | None

  def update(self, state: TrainState, data: dict, idx, step_key, step: int) -> TrainState:
    """The drop/grow update after optimizer step ``step`` (on that step's batch)."""
    grads = self.grad_fn(state, data, idx, step_key) if self.updater.needs_gradient else None
    return self.update_fn(state, grads, jax.random.fold_in(self.key, step),
                          jnp.float32(self.schedule.fraction(step)))

  def wrap(self, step_fn: Callable, first_step: int) -> Callable:
    """``step_fn`` for one epoch whose first step is ``first_step`` (0-based count of the steps
    done before it), followed by :meth:`update` at the schedule's update steps."""
    done = [first_step]

    def step(state, data, idx, key, *args):
      state, metrics = step_fn(state, data, idx, key, *args)
      done[0] += 1
      if self.schedule.is_update_step(done[0]):
        state = self.update(state, data, idx, key, done[0])
      return state, metrics

    return step

  def epoch_metrics(self, state: TrainState, step: int) -> dict:
    """The epoch record's fields after ``step`` optimizer steps."""
    mask = jax.device_get(state.mask)
    change = dynamic.mask_change(mask, self.initial_mask, self.prunable_tree)
    active = {name: n for name, (n, _, _) in
              layer_densities(self.initial_mask, self.prunable_tree).items()}
    total = sum(active.values())
    overall = sum(change[k] * active[k] for k in change) / total if total else 0.0
    return {"mask_change": change, "mask_change_all": overall,
            "mask_updates": sum(1 for t in self.schedule.update_steps() if t <= step)}


def make(config: ml_collections.ConfigDict, model, state: TrainState, steps_per_epoch: int, *,
         augment: bool, compute_dtype=None, batch_sharding=None) -> DynamicSparsity | None:
  """The mask updates of a ``rigl`` / ``set`` run (None for every other regime); ``state`` is the
  run's fresh starting state (its mask is the initial mask)."""
  if config.regime not in config_io.DST_REGIMES:
    return None
  updater = dynamic.get_updater(config.regime)
  prunable = starting_point.prunable_tree(config, state.params)
  schedule = dynamic.make_schedule(config.dst, steps_per_epoch * int(config.num_epochs),
                                   steps_per_epoch)
  grad_fn = (make_dense_grad_fn(model.apply, augment=augment, compute_dtype=compute_dtype,
                                batch_sharding=batch_sharding) if updater.needs_gradient else None)
  return DynamicSparsity(updater=updater, schedule=schedule, prunable_tree=prunable,
                         initial_mask=jax.device_get(state.mask), key=dst_key(config),
                         update_fn=make_update_fn(updater, prunable,
                                                  dynamic.make_rule(config.dst)),
                         grad_fn=grad_fn)
