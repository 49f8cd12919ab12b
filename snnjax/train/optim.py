"""Masked SGD and learning-rate schedules.

A sparse run keeps its pruned weights at exactly zero for the whole run. ``optax.masked`` selects which
leaves a transform touches; it is not an element-wise sparsity mask. Here the element-wise mask (a pytree
of the params' structure, bool or 0/1 leaves) is applied to the gradient, to the weight-decay term before
it enters the momentum buffer, and to the final update, so masked coordinates of the params, the momentum
and the updates are all exactly zero from init to the end.

The mask is passed to ``update`` as an extra argument (``tx.update(grads, opt_state, params, mask=mask)``),
so one compiled step serves any mask and the mask lives in the train state, not in the optimizer.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

from snnjax.errors import UserError


def mask_updates() -> optax.GradientTransformationExtraArgs:
  """Multiplies the updates element-wise by the ``mask`` extra argument (identity when it is None)."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, mask=None, **extra_args):
    del params, extra_args
    if mask is not None:
      updates = jax.tree.map(lambda u, m: u * m.astype(u.dtype), updates, mask)
    return updates, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def masked_sgd(learning_rate: optax.ScalarOrSchedule, *, momentum: float = 0.9,
               nesterov: bool = False, weight_decay: float = 0.0
               ) -> optax.GradientTransformationExtraArgs:
  """SGD with momentum and coupled (L2) weight decay, as ``torch.optim.SGD`` does it, with a mask.

  Per step: ``g <- mask * (grad + weight_decay * params)``; ``buf <- momentum * buf + g``; the update is
  ``-lr * mask * (g + momentum * buf if nesterov else buf)``. Weight decay applies to every parameter
  (biases and BatchNorm included), like the original study's PyTorch optimizer.

  Args:
    learning_rate: a float or an optax schedule (a function of the step count).
    momentum: momentum coefficient (0 disables the buffer).
    nesterov: Nesterov momentum.
    weight_decay: L2 coefficient added to the gradient.
  Returns:
    A transformation whose ``update`` takes ``mask=`` (None for dense).
  """
  parts = [mask_updates()]
  if weight_decay:
    parts += [optax.add_decayed_weights(weight_decay), mask_updates()]
  if momentum:
    parts.append(optax.trace(decay=momentum, nesterov=nesterov))
  parts += [optax.scale_by_learning_rate(learning_rate), mask_updates()]
  return optax.chain(*parts)


def piecewise_schedule(base_lr: float, steps_per_epoch: int, *,
                       boundaries_epochs: Sequence[float] = (), decay: float = 0.1,
                       warmup_epochs: float = 0.0) -> optax.Schedule:
  """Piecewise-constant learning rate with an optional linear warm-up.

  The rate is ``base_lr * decay**k`` after the k-th boundary (in epochs, converted to steps with
  ``steps_per_epoch``); during the first ``warmup_epochs`` it rises linearly from ``base_lr /
  max(1, warmup_steps)`` to ``base_lr``.
  """
  if base_lr <= 0:
    raise UserError(f"optim.lr must be > 0, got {base_lr}")
  bounds = sorted(int(round(b * steps_per_epoch)) for b in boundaries_epochs)
  schedule = optax.piecewise_constant_schedule(base_lr, {b: decay for b in bounds})
  warmup_steps = int(round(warmup_epochs * steps_per_epoch))
  if warmup_steps <= 0:
    return schedule

  def with_warmup(count):
    ramp = base_lr * (count + 1) / warmup_steps
    return jnp.where(count < warmup_steps, jnp.minimum(ramp, base_lr), schedule(count))

  return with_warmup


SCHEDULES = ("step", "linear", "cosine")


def decay_schedule(kind: str, base_lr: float, total_steps: int, *, warmup_epochs: float = 0.0,
                   steps_per_epoch: int = 1) -> optax.Schedule:
  """A learning rate that decays smoothly to 0 at ``total_steps``: ``linear`` or ``cosine``.

  With ``warmup_epochs`` the rate first rises linearly to ``base_lr`` (as in
  :func:`piecewise_schedule`); the decay then spans the remaining steps. Step ``t`` of the decay
  has ``base_lr * (1 - t / T)`` (linear) or ``base_lr * (1 + cos(pi t / T)) / 2`` (cosine), with
  ``T`` the decay's length: the last step's rate is ``base_lr / T`` (linear), never 0.
  """
  if base_lr <= 0:
    raise UserError(f"optim.lr must be > 0, got {base_lr}")
  if kind not in ("linear", "cosine"):
    raise UserError(f"optim.schedule must be one of {SCHEDULES}, got {kind!r}")
  warmup_steps = max(0, int(round(warmup_epochs * steps_per_epoch)))
  decay_steps = max(1, int(total_steps) - warmup_steps)

  def schedule(count):
    t = jnp.clip(count - warmup_steps, 0, decay_steps).astype(jnp.float32) / decay_steps
    if kind == "linear":
      value = base_lr * (1.0 - t)
    else:
      value = base_lr * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
    if warmup_steps:
      ramp = base_lr * (count + 1) / warmup_steps
      value = jnp.where(count < warmup_steps, jnp.minimum(ramp, base_lr), value)
    return value

  return schedule


def make_optimizer(optim_cfg: Any, steps_per_epoch: int, num_epochs: int = 1
                   ) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
  """Builds the masked SGD and its schedule from a ``config.optim`` block.

  ``optim_cfg.schedule``: ``step`` (piecewise constant, ``boundaries_epochs`` and ``decay``; the
  default) or ``linear`` / ``cosine`` decay to 0 over ``num_epochs`` (see :func:`decay_schedule`;
  ``boundaries_epochs`` is then unused).
  """
  kind = optim_cfg.get("schedule", "step")
  if kind == "step":
    schedule = piecewise_schedule(
        float(optim_cfg.lr), steps_per_epoch,
        boundaries_epochs=tuple(optim_cfg.boundaries_epochs), decay=float(optim_cfg.decay),
        warmup_epochs=float(optim_cfg.get("warmup_epochs", 0.0)))
  else:
    schedule = decay_schedule(kind, float(optim_cfg.lr), steps_per_epoch * int(num_epochs),
                              warmup_epochs=float(optim_cfg.get("warmup_epochs", 0.0)),
                              steps_per_epoch=steps_per_epoch)
  tx = masked_sgd(schedule, momentum=float(optim_cfg.momentum),
                  nesterov=bool(optim_cfg.nesterov), weight_decay=float(optim_cfg.weight_decay))
  return tx, schedule
