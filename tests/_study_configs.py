"""A tiny study config shared by the study tests (embedded digits, two-epoch runs)."""

import os

from snnjax.train import config_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The real CIFAR-10 subset beside the checkout (never committed; tests that need it skip without).
CIFAR10_NPZ = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10.npz")


def tiny_study(*, hessian_probes=6, jacobian_examples=32):
  """The ``quick`` study at one sparsity (0.9), with 2-epoch runs of a small CNN on 300 digits
  and small measurement subsets (Sol-R included, its mask updated every 2 steps); each test
  module switches stages on or off itself."""
  c = config_io.load_config_spec(os.path.join(ROOT, "configs", "study.py") + ":quick")
  c.sparsities = (0.9,)
  c.train.overrides = {"num_epochs": 2, "batch_size": 50, "optim": {"boundaries_epochs": (1,)},
                       "dataset": {"train_size": 300},
                       "model": {"kwargs": {"channels": (8, 8), "strides": (1, 2)}}}
  c.measure.hessian.num_examples = 32
  c.measure.hessian.max_probes = hessian_probes
  c.measure.hessian.min_probes = 2
  c.measure.fisher.num_examples = 32
  c.measure.fisher.num_samples = 2
  c.measure.jacobian.num_examples = jacobian_examples
  c.dynamic_sparsity.update_every = 2  # Sol-R's mask moves within the 12 steps of these runs
  c.memorization.scores.num_models = 8
  c.memorization.scores.num_epochs = 0  # the runs' own two epochs
  c.memorization.bootstrap = 50
  c.memorization.scores.test_examples = 3  # infl(i, j) for three test examples
  for stage in ("gradient_flow", "lottery", "masks_at_init", "explanations"):
    c[stage].enabled = False  # tested in test_studies_explanations.py
  return c


def small_cifar10_npz(path: str, num_train: int = 2000, num_test: int = 1000) -> str:
  """The first ``num_train`` / ``num_test`` images of the real CIFAR-10 npz, written to ``path``
  (real pixels; a smaller test split keeps the smoke study's evaluations short)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  with np.load(CIFAR10_NPZ) as d:
    np.savez(path, x_train=d["x_train"][:num_train], y_train=d["y_train"][:num_train],
             x_test=d["x_test"][:num_test], y_test=d["y_test"][:num_test])
  return path


def tiny_cifar10_cpu_study(npz_path: str = CIFAR10_NPZ, preset: str = "cifar10_cpu"):
  """The ``cifar10_cpu`` (or ``cifar10_fit``) study on real CIFAR-10 pixels (``npz_path``) shrunk
  to a smoke run: two seeds, every stage at one sparsity (0.95), two-epoch runs on 400 training
  images (the preset's architecture and resolution), small measurement subsets; disagreement on
  the balanced set only and one closing-the-gap variant (the long-tailed runs and the scheduled
  variants are tested on digits)."""
  c = config_io.load_config_spec(os.path.join(ROOT, "configs", "study.py") + f":{preset}")
  c.seeds = (0, 1)
  c.label_noise.seeds = (0,)
  c.sparsities = (0.95,)
  c.fisher_trend.sparsities = (0.95,)
  c.interpolation.sparsity = 0.95
  c.fisher_trend.every_epochs = 1
  c.fisher_trend.num_examples = 16
  c.train.overrides = {"num_epochs": 2, "batch_size": 50, "optim": {"boundaries_epochs": (1,)},
                       "train_eval_size": 200, "eval_batch_size": 500,
                       "dataset": {"train_size": 400, "npz_path": npz_path}}
  c.measure.hessian.num_examples = 32
  c.measure.hessian.max_probes = 3
  c.measure.hessian.min_probes = 2
  c.measure.fisher.num_examples = 16
  c.measure.fisher.num_samples = 1
  c.measure.jacobian.num_examples = 16
  c.sanity.num_examples = 16
  c.sanity.max_probes = 4
  c.per_layer.num_examples = 16
  c.per_layer.num_probes = 4
  c.interpolation.alphas = (0.0, 0.5, 1.0)
  c.interpolation.num_examples = 16
  c.interpolation.eval_examples = 200
  c.interpolation.bn_examples = 200
  c.disagreement.long_tailed = False
  c.closing_gap.variants = ("fisher_penalty",)
  c.dynamic_sparsity.update_every = 2  # Sol-R's mask moves within the 16 steps of these runs
  c.memorization.enabled = False  # as the real-image presets (tested on digits)
  return c
