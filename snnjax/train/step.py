"""The pure train step and the jitted functions around it.

``train_step(state, batch, apply_fn=..., tx=...)`` is the one pure function of training: forward in train
mode, mean softmax cross-entropy over the batch, masked optimizer update. ``make_train_step`` wraps it
into a jitted function that gathers the batch from a device-resident dataset by index and augments it
inside jit, so the host only sends an index vector per step.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

import jax
import jax.numpy as jnp
import optax

from snnjax.data import pipeline
from snnjax.train.state import TrainState

PyTree = Any

# What a train step does when its update is not finite (config.nan_policy): "stop" (default) keeps
# the update (the loop then stops the run without saving it); "skip_step" leaves the state as it was.
NAN_POLICIES = ("stop", "skip_step")


def _all_finite(tree: PyTree) -> jax.Array:
  """One fused reduction: True when every floating leaf of ``tree`` is finite."""
  flags = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)
           if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def _leaf_finite(tree: PyTree) -> list[jax.Array]:
  return [jnp.all(jnp.isfinite(a)) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact)
          else jnp.asarray(True) for a in jax.tree.leaves(tree)]


def finite_part_names(state: TrainState) -> list[str]:
  """The names of the entries of a step's ``finite_parts`` metric, in order: ``loss``, each params
  leaf (``params/<path>``), each BatchNorm statistic (``batch_stats/<path>``), ``gradients``."""
  def paths(prefix, tree):
    return [prefix + "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  return (["loss"] + paths("params/", state.params) + paths("batch_stats/", state.batch_stats)
          + ["gradients"])


def first_nonfinite_part(finite_parts, names: list[str]) -> str:
  """The name of the first False entry of a step's ``finite_parts`` (host-side)."""
  parts = np.asarray(finite_parts)
  bad = np.flatnonzero(~parts)
  return names[int(bad[0])] if bad.size else "nothing"


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy, (n, classes), (n,) -> (n,), computed in float32."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def _cast(tree: PyTree, dtype) -> PyTree:
  if dtype is None:
    return tree
  return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def forward(apply_fn: Callable, params: PyTree, batch_stats: PyTree, x: jax.Array, *,
            train: bool, compute_dtype=None) -> tuple[jax.Array, PyTree]:
  """Runs the model; returns ``(logits float32, new batch_stats)`` (unchanged in eval mode).

  With ``compute_dtype`` (e.g. bfloat16) the params and inputs are cast for the forward pass only:
  the master params, the gradients w.r.t. them and the loss stay float32.
  """
  variables = {"params": _cast(params, compute_dtype)}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  x = x if compute_dtype is None else x.astype(compute_dtype)
  if train and batch_stats:
    logits, updates = apply_fn(variables, x, train=True, mutable=["batch_stats"])
    new_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), updates["batch_stats"],
                             batch_stats)
  else:
    logits = apply_fn(variables, x, train=train)
    new_stats = batch_stats
  return logits.astype(jnp.float32), new_stats


def fisher_penalty(apply_fn: Callable, params: PyTree, batch_stats: PyTree, mask: PyTree,
                   x: jax.Array, key: jax.Array, *, compute_dtype=None) -> jax.Array:
  """Squared norm of the masked mini-batch gradient of the cross-entropy at sampled labels.

  ``||mask * grad_theta (1/m) sum_i -log p(yhat_i | x_i)||^2`` with ``yhat_i`` drawn from the model's
  own softmax (no gradient through the draw), BatchNorm in train mode on ``x`` (m examples). Its
  expectation over the draws is ``Tr(F_batch)/m`` plus the squared norm of the mean gradient: the
  "Fisher penalty" of Jastrzebski et al. (2021), a cheap differentiable proxy of Tr(F).
  """
  logits, _ = forward(apply_fn, params, batch_stats, x, train=True, compute_dtype=compute_dtype)
  sampled = jax.random.categorical(key, jax.lax.stop_gradient(logits))

  def sampled_loss(p):
    out, _ = forward(apply_fn, p, batch_stats, x, train=True, compute_dtype=compute_dtype)
    return jnp.mean(cross_entropy(out, sampled))

  grads = jax.grad(sampled_loss)(params)
  return sum(jnp.sum(jnp.square(g * m.astype(g.dtype)))
             for g, m in zip(jax.tree.leaves(grads), jax.tree.leaves(mask)))


def train_step(state: TrainState, batch: dict, *, apply_fn: Callable,
               tx: optax.GradientTransformationExtraArgs, compute_dtype=None,
               fisher_weight: jax.Array | None = None, fisher_examples: int = 0,
               key: jax.Array | None = None, nan_policy: str = "stop", grad_norm: bool = False
               ) -> tuple[TrainState, dict]:
  """One masked SGD step on ``batch = {"x": (n, ...), "y": (n,)}``.

  The objective is the mean cross-entropy over the n examples, plus ``fisher_weight *
  fisher_penalty`` on the first ``fisher_examples`` examples (all n when 0) when ``fisher_weight``
  is given (``key`` then draws the sampled labels). Returns the new state and metrics averaged over
  the batch: ``loss`` (mean cross-entropy), ``accuracy`` and, with the penalty, ``fisher_penalty``;
  and the step's health: ``finite`` (bool: the loss, the objective, the gradients, the new params
  and BatchNorm statistics are all finite) and ``finite_parts`` (bool vector, one entry per name of
  ``finite_part_names``). With ``nan_policy="skip_step"`` a step that is not ``finite`` returns the
  state unchanged but for its step count (params, BatchNorm statistics, optimizer state).
  With ``grad_norm`` the metrics also hold ``grad_norm``: ``||mask * g||`` (g the gradient of the
  objective at the step's params, before the update; Euclidean norm over every leaf).
  """
  if nan_policy not in NAN_POLICIES:
    raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")

  def loss_fn(params):
    logits, new_stats = forward(apply_fn, params, state.batch_stats, batch["x"], train=True,
                                compute_dtype=compute_dtype)
    loss = jnp.mean(cross_entropy(logits, batch["y"]))
    aux = {}
    objective = loss
    if fisher_weight is not None:
      xs = batch["x"][:fisher_examples] if fisher_examples else batch["x"]
      aux["fisher_penalty"] = fisher_penalty(apply_fn, params, state.batch_stats, state.mask, xs, key,
                                             compute_dtype=compute_dtype)
      objective = loss + fisher_weight * aux["fisher_penalty"]
    return objective, (loss, logits, new_stats, aux)

  (objective, (loss, logits, new_stats, aux)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params, mask=state.mask)
  params = optax.apply_updates(state.params, updates)
  parts = ([jnp.isfinite(loss) & jnp.isfinite(objective)] + _leaf_finite(params)
           + _leaf_finite(new_stats) + [_all_finite(grads)])
  finite_parts = jnp.stack(parts)
  finite = jnp.all(finite_parts)
  if nan_policy == "skip_step":
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    params, new_stats = keep(params, state.params), keep(new_stats, state.batch_stats)
    opt_state = keep(opt_state, state.opt_state)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                            opt_state=opt_state)
  accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32))
  if grad_norm:
    aux["grad_norm"] = jnp.sqrt(sum(jnp.sum(jnp.square(g * m.astype(g.dtype))) for g, m in zip(
        jax.tree.leaves(grads), jax.tree.leaves(state.mask))))
  return new_state, {"loss": loss, "accuracy": accuracy, **aux, "finite": finite,
                     "finite_parts": finite_parts}


def gather_batch(data: dict, idx: jax.Array, key: jax.Array, *, augment: bool,
                 batch_sharding=None) -> tuple[dict, jax.Array]:
  """Inside jit: the batch ``idx`` (B,) of the device-resident ``data``, augmented with the first
  half of ``key`` when ``augment`` and sharded by ``batch_sharding``; returns it and the second
  half of ``key`` (the step's other randomness, e.g. the Fisher penalty's sampled labels)."""
  batch = {"x": jnp.take(data["x"], idx, axis=0), "y": jnp.take(data["y"], idx, axis=0)}
  aug_key, rest_key = jax.random.split(key)
  if augment:
    batch["x"] = pipeline.augment_batch(aug_key, batch["x"])
  if batch_sharding is not None:
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
  return batch, rest_key


def make_train_step(apply_fn: Callable, tx: optax.GradientTransformationExtraArgs, *,
                    augment: bool, compute_dtype=None, batch_sharding=None,
                    fisher_examples: int | None = None, nan_policy: str = "stop",
                    grad_norm: bool = False) -> Callable:
  """Jitted ``step(state, data, idx, key[, fisher_weight]) -> (state, metrics)``.

  ``data = {"x": (N, ...), "y": (N,)}`` is the training set resident on the device(s); ``idx`` (B,) int32
  selects the batch; ``key`` drives the augmentation (pad-4 random crop + flip) when ``augment``.
  ``batch_sharding`` (a ``jax.sharding.NamedSharding``) shards the gathered batch over a device mesh for
  data-parallel training; the state stays replicated and XLA turns the batch means (loss, BatchNorm
  statistics) into cross-device reductions. The state buffers are donated. With
  ``fisher_examples`` (an int; 0 = the whole batch) the step takes a scalar ``fisher_weight`` and adds
  the Fisher penalty (see ``train_step``). ``nan_policy`` and ``grad_norm`` are ``train_step``'s.
  """

  def step(state, data, idx, key, fisher_weight=None):
    batch, fisher_key = gather_batch(data, idx, key, augment=augment,
                                     batch_sharding=batch_sharding)
    if fisher_examples is None:
      fisher_weight = None
    return train_step(state, batch, apply_fn=apply_fn, tx=tx, compute_dtype=compute_dtype,
                      fisher_weight=fisher_weight, fisher_examples=fisher_examples or 0,
                      key=fisher_key, nan_policy=nan_policy, grad_norm=grad_norm)

  return jax.jit(step, donate_argnums=(0,))


def make_predict_fn(apply_fn: Callable, *, compute_dtype=None) -> Callable:
  """Jitted eval-mode ``predict(params, batch_stats, x) -> logits (n, classes) float32``."""
  return jax.jit(functools.partial(_predict, apply_fn, compute_dtype))


def _predict(apply_fn, compute_dtype, params, batch_stats, x):
  logits, _ = forward(apply_fn, params, batch_stats, x, train=False, compute_dtype=compute_dtype)
  return logits
