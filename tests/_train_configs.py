"""Tiny training configs for the training-layer tests (embedded data, seconds per run)."""

import ml_collections

from snnjax.train import config_presets


def tiny(regime="dense", *, dataset="mnist1d", model="mlp", epochs=3, sparsity=0.0, **model_kwargs):
  config = config_presets.base_config()
  config.regime = regime
  config.sparsity = sparsity
  config.dataset.name = dataset
  config.dataset.npz_path = ""
  config.model.name = model
  config.model.kwargs = ml_collections.ConfigDict(model_kwargs)
  config.optim.lr = 0.05
  config.optim.boundaries_epochs = (epochs - 1,)
  config.num_epochs = epochs
  config.batch_size = 64
  config.eval_batch_size = 500
  config.checkpoint_every_epochs = 1
  config.dataset.augment = False  # pad-4 crops and flips destroy 8x8 digits
  config.progress = False
  return config
