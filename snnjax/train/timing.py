"""``measure_step_time(config, ...)``: seconds per train step and per evaluated example, measured.

A few seconds of timing on the machine at hand, for cost estimates before anything is trained
(``scripts/study.py --dry-run``). The step timed is the run's own jitted ``train_step`` (masked SGD,
augmentation, BatchNorm in train mode) at the config's batch size on synthetic inputs of the
dataset's shape, dense mask (a sparse run costs the same: masks are applied, not exploited); the
forward pass is the eval-mode ``predict`` at the config's eval batch size. Compilation is timed
apart and excluded from the per-step figure.
"""

from __future__ import annotations

import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from snnjax import models, sparsity
from snnjax.train.optim import make_optimizer
from snnjax.train.state import TrainState
from snnjax.train.step import make_predict_fn, make_train_step


def measure_step_time(config: ml_collections.ConfigDict, input_shape: Sequence[int],
                      num_classes: int, *, steps: int = 3, augment: bool = True) -> dict:
  """Times ``config``'s train step and eval forward pass on synthetic data.

  Args:
    config: a training config (model, optim, batch_size, eval_batch_size, precision, seed).
    input_shape: one example's shape, e.g. ``(32, 32, 3)``.
    num_classes: the model's output width.
    steps: timed steps after the compiling one (the median is reported).
    augment: time the step with the pad-and-crop / flip augmentation (image datasets).

  Returns:
    ``{"train_step_s", "predict_example_s", "compile_s", "batch_size", "eval_batch_size"}``:
    median seconds of one train step of ``batch_size`` examples, seconds of the eval forward
    pass per example, and seconds spent compiling both programs.
  """
  model = models.create_model(config.model.name, num_classes, **dict(config.model.kwargs))
  params, batch_stats = models.init_variables(model, jax.random.key(int(config.seed)),
                                              tuple(input_shape))
  tx, _ = make_optimizer(config.optim, steps_per_epoch=100)
  state = TrainState.create(params, batch_stats, sparsity.dense_mask(params), tx)
  batch, eval_batch = int(config.batch_size), int(config.eval_batch_size)
  rng = np.random.default_rng(0)
  data = {"x": jnp.asarray(rng.standard_normal((batch, *input_shape), np.float32)),
          "y": jnp.asarray(rng.integers(0, num_classes, batch).astype(np.int32))}
  idx = jnp.arange(batch, dtype=jnp.int32)
  compute_dtype = jnp.bfloat16 if config.precision == "bfloat16" else None
  step = make_train_step(model.apply, tx, augment=augment, compute_dtype=compute_dtype)
  predict = make_predict_fn(model.apply, compute_dtype=compute_dtype)
  key = jax.random.key(0)

  t0 = time.perf_counter()
  state, m = step(state, data, idx, key)
  jax.block_until_ready(m)
  x_eval = jnp.asarray(rng.standard_normal((eval_batch, *input_shape), np.float32))
  jax.block_until_ready(predict(state.params, state.batch_stats, x_eval))
  compile_s = time.perf_counter() - t0  # first calls: compilation plus one run of each

  times = []
  for i in range(max(1, int(steps))):
    t0 = time.perf_counter()
    state, m = step(state, data, idx, jax.random.fold_in(key, i))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  t0 = time.perf_counter()
  jax.block_until_ready(predict(state.params, state.batch_stats, x_eval))
  predict_s = time.perf_counter() - t0
  step_s = float(np.median(times))
  return {"train_step_s": step_s, "predict_example_s": predict_s / eval_batch,
          "compile_s": max(0.0, compile_s - step_s - predict_s), "batch_size": batch,
          "eval_batch_size": eval_batch}
