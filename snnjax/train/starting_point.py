"""The starting point of each training regime: initial params, BatchNorm statistics and the mask.

* ``dense``: a fresh init; the mask is all ones. Trains Sol-D.
* ``finetune``: Sol-D (``config.dense_workdir``) pruned by weight magnitude to ``config.sparsity``
  (global by default, as the study); its BatchNorm statistics are kept. The pruned weights are Init-F.
* ``scratch``: a fresh init (a different random stream from the dense run's, so Init-S is never Sol-D's
  init), masked. The mask comes from ``config.mask.source``: ``prune_dense`` (magnitude pruning of Sol-D:
  the very mask Sol-F uses, the study's default), ``random`` (uniform per layer), ``erk``, or a mask
  found at this very init (``snip``, ``grasp``: scored on ``config.mask.score_examples`` training
  examples, the first of epoch 0's shuffle, BatchNorm in train mode; ``synflow``: data-free,
  ``config.mask.synflow_rounds`` rounds; ``config.mask.scope`` global or layerwise; see
  ``snnjax.sparsity.init_scores``). ``config.mask.shuffle`` then permutes each prunable layer's mask
  (its count kept; key ``fold_in(init_key, 4)``), and ``config.mask.init="sparse_aware"`` redraws the
  kept weights for each unit's active fan-in (``snnjax.sparsity.sparse_init``; key
  ``fold_in(init_key, 2)``).
* ``lottery``: the pruning mask of Sol-D applied to Sol-D's own initial weights (``DENSE/init``).
  Iterative magnitude pruning with rewinding: ``dense_workdir`` may name the previous round (a
  lottery run); the mask is global magnitude pruning of its solution to ``config.sparsity``, nested in
  its mask (its pruned weights go first), and the kept weights are rewound to the *root* Sol-D's
  (the first run of the chain) state at step ``config.mask.rewind_step`` (0: its init; k > 0: its
  ``WORKDIR/rewind/<k>``, saved with ``save_steps``), BatchNorm statistics included.
* ``rigl`` / ``set``: dynamic sparse training (``snnjax.train.dst``) from exactly ``scratch``'s start:
  the same Init-S (scratch's random stream) and the same mask source, so Sol-R and Sol-S of one seed
  differ only in the mask updates.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from snnjax import models, sparsity
from snnjax.errors import MaskMismatchError, UserError

PyTree = Any
# Distinct random streams per regime, so a scratch init never equals a dense init of the same seed.
_STREAM = {"dense": 0, "finetune": 1, "scratch": 2, "lottery": 3}
# Regimes that start exactly like scratch (its init, mask source and augmentation stream).
SCRATCH_LIKE = ("scratch", "rigl", "set")
REWIND_DIR = "rewind"  # WORKDIR/rewind/<step>: the states saved at config.save_steps


def _stream(regime: str) -> int:
  return _STREAM["scratch" if regime in SCRATCH_LIKE else regime]


def init_key(config: ml_collections.ConfigDict) -> jax.Array:
  return jax.random.fold_in(jax.random.key(config.seed), _stream(config.regime))


def order_seed(config: ml_collections.ConfigDict) -> int:
  """The seed of the run's SGD noise (shuffle, augmentation): ``config.order_seed`` when set
  (>= 0), else ``config.seed``."""
  chosen = int(config.get("order_seed", -1))
  return int(config.seed) if chosen < 0 else chosen


def augment_key(config: ml_collections.ConfigDict) -> jax.Array:
  """The key of the run's augmentation stream (each step folds in its global step index)."""
  return jax.random.fold_in(jax.random.key(order_seed(config)), 1000 + _stream(config.regime))


def prunable_tree(config: ml_collections.ConfigDict, params: PyTree) -> PyTree:
  return sparsity.prunable(params, include_first=bool(config.mask.include_first),
                           include_last=bool(config.mask.include_last))


def _load_dense(config, solution_loader, which=None, *, workdir=None, step=None,
                regimes=("dense",)):
  workdir = config.dense_workdir if workdir is None else workdir
  path = workdir if which is None else os.path.join(workdir, which)
  dense = solution_loader(path) if step is None else solution_loader(path, step=step)
  if dense.config.model.name != config.model.name or dense.config.dataset.name != config.dataset.name:
    raise UserError(
        f"dense run {workdir} trained {dense.config.model.name} on "
        f"{dense.config.dataset.name}, this run is {config.model.name} on {config.dataset.name}")
  if dense.config.regime not in regimes:
    raise UserError(f"{workdir} is a {dense.config.regime} run, not a "
                    f"{' or '.join(regimes)} one")
  return dense


def root_dense_workdir(workdir: str) -> str:
  """The Sol-D at the root of a chain of lottery rounds (each naming the last in dense_workdir)."""
  from snnjax.train.run_dir import RunDir  # pylint: disable=import-outside-toplevel
  for _ in range(64):
    d = RunDir(workdir).config_dict()
    if d is None:
      raise UserError(f"no run at {workdir} (no config.json)")
    if d.get("regime") == "dense":
      return workdir
    workdir = d.get("dense_workdir") or ""
  raise UserError(f"{workdir}: the chain of lottery rounds is longer than 64")


def rewind_point(config, solution_loader):
  """The root Sol-D's state the kept weights of a lottery run are rewound to."""
  root = root_dense_workdir(config.dense_workdir)
  k = int(config.mask.get("rewind_step", 0))
  if k == 0:
    return _load_dense(config, solution_loader, "init", workdir=root)
  rewind_dir = os.path.join(root, REWIND_DIR)
  if not os.path.isdir(os.path.join(rewind_dir, str(k))):
    raise UserError(f"the Sol-D run {root} has no rewind checkpoint at step {k} "
                    f"({rewind_dir}/{k}): train it with --config.save_steps='({k},)' (in a new "
                    "work dir if it is finished)")
  return _load_dense(config, solution_loader, REWIND_DIR, workdir=root, step=k)


def _score_batch(config, dataset) -> dict:
  """The minibatch SNIP / GraSP score on: the first ``mask.score_examples`` of epoch 0's order."""
  from snnjax.data import pipeline  # pylint: disable=import-outside-toplevel
  if dataset is None:
    raise UserError(f"config.mask.source={config.mask.source} scores the init on training data; "
                    "this caller passed no dataset (not supported with --config.ensemble)")
  n = min(int(config.mask.get("score_examples", 256)), dataset.num_train)
  idx = np.sort(pipeline.epoch_permutation(config.seed, 0, dataset.num_train)[:n])
  return {"x": jnp.asarray(dataset.x_train[idx]), "y": jnp.asarray(dataset.y_train[idx])}


def _init_source_mask(config, model, params, batch_stats, input_shape, dataset):
  """The mask of a mask found at init (snip / grasp / synflow) on ``params``."""
  source = config.mask.source
  kwargs = {}
  if source in ("snip", "grasp"):
    batch = _score_batch(config, dataset)

    def loss_fn(p):
      logits, _ = model.apply({"params": p, "batch_stats": batch_stats}, batch["x"], train=True,
                              mutable=["batch_stats"])
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.float32), batch["y"]))
    kwargs["loss_fn"] = loss_fn
  else:
    ones = jnp.ones((1,) + tuple(input_shape), jnp.float32)
    positive_stats = jax.tree.map(jnp.abs, batch_stats)

    def output_fn(p):
      return model.apply({"params": p, "batch_stats": positive_stats}, ones, train=False)
    kwargs["output_fn"] = output_fn
  return sparsity.init_scores.init_mask(
      source, params, config.sparsity, scope=config.mask.scope,
      prunable_tree=prunable_tree(config, params),
      synflow_rounds=int(config.mask.get("synflow_rounds", 100)), **kwargs)


def _finish_scratch(config, params, mask, info):
  """Shuffle (``mask.shuffle``) and re-initialize (``mask.init``) a scratch-like start."""
  prunable = prunable_tree(config, params)
  if config.mask.get("shuffle", False):
    mask = sparsity.shuffle_mask(jax.random.fold_in(init_key(config), 4), mask,
                                 prunable_tree=prunable)
    info["mask_source"] += ", shuffled within each layer"
  if config.mask.get("init", "dense") == "sparse_aware":
    params = sparsity.sparse_aware_init(jax.random.fold_in(init_key(config), 2), params, mask,
                                        prunable_tree=prunable)
    info["init"] = "fresh, sparse-aware (N(0, 2 / active fan-in) per unit)"
  return sparsity.apply_mask(params, mask), mask, info


def initial_variables(config: ml_collections.ConfigDict, model, input_shape, solution_loader,
                      dataset=None) -> tuple[PyTree, PyTree, PyTree, dict]:
  """Returns ``(params, batch_stats, mask, info)`` for ``config.regime``.

  ``params`` are already masked. ``solution_loader(path, step=None)`` loads a run
  (``load_solution``); ``info`` records where the weights and the mask came from. ``dataset`` (a
  ``snnjax.data.Dataset``) is needed by the masks scored on data (snip, grasp).
  """
  regime = config.regime
  params, batch_stats = models.init_variables(model, init_key(config), tuple(input_shape))
  info = {"regime": regime, "init": "fresh", "mask_source": "none"}
  if regime == "dense":
    return params, batch_stats, sparsity.dense_mask(params), info

  if regime in SCRATCH_LIKE and config.mask.source != "prune_dense":
    mask_key = jax.random.fold_in(init_key(config), 1)
    prunable = prunable_tree(config, params)
    if config.mask.source == "random":
      mask = sparsity.random_mask(mask_key, params, config.sparsity, prunable_tree=prunable)
    elif config.mask.source == "erk":
      mask = sparsity.erk_mask(mask_key, params, config.sparsity, prunable_tree=prunable)
    else:
      mask = _init_source_mask(config, model, params, batch_stats, input_shape, dataset)
    info["mask_source"] = config.mask.source
    if config.mask.source in sparsity.init_scores.SOURCES:
      info["mask_source"] += f" ({config.mask.scope}) on the init"
    params, mask, info = _finish_scratch(config, params, mask, info)
    return params, batch_stats, mask, info

  dense = _load_dense(config, solution_loader,
                      regimes=("dense", "lottery") if regime == "lottery" else ("dense",))
  try:
    sparsity.check_mask(params, dense.params)  # same architecture
  except MaskMismatchError as e:
    raise UserError(f"the dense run {dense.path} has another architecture than this config's "
                    f"model ({e})") from e
  previous = dense.mask if dense.config.regime == "lottery" else None
  if previous is not None and config.sparsity < sparsity.sparsity_of(
      previous, prunable_tree(config, dense.params)) - 1e-9:
    raise UserError(f"config.sparsity={config.sparsity} is below the previous lottery round's "
                    f"({dense.path}): an IMP round prunes more")
  mask = sparsity.magnitude_mask(dense.params, config.sparsity, scope=config.mask.scope,
                                 prunable_tree=prunable_tree(config, dense.params), within=previous)
  info["mask_source"] = f"{config.mask.scope} magnitude pruning of {dense.path}"
  if regime == "finetune":
    info["init"] = f"pruned Sol-D {dense.path}"
    return sparsity.apply_mask(dense.params, mask), dense.batch_stats, mask, info
  if regime == "lottery":
    start = rewind_point(config, solution_loader)
    info["init"] = f"Sol-D's state at step {int(config.mask.get('rewind_step', 0))} {start.path}"
    return sparsity.apply_mask(start.params, mask), start.batch_stats, mask, info
  params, mask, info = _finish_scratch(config, params, mask, info)
  return params, batch_stats, mask, info
