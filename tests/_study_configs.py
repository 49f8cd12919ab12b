"""A tiny study config shared by the study tests (embedded digits, two-epoch runs)."""

import os

from snnjax.train import config_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_study(*, hessian_probes=6, jacobian_examples=32):
  """The ``quick`` study at one sparsity (0.9), with 2-epoch runs of a small CNN on 300 digits
  and small measurement subsets; each test module switches stages on or off itself."""
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
  return c
