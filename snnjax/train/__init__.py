"""Masked training: optimizer, train step, checkpoints, the run loop, run dirs and solution loading."""

from snnjax.train.batchnorm import recompute_batch_stats
from snnjax.train.checkpoint import CheckpointStore
from snnjax.train.config_io import load_config_spec, validate_config
from snnjax.train.evaluate import label_noise_breakdown, loss_and_accuracy, predict_logits
from snnjax.train.loop import evaluate_state, train_and_evaluate
from snnjax.train.optim import make_optimizer, masked_sgd, piecewise_schedule
from snnjax.train.run_dir import RunDir
from snnjax.train.solution import Solution, load_solution
from snnjax.train.state import TrainState
from snnjax.train.step import cross_entropy, forward, make_predict_fn, make_train_step, train_step
