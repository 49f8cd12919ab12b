"""The starting point of each training regime: initial params, BatchNorm statistics and the mask.

* ``dense``: a fresh init; the mask is all ones. Trains Sol-D.
* ``finetune``: Sol-D (``config.dense_workdir``) pruned by weight magnitude to ``config.sparsity``
  (global by default, as the study); its BatchNorm statistics are kept. The pruned weights are Init-F.
* ``scratch``: a fresh init (a different random stream from the dense run's, so Init-S is never Sol-D's
  init), masked. The mask comes from ``config.mask.source``: ``prune_dense`` (magnitude pruning of Sol-D:
  the very mask Sol-F uses, the study's default), ``random`` (uniform per layer) or ``erk``.
* ``lottery``: the pruning mask of Sol-D applied to Sol-D's own initial weights (``DENSE/init``).
* ``rigl`` / ``set``: dynamic sparse training (``snnjax.train.dst``) from exactly ``scratch``'s start:
  the same Init-S (scratch's random stream) and the same mask source, so Sol-R and Sol-S of one seed
  differ only in the mask updates.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from snnjax import models, sparsity
from snnjax.errors import MaskMismatchError, UserError

PyTree = Any
# Distinct random streams per regime, so a scratch init never equals a dense init of the same seed.
_STREAM = {"dense": 0, "finetune": 1, "scratch": 2, "lottery": 3}
# Regimes that start exactly like scratch (its init, mask source and augmentation stream).
SCRATCH_LIKE = ("scratch", "rigl", "set")


def _stream(regime: str) -> int:
  return _STREAM["scratch" if regime in SCRATCH_LIKE else regime]


def init_key(config: ml_collections.ConfigDict) -> jax.Array:
  return jax.random.fold_in(jax.random.key(config.seed), _stream(config.regime))


def augment_key(config: ml_collections.ConfigDict) -> jax.Array:
  """The key of the run's augmentation stream (each step folds in its global step index)."""
  return jax.random.fold_in(jax.random.key(config.seed), 1000 + _stream(config.regime))


def prunable_tree(config: ml_collections.ConfigDict, params: PyTree) -> PyTree:
  return sparsity.prunable(params, include_first=bool(config.mask.include_first),
                           include_last=bool(config.mask.include_last))


def _load_dense(config, solution_loader, which=None):
  path = config.dense_workdir if which is None else os.path.join(config.dense_workdir, which)
  dense = solution_loader(path)
  if dense.config.model.name != config.model.name or dense.config.dataset.name != config.dataset.name:
    raise UserError(
        f"dense run {config.dense_workdir} trained {dense.config.model.name} on "
        f"{dense.config.dataset.name}, this run is {config.model.name} on {config.dataset.name}")
  if dense.config.regime != "dense":
    raise UserError(f"{config.dense_workdir} is a {dense.config.regime} run, not a dense one")
  return dense


def initial_variables(config: ml_collections.ConfigDict, model, input_shape, solution_loader
                      ) -> tuple[PyTree, PyTree, PyTree, dict]:
  """Returns ``(params, batch_stats, mask, info)`` for ``config.regime``.

  ``params`` are already masked. ``solution_loader(path)`` loads a Sol-D run (``load_solution``);
  ``info`` records where the weights and the mask came from.
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
    else:
      mask = sparsity.erk_mask(mask_key, params, config.sparsity, prunable_tree=prunable)
    info["mask_source"] = config.mask.source
    return sparsity.apply_mask(params, mask), batch_stats, mask, info

  dense = _load_dense(config, solution_loader)
  try:
    sparsity.check_mask(params, dense.params)  # same architecture
  except MaskMismatchError as e:
    raise UserError(f"the dense run {dense.path} has another architecture than this config's "
                    f"model ({e})") from e
  mask = sparsity.magnitude_mask(dense.params, config.sparsity, scope=config.mask.scope,
                                 prunable_tree=prunable_tree(config, dense.params))
  info["mask_source"] = f"{config.mask.scope} magnitude pruning of {dense.path}"
  if regime == "finetune":
    info["init"] = f"pruned Sol-D {dense.path}"
    return sparsity.apply_mask(dense.params, mask), dense.batch_stats, mask, info
  if regime == "lottery":
    dense_init = _load_dense(config, solution_loader, which="init")
    info["init"] = f"Sol-D's init {dense_init.path}"
    return sparsity.apply_mask(dense_init.params, mask), dense_init.batch_stats, mask, info
  return sparsity.apply_mask(params, mask), batch_stats, mask, info
