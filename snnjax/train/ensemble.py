"""K members of one training config trained as one vmapped program.

The one ensemble mechanism of snnjax: the seeds of ``--config.ensemble=K`` and the subset models of
the memorization scores (``snnjax.studies.memorization_scores``) both train through it.

A member is an ordinary run of the config with its own ``seed`` (so its own init,
``starting_point.init_key``, its own shuffle, ``pipeline.epoch_permutation(seed, epoch)``, and its
own augmentation stream) and optionally its own training subset: row k of a (K, N) bool
``membership`` (every row the same count, so the members' batches stack). The members' train
states are stacked along a leading axis K (:func:`stack`) and one jitted ``jax.vmap`` of the pure
``step.train_step`` (:func:`make_ensemble_step`) updates all K at once; masks are stacked too, so
members may share a mask (sparse members of one Sol-D) or each have their own. A member without a
subset draws exactly the batches of the separate run, so it ends with the separate run's params
(to float tolerance: the vmapped convolutions are other XLA programs).

Execution (:func:`default_vectorize`, ``config.ensemble_vectorize``): the vmapped program on
accelerators and for MLPs; on the CPU backend a convolutional model's members instead take their
steps one after another through the separate run's jitted step (:func:`make_looped_step`, a list
of member states), because XLA:CPU runs the vmapped (grouped) convolutions several times slower
per member. Batches, keys, checkpoints and results are the same either way.

Dynamic sparse training (``rigl`` / ``set``): each member's mask updates are the separate run's
(:func:`member_mask_updates`, :func:`with_mask_updates`): after every scheduled step each member's
``dst.DynamicSparsity.update`` runs on that member's batch and step key, through the same jitted
functions ``train.py`` uses, and its epoch records get the same ``mask_change`` fields.

* :func:`train_members`: K members in memory (no work dir), returns the stacked state.
* :func:`train_ensemble`: ``scripts/train.py --config.ensemble=K``: seeds ``seed .. seed+K-1``,
  each member written as an ordinary run in ``WORKDIR/seed<s>`` (config.json, identity.json,
  ``init/``, checkpoints, metrics.jsonl), loadable with ``load_solution`` and the same run, by
  identity, as ``train.py --config.seed=s``; resumes from the members' last common checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from snnjax import data as data_lib
from snnjax import models
from snnjax.data import pipeline
from snnjax.errors import UserError
from snnjax.train import config_io, dst, loop, starting_point, summaries
from snnjax.train.checkpoint import CheckpointStore
from snnjax.train.optim import make_optimizer
from snnjax.train.run_dir import RunDir, strict_json_values
from snnjax.train.state import TrainState
from snnjax.train.step import finite_part_names, make_predict_fn, make_train_step, train_step

PyTree = Any
MEMBERS_FILE = "ensemble.json"


# ----------------------------------------------------------------------------- stacking


def stack(trees: Sequence[PyTree]) -> PyTree:
  """K pytrees of one structure -> one pytree whose leaves have a leading axis K."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def member(tree: PyTree, k: int) -> PyTree:
  """Member ``k`` of a stacked pytree (the leading axis dropped) or of a list of members."""
  if isinstance(tree, list):
    return tree[k]
  return jax.tree.map(lambda a: a[k], tree)


def num_members(tree: PyTree) -> int:
  """K, of a stacked pytree or of a list of members."""
  if isinstance(tree, list):
    return len(tree)
  return int(jax.tree.leaves(tree)[0].shape[0])


def unstack(tree: PyTree) -> list:
  return [member(tree, k) for k in range(num_members(tree))]


def member_configs(config: ml_collections.ConfigDict, seeds: Sequence[int] | None = None
                   ) -> list[ml_collections.ConfigDict]:
  """The members' own training configs: ``config`` with ``seed`` set (default: ``config.seed`` ..
  ``config.seed + config.ensemble - 1``) and no ``ensemble`` field, i.e. each the config of the
  separate run it equals (nor ``ensemble_vectorize``)."""
  if seeds is None:
    seeds = [int(config.seed) + k for k in range(int(config.get("ensemble", 1)))]
  out = []
  for s in seeds:
    c = copy.deepcopy(config)
    for field in ("ensemble", "ensemble_vectorize"):
      if field in c:
        del c[field]
    c.seed = int(s)
    out.append(c)
  return out


# ----------------------------------------------------------------------------- batches


def subset_indices(membership: np.ndarray) -> np.ndarray:
  """(K, N) bool membership -> (K, n) int32: each member's training examples, ascending.

  Raises UserError when the members' subsets differ in size (their batches would not stack).
  """
  membership = np.asarray(membership, bool)
  if membership.ndim != 2:
    raise UserError(f"membership must be (K, N) bool, got shape {membership.shape}")
  counts = membership.sum(axis=1)
  if counts.size and not np.all(counts == counts[0]):
    raise UserError(f"every member needs the same number of training examples, got {sorted(set(counts.tolist()))}")
  return np.stack([np.flatnonzero(row) for row in membership]).astype(np.int32)


def member_batches(seeds: Sequence[int], epoch: int, batch_size: int, subsets: np.ndarray
                   ) -> np.ndarray:
  """(steps, K, batch_size) int32 indices into the training set for epoch ``epoch`` (0-based).

  Member k shuffles its own subset ``subsets[k]`` (n,) with ``epoch_permutation(seeds[k], epoch,
  n)`` and cuts it into whole batches, as a separate run does over ``range(n)``: with the whole
  training set as its subset, a member's batches are the separate run's.
  """
  per_member = []
  for seed, idx in zip(seeds, subsets):
    perm = pipeline.epoch_permutation(int(seed), epoch, len(idx))
    per_member.append(np.stack(pipeline.batch_indices(idx[perm], batch_size)))
  return np.stack(per_member, axis=1)


# ----------------------------------------------------------------------------- the step


def make_ensemble_step(apply_fn: Callable, tx, *, augment: bool, compute_dtype=None,
                       nan_policy: str = "stop") -> Callable:
  """Jitted ``step(states, data, idx, aug_keys, step) -> (states, metrics)`` for K stacked members.

  ``states``: a stacked ``TrainState`` (leading axis K); ``data = {"x": (N, ...), "y": (N,)}``
  shared by all; ``idx`` (K, B) int32, each member's batch; ``aug_keys`` (K,) keys, each member's
  augmentation stream (``starting_point.augment_key``); ``step`` the global step index: member k's
  step key is ``fold_in(aug_keys[k], step)``, split as ``step.make_train_step`` does. Every metric
  of ``step.train_step`` comes back with a leading K. The states are donated.
  """

  def one(state, data, idx, aug_key, step):
    batch = {"x": jnp.take(data["x"], idx, axis=0), "y": jnp.take(data["y"], idx, axis=0)}
    augment_key, _ = jax.random.split(jax.random.fold_in(aug_key, step))
    if augment:
      batch["x"] = pipeline.augment_batch(augment_key, batch["x"])
    return train_step(state, batch, apply_fn=apply_fn, tx=tx, compute_dtype=compute_dtype,
                      nan_policy=nan_policy)

  return jax.jit(jax.vmap(one, in_axes=(0, None, 0, 0, None)), donate_argnums=(0,))


def default_vectorize(config: ml_collections.ConfigDict) -> bool:
  """Whether to run the members as one vmapped program (``config.ensemble_vectorize``, default
  None = automatic): yes, except on the CPU backend for convolutional models, where the vmapped
  convolutions become grouped convolutions that XLA:CPU runs several times slower per member
  than K separate steps (BENCHMARKS.md, "Ensembles"); there the members take their steps one
  after another through the separate run's own jitted step (:func:`make_looped_step`)."""
  choice = config.get("ensemble_vectorize", None)
  if choice is not None:
    return bool(choice)
  return not (jax.default_backend() == "cpu" and config.model.name != "mlp")


def make_looped_step(apply_fn: Callable, tx, *, augment: bool, compute_dtype=None,
                     nan_policy: str = "stop") -> Callable:
  """``step(states, data, idx, aug_keys, step)`` as :func:`make_ensemble_step`'s, but over a
  *list* of K member states (and a list of their K ``aug_keys``), each stepped by
  ``step.make_train_step``'s step (the separate run's own program, so each member's numbers are
  exactly its separate run's). Each metric is a list of the K members' values (``train_epoch``
  stacks them once per epoch)."""
  single = make_train_step(apply_fn, tx, augment=augment, compute_dtype=compute_dtype,
                           nan_policy=nan_policy)
  folded = jax.jit(lambda s, d, i, key, n: single(s, d, i, jax.random.fold_in(key, n)),
                   donate_argnums=(0,))

  def step(states, data, idx, aug_keys, step_index):
    idx = np.asarray(idx)
    n = np.int32(step_index)
    outs = [folded(s, data, idx[k], aug_keys[k], n) for k, s in enumerate(states)]
    return [s for s, _ in outs], {key: [m[key] for _, m in outs] for key in outs[0][1]}

  return step


def member_keys(configs, vectorize: bool):
  """The members' augmentation keys in the form their step takes: a (K,) key array for the
  vmapped step, a list of K keys for the looped one."""
  keys = [starting_point.augment_key(c) for c in configs]
  return jnp.stack(keys) if vectorize else keys


def make_ensemble_predict(apply_fn: Callable, *, vectorize: bool = True, compute_dtype=None
                          ) -> Callable:
  """Eval-mode ``predict(params, batch_stats, x) -> (K, n, classes)`` for stacked members (``x``
  (n, ...) shared): one jitted vmap, or with ``vectorize=False`` (convolutional models on CPU,
  see :func:`default_vectorize`) the separate run's jitted forward once per member."""
  one = make_predict_fn(apply_fn, compute_dtype=compute_dtype)
  if vectorize:
    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))

  def looped(params, batch_stats, x):
    members = [(member(params, k), member(batch_stats, k)) for k in range(num_members(params))]
    return jnp.stack([one(p, b, x) for p, b in members])

  return looped


def predict_members(predict: Callable, state: TrainState, x: np.ndarray, batch_size: int = 500
                    ) -> np.ndarray:
  """(K, N, classes) float32 eval-mode logits of every member on every row of ``x``
  (``predict`` from :func:`make_ensemble_predict`)."""
  out = []
  n = len(x)
  for start in range(0, n, batch_size):
    xb = x[start:start + batch_size]
    real = len(xb)
    if real < batch_size and n > batch_size:  # a fixed shape: one compilation
      xb = np.concatenate([xb, np.zeros((batch_size - real,) + xb.shape[1:], xb.dtype)])
    out.append(np.asarray(predict(state.params, state.batch_stats, jnp.asarray(xb)))[:, :real])
  return np.concatenate(out, axis=1)


def train_epoch(states: TrainState, train_data: dict, batches: np.ndarray, *, step_fn: Callable,
                aug_keys, first_step: int) -> tuple[TrainState, dict]:
  """One epoch of all members: ``batches`` (steps, K, B), ``aug_keys`` from :func:`member_keys`,
  ``first_step`` the global index of the epoch's first step. Returns the states and per-member
  metrics, each (K,): ``loss`` and ``accuracy`` averaged over the member's finite steps,
  ``num_steps``, ``nonfinite_steps`` and ``first_nonfinite`` (a list of K entries, as
  ``loop.train_epoch``'s). The metrics stay on the device until the epoch's end."""
  metrics = []
  for i, idx in enumerate(batches):
    states, m = step_fn(states, train_data, idx, aug_keys, first_step + i)
    metrics.append({k: m[k] for k in ("loss", "accuracy", "finite", "finite_parts")})
  k_members = num_members(states)
  if not metrics:
    finite = np.ones((0, k_members), bool)
    values = {"loss": np.zeros((0, k_members)), "accuracy": np.zeros((0, k_members))}
  else:
    host = {}
    for key in ("loss", "accuracy", "finite", "finite_parts"):
      per_step = [m[key] for m in metrics]
      if isinstance(per_step[0], list):  # the looped step: (steps, K) from lists of K values
        per_step = [x for row in per_step for x in row]
        host[key] = np.asarray(jnp.stack(per_step)).reshape((len(metrics), k_members)
                                                            + np.shape(per_step[0]))
      else:
        host[key] = np.asarray(jnp.stack(per_step))
    finite = np.asarray(host["finite"], bool)
    values = {k: np.asarray(host[k], np.float64) for k in ("loss", "accuracy")}
  num_ok = finite.sum(axis=0)
  means = {k: np.where(num_ok > 0, np.where(finite, v, 0.0).sum(0) / np.maximum(num_ok, 1), np.nan)
           for k, v in values.items()}
  firsts = [None] * k_members
  if not finite.all():
    names = finite_part_names(member(states, 0))
    for k in range(k_members):
      bad = np.flatnonzero(~finite[:, k])
      if bad.size:
        parts = np.asarray(host["finite_parts"][int(bad[0]), k])
        firsts[k] = (int(bad[0]), names[int(np.flatnonzero(~parts)[0])])
  means.update(num_steps=len(metrics), nonfinite_steps=(~finite).sum(axis=0), first_nonfinite=firsts)
  return states, means


def member_means(means: dict, k: int) -> dict:
  """Member ``k``'s metrics of :func:`train_epoch`, shaped as ``loop.train_epoch``'s."""
  return {"loss": float(means["loss"][k]), "accuracy": float(means["accuracy"][k]),
          "num_steps": int(means["num_steps"]), "nonfinite_steps": int(means["nonfinite_steps"][k]),
          "first_nonfinite": means["first_nonfinite"][k]}


# ----------------------------------------------------------------------------- mask updates


def member_mask_updates(configs: Sequence[ml_collections.ConfigDict], model,
                        states: Sequence[TrainState], steps_per_epoch: int, *, augment: bool,
                        compute_dtype=None) -> list | None:
  """Each member's ``dst.DynamicSparsity`` (``rigl`` / ``set``; None for other regimes), made as
  ``train.py`` makes its run's (``dst.make``) from the member's fresh starting state: its own
  initial mask and mask-update key (``dst.dst_key`` of its seed); the jitted gradient and update
  functions are shared (the members differ only in their seeds)."""
  if configs[0].regime not in config_io.DST_REGIMES:
    return None
  first = dst.make(configs[0], model, states[0], steps_per_epoch, augment=augment,
                   compute_dtype=compute_dtype)
  return [first] + [dataclasses.replace(first, initial_mask=jax.device_get(s.mask),
                                        key=dst.dst_key(c))
                    for c, s in zip(configs[1:], states[1:])]


def with_mask_updates(step_fn: Callable, updates: list | None, *, vectorize: bool) -> Callable:
  """``step_fn`` (:func:`make_ensemble_step` or :func:`make_looped_step`) followed, after every
  step the drop schedule marks, by each member's mask update on its own batch ``idx[k]`` and step
  key ``fold_in(aug_keys[k], step)``: what ``dst.DynamicSparsity.wrap`` does in a separate run.
  The vmapped states are unstacked for the update and stacked again."""
  if not updates:
    return step_fn
  schedule = updates[0].schedule

  def step(states, data, idx, aug_keys, step_index):
    states, metrics = step_fn(states, data, idx, aug_keys, step_index)
    done = int(step_index) + 1
    if schedule.is_update_step(done):
      members = unstack(states) if vectorize else states
      idx = np.asarray(idx)
      members = [u.update(s, data, jnp.asarray(idx[k]),
                          jax.random.fold_in(aug_keys[k], int(step_index)), done)
                 for k, (u, s) in enumerate(zip(updates, members))]
      states = stack(members) if vectorize else members
    return states, metrics

  return step


# ----------------------------------------------------------------------------- setup


def check_supported(config: ml_collections.ConfigDict) -> None:
  """UserError for what an ensemble does not train (each would need its own vmapped variant)."""
  fisher_reg = config.get("fisher_reg", None)
  if fisher_reg is not None and fisher_reg.weight:
    raise UserError("config.ensemble > 1 does not support the Fisher penalty (fisher_reg.weight)")
  schedule = config.get("curriculum", None)
  if schedule is not None and schedule.kind != "none":
    raise UserError("config.ensemble > 1 does not support a curriculum (curriculum.kind)")
  if config.select_best_on_test:
    raise UserError("config.ensemble > 1 does not support select_best_on_test")
  if config.distributed.enabled or config.num_devices > 1:
    raise UserError("config.ensemble > 1 trains on one device (set num_devices=1, "
                    "distributed.enabled=False)")


def init_members(configs: Sequence[ml_collections.ConfigDict], model, input_shape, tx
                 ) -> tuple[TrainState, list[dict]]:
  """Every member's starting point (``loop.create_train_state`` of its own config), stacked."""
  states, infos = [], []
  for c in configs:
    s, info = loop.create_train_state(c, model, input_shape, tx)
    states.append(s)
    infos.append(info)
  return stack(states), infos


def _compute_dtype(config):
  return jnp.bfloat16 if config.precision == "bfloat16" else None


def _setup(config, dataset, num_train: int):
  model = models.create_model(config.model.name, dataset.num_classes, **dict(config.model.kwargs))
  steps_per_epoch = loop.num_steps_per_epoch(config, num_train, 1)
  tx, schedule = make_optimizer(config.optim, steps_per_epoch, config.num_epochs)
  make = make_ensemble_step if default_vectorize(config) else make_looped_step
  step_fn = make(model.apply, tx, augment=bool(config.dataset.augment and dataset.is_image),
                 compute_dtype=_compute_dtype(config), nan_policy=config.get("nan_policy", "stop"))
  return model, steps_per_epoch, tx, schedule, step_fn


def train_members(config: ml_collections.ConfigDict, dataset, *, seeds: Sequence[int],
                  membership: np.ndarray | None = None, log: bool = False) -> TrainState:
  """Trains one member per seed of ``config`` for ``config.num_epochs`` epochs, in memory.

  ``membership`` (K, N) bool: member k trains on the examples of row k only (default: all N).
  Returns the stacked final states. A non-finite step stops training with
  ``loop.DivergenceError`` (``nan_policy=stop``), as a separate run would.
  """
  check_supported(config)
  configs = member_configs(config, seeds)
  config_io.validate_config(configs[0], models.model_names())
  n_total = dataset.num_train
  if membership is None:
    subsets = np.tile(np.arange(n_total, dtype=np.int32), (len(seeds), 1))
  else:
    if np.shape(membership) != (len(seeds), n_total):
      raise UserError(f"membership must be ({len(seeds)}, {n_total}), got {np.shape(membership)}")
    subsets = subset_indices(membership)
  model, steps, tx, _, step_fn = _setup(config, dataset, subsets.shape[1])
  states, _ = init_members(configs, model, dataset.input_shape, tx)
  vectorize = default_vectorize(config)
  if config.regime in config_io.DST_REGIMES:
    updates = member_mask_updates(configs, model, unstack(states), steps,
                                  augment=bool(config.dataset.augment and dataset.is_image),
                                  compute_dtype=_compute_dtype(config))
    step_fn = with_mask_updates(step_fn, updates, vectorize=vectorize)
  if not vectorize:
    states = unstack(states)
  data = {"x": jnp.asarray(dataset.x_train), "y": jnp.asarray(dataset.y_train)}
  aug_keys = member_keys(configs, vectorize)
  for epoch in range(int(config.num_epochs)):
    t0 = time.time()
    batches = member_batches(seeds, epoch, config.batch_size, subsets)
    states, means = train_epoch(states, data, batches, step_fn=step_fn, aug_keys=aug_keys,
                                first_step=epoch * steps)
    for k, c in enumerate(configs):
      loop.check_epoch_health(c, epoch, epoch * steps, member_means(means, k),
                              "nothing is saved by an in-memory ensemble")
    if log:
      print(f"[snnjax] ensemble of {len(seeds)}: epoch {epoch + 1}/{config.num_epochs} "
            f"mean batch loss {float(np.nanmean(means['loss'])):.4f} ({time.time() - t0:.1f}s)",
            file=sys.stderr)
  return states if vectorize else stack(states)


# ----------------------------------------------------------------------------- --config.ensemble=K


def member_workdir(workdir: str, seed: int) -> str:
  """Where member ``seed`` of an ensemble in ``workdir`` lives (an ordinary run directory)."""
  return os.path.join(os.path.abspath(workdir), f"seed{int(seed)}")


def _restore_common(stores, states_list, runs) -> tuple[list, int]:
  """Each member restored at the last checkpoint step all of them hold (epoch 0 without one)."""
  common = set.intersection(*[set(s.steps()) for s in stores]) if stores else set()
  if not common:
    for run in runs:
      run.write_records([])
    return states_list, 0
  step = max(common)
  out, epoch = [], 0
  for store, state, run in zip(stores, states_list, runs):
    restored, meta = store.restore(step, state.to_dict())
    out.append(TrainState.from_dict(restored))
    epoch = int(meta["epoch"])
  for run in runs:
    run.write_records([r for r in run.epoch_records() if r["epoch"] <= epoch])
  print(f"[snnjax] resuming the ensemble from epoch {epoch} (step {step})", file=sys.stderr)
  return out, epoch


def train_ensemble(config: ml_collections.ConfigDict, workdir: str, *, dataset=None,
                   on_start: Callable[[], None] | None = None) -> dict:
  """``--config.ensemble=K``: trains seeds ``config.seed .. +K-1`` as one vmapped program.

  Member s is written to ``WORKDIR/seed<s>`` as the separate run ``--config.seed=s`` would write
  its work dir (``WORKDIR/ensemble.json`` lists them). Returns ``{"members": {seed: final
  record}, "wall_time_s"}``. Finished members are not retrained; when every member is finished
  nothing is trained. ``on_start()`` runs once every check has passed, before anything is written.
  """
  config_io.validate_config(config, models.model_names())
  check_supported(config)
  summaries.check_available(config)
  configs = member_configs(config)
  seeds = [int(c.seed) for c in configs]
  runs = [RunDir(member_workdir(workdir, s)) for s in seeds]
  for c, run in zip(configs, runs):
    loop.check_workdir(c, run.path)
  finals = [run.final_metrics() for run in runs]
  if all(f is not None for f in finals):
    print(f"[snnjax] every member in {workdir} is finished; not retraining", file=sys.stderr)
    return {"members": {str(s): f for s, f in zip(seeds, finals)}, "wall_time_s": 0.0}
  for c in configs:
    loop.ensure_prerequisites(c)
  if dataset is None:
    dataset = data_lib.load_dataset(config.dataset)
  model, steps, tx, schedule, step_fn = _setup(config, dataset, dataset.num_train)
  member_states, infos = [], []
  for c in configs:
    s, info = loop.create_train_state(c, model, dataset.input_shape, tx)
    member_states.append(s)
    infos.append(info)
  updates = member_mask_updates(configs, model, member_states, steps,
                                augment=bool(config.dataset.augment and dataset.is_image),
                                compute_dtype=_compute_dtype(config))
  step_fn = with_mask_updates(step_fn, updates, vectorize=default_vectorize(config))
  meta_base = {"input_shape": list(dataset.input_shape), "num_classes": int(dataset.num_classes),
               "steps_per_epoch": steps, "dataset": dataset.name}
  predict = make_predict_fn(model.apply, compute_dtype=_compute_dtype(config))
  if on_start is not None:
    on_start()
  os.makedirs(workdir, exist_ok=True)
  listing = os.path.join(workdir, MEMBERS_FILE)
  with open(listing + ".tmp", "w") as f:
    json.dump({"ensemble": len(seeds), "members": [os.path.basename(r.path) for r in runs]}, f,
              indent=2)
  os.replace(listing + ".tmp", listing)

  with contextlib.ExitStack() as exit_stack:
    stores = [exit_stack.enter_context(CheckpointStore(r.checkpoints_dir,
                                                       max_to_keep=config.checkpoint_keep))
              for r in runs]
    for c, run, s, info in zip(configs, runs, member_states, infos):
      loop.initialize_workdir(c, run, s, {**meta_base, "epoch": 0, "info": info})
    member_states, start_epoch = _restore_common(stores, member_states, runs)
    records = [run.epoch_records() for run in runs]
    ctxs = [loop.RunContext(config=c, workdir=run.path, dataset=dataset, model=model,
                            train_data=None, step_fns=None, predict=predict, schedule=schedule,
                            scores=None, steps_per_epoch=steps,
                            aug_key=starting_point.augment_key(c), meta_base=meta_base, info=info)
            for c, run, info in zip(configs, runs, infos)]
    states = stack(member_states) if default_vectorize(config) else member_states
    del member_states
    data = {"x": jnp.asarray(dataset.x_train), "y": jnp.asarray(dataset.y_train)}
    aug_keys = member_keys(configs, default_vectorize(config))
    t_start = time.time()
    member_records = [r[-1] if r else {} for r in records]
    events = [exit_stack.enter_context(summaries.open_writer(c, run.path))
              for c, run in zip(configs, runs)]
    for epoch in range(start_epoch, config.num_epochs):
      t0 = time.time()
      batches = member_batches(seeds, epoch, config.batch_size,
                               np.tile(np.arange(dataset.num_train, dtype=np.int32), (len(seeds), 1)))
      states, means = train_epoch(states, data, batches, step_fn=step_fn, aug_keys=aug_keys,
                                  first_step=epoch * steps)
      epoch_time = time.time() - t0
      for k, (ctx, run, store) in enumerate(zip(ctxs, runs, stores)):
        m = member_means(means, k)
        last = store.latest_step()
        loop.check_epoch_health(ctx.config, epoch, epoch * steps, m,
                                f"the last checkpoint (step {last}) is kept" if last is not None
                                else "there is no earlier checkpoint")
        state_k = member(states, k)
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps,
                  "lr": float(schedule((epoch + 1) * steps - 1)),
                  "batch_loss": m["loss"], "batch_accuracy": m["accuracy"],
                  "epoch_time_s": epoch_time, "ensemble_size": len(seeds)}
        if ctx.config.get("nan_policy", "stop") == "skip_step":
          record["skipped_steps"] = m["nonfinite_steps"]
        if updates is not None:
          record.update(updates[k].epoch_metrics(state_k, (epoch + 1) * steps))
        if (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == config.num_epochs:
          record.update(loop.evaluate_state(state_k, dataset, predict, ctx.config,
                                            rng_seed=ctx.config.seed))
        record = strict_json_values(record)
        records[k].append(record)
        run.write_records(records[k])
        events[k].write(record)
        loop.save_checkpoints(ctx, state_k, record, store, None, -1.0)
        member_records[k] = record
      if config.progress:
        print(f"[snnjax] ensemble of {len(seeds)}: epoch {epoch + 1}/{config.num_epochs} "
              f"({epoch_time:.1f}s)", file=sys.stderr)
  return {"members": {str(s): r for s, r in zip(seeds, member_records)},
          "wall_time_s": time.time() - t_start}
