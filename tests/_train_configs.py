"""Tiny training configs for the training-layer tests (embedded data, seconds per run)."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))

import default  # noqa: E402  pylint: disable=wrong-import-position
import ml_collections  # noqa: E402  pylint: disable=wrong-import-position


def tiny(regime="dense", *, dataset="mnist1d", model="mlp", epochs=3, sparsity=0.0, **model_kwargs):
  config = default.get_config()
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
