"""Loading a trained solution (or an init) for analysis: ``load_solution(path)``.

A ``Solution`` predicts and evaluates itself (``predict``, ``evaluate``) with one jitted function
per architecture, shared by every solution of it: one compilation per architecture and batch shape.

``path`` may be a work dir (its last checkpoint: the solution), ``WORKDIR/init`` (the state before the
first update: Init-S, Init-F or Sol-D's init), ``WORKDIR/checkpoints`` (its last checkpoint) or one
step directory ``WORKDIR/checkpoints/<step>``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from snnjax import models
from snnjax.errors import UserError
from snnjax.sparsity import check_mask, dense_mask
from snnjax.train import config_io
from snnjax.train import evaluate as evaluate_lib
from snnjax.train.checkpoint import (RESTORE_ADVICE, CheckpointStore,
                                     CorruptCheckpointError)
from snnjax.train.optim import make_optimizer
from snnjax.train.state import TrainState
from snnjax.train.step import cross_entropy, forward

PyTree = Any


@dataclasses.dataclass
class Solution:
  """A trained (or initial) network with its mask, ready for the estimators.

  ``logits_fn(params, x) -> (n, classes)`` and ``loss_fn(params, batch) -> mean cross-entropy over the
  batch`` run the model in eval mode with this solution's BatchNorm statistics closed over; pass
  ``self.params`` (or any params of the same structure, e.g. along an interpolation line).
  """

  params: PyTree
  mask: PyTree
  batch_stats: PyTree
  config: ml_collections.ConfigDict
  step: int
  epoch: int
  meta: dict
  model: Any
  path: str

  @property
  def apply_fn(self) -> Callable:
    return self.model.apply

  def functions(self, *, bn_mode: str = "eval", batch_stats: PyTree | None = None
                ) -> tuple[Callable, Callable]:
    """``(logits_fn, loss_fn)`` with BatchNorm in ``eval`` mode (running statistics, default) or
    ``train`` mode (each call normalizes with its own batch's statistics)."""
    if bn_mode not in ("eval", "train"):
      raise UserError(f"bn_mode must be eval or train, got {bn_mode!r}")
    stats = self.batch_stats if batch_stats is None else batch_stats
    train = bn_mode == "train"
    # Partials with the statistics as pytree leaves: the estimators jit them as ordinary arguments,
    # so every solution of one architecture shares their compilations.
    return (jax.tree_util.Partial(_ModelFunction(self.model, train, "logits"), stats),
            jax.tree_util.Partial(_ModelFunction(self.model, train, "loss"), stats))

  @property
  def logits_fn(self) -> Callable:
    return self.functions()[0]

  @property
  def loss_fn(self) -> Callable:
    return self.functions()[1]

  @property
  def architecture(self) -> str:
    """The model's identity by config (name, kwargs, classes): equal for equal architectures."""
    return json.dumps({"module": type(self.model).__name__, "name": self.config.model.name,
                       "kwargs": config_io.config_to_dict(self.config.model).get("kwargs", {}),
                       "num_classes": self.meta.get("num_classes")}, sort_keys=True)

  def predict(self, x, *, batch_size: int = 500, params: PyTree | None = None,
              batch_stats: PyTree | None = None) -> np.ndarray:
    """Eval-mode logits (N, classes) float32 of every row of ``x`` (N, ...), in batches of
    ``batch_size`` (the last one padded). ``params``/``batch_stats`` replace this solution's
    (same structure: e.g. a point along an interpolation line)."""
    return evaluate_lib.predict_logits(
        _predict_fn(self.architecture, self.model), self.params if params is None else params,
        self.batch_stats if batch_stats is None else batch_stats, np.asarray(x), batch_size)

  def evaluate(self, x, y, *, batch_size: int = 500, params: PyTree | None = None,
               batch_stats: PyTree | None = None) -> dict:
    """``{"accuracy", "loss"}`` (mean cross-entropy) of the eval-mode predictions on ``(x, y)``."""
    logits = self.predict(x, batch_size=batch_size, params=params, batch_stats=batch_stats)
    return evaluate_lib.loss_and_accuracy(logits, np.asarray(y))


# One jitted eval-mode forward per architecture (``Solution.architecture``), and how many times
# each was traced: jit traces once per new argument shape, right before compiling for it.
_PREDICT_FNS: dict[str, Callable] = {}
_PREDICT_TRACES: collections.Counter = collections.Counter()


def _predict_fn(architecture: str, model) -> Callable:
  fn = _PREDICT_FNS.get(architecture)
  if fn is None:
    def predict(params, batch_stats, x):
      _PREDICT_TRACES[architecture] += 1
      return forward(model.apply, params, batch_stats, x, train=False)[0]
    fn = _PREDICT_FNS[architecture] = jax.jit(predict)
  return fn


def predict_compilations() -> dict[str, int]:
  """``{architecture: programs compiled}`` of ``Solution.predict`` so far, in this process."""
  return dict(_PREDICT_TRACES)


@dataclasses.dataclass(frozen=True)
class _ModelFunction:
  """``kind(batch_stats, params, x_or_batch)``: the model's logits (n, classes) or its mean
  cross-entropy over a batch. Equal (and equally hashed) for equal models, modes and kinds: flax
  modules compare by value, so it keys the estimators' compilations across solutions."""

  model: Any
  train: bool
  kind: str

  def __call__(self, batch_stats: PyTree, params: PyTree, inputs) -> jax.Array:
    x = inputs["x"] if self.kind == "loss" else inputs
    logits = forward(self.model.apply, params, batch_stats, x, train=self.train)[0]
    if self.kind == "logits":
      return logits
    return jnp.mean(cross_entropy(logits, inputs["y"]))


def _resolve(path: str) -> tuple[str, str, int | None]:
  """-> (workdir, checkpoint-manager dir, step or None for its latest)."""
  path = os.path.abspath(path)
  if not os.path.exists(path):
    raise UserError(f"no checkpoint or work dir at {path}")
  if os.path.isfile(os.path.join(path, "config.json")):
    return path, os.path.join(path, "checkpoints"), None
  parent = os.path.dirname(path)
  if os.path.isfile(os.path.join(parent, "config.json")):
    return parent, path, None
  grand = os.path.dirname(parent)
  if os.path.isfile(os.path.join(grand, "config.json")) and os.path.basename(path).isdigit():
    return grand, parent, int(os.path.basename(path))
  raise UserError(f"{path} is not a snnjax work dir or checkpoint (no config.json found)")


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config.json, checked against its identity.json (``config_io.check_config_identity``:
  a config edited after training is refused, not trusted)."""
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      d = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"cannot read {workdir}/config.json: {e}") from e
  if not isinstance(d, dict):
    raise UserError(f"{workdir}/config.json is not a snnjax run's config (not a JSON object)")
  config_io.check_config_identity(workdir, d)
  return config_io.config_from_dict(d)


def check_checkpoint_step(ckpt_dir: str, step: int, state_step: int, meta: dict) -> None:
  """Refuses a checkpoint directory ``<step>`` that holds another step's state (a copy of an
  earlier checkpoint under a later name): its state's step counter and its meta's epoch x steps
  per epoch (a rewind save: its meta's ``rewind_point``) must both be ``step``."""
  where = os.path.join(ckpt_dir, str(step))
  if int(state_step) != int(step):
    raise CorruptCheckpointError(f"checkpoint {where} holds the state of step {int(state_step)}, "
                                 f"not of step {step}{RESTORE_ADVICE}")
  rewind_point = (meta.get("info") or {}).get("rewind_point")
  if rewind_point is not None:  # a mid-epoch save (WORKDIR/rewind/<k>, config.save_steps)
    if int(rewind_point) != int(step):
      raise CorruptCheckpointError(f"checkpoint {where}: its meta names the rewind point "
                                   f"{rewind_point}, not step {step}{RESTORE_ADVICE}")
    return
  epoch, per_epoch = meta.get("epoch"), meta.get("steps_per_epoch")
  if isinstance(epoch, int) and isinstance(per_epoch, int) and epoch * per_epoch != int(step):
    raise CorruptCheckpointError(f"checkpoint {where}: its meta names epoch {epoch} "
                                 f"({epoch * per_epoch} steps), not step {step}{RESTORE_ADVICE}")


def abstract_train_state(config: ml_collections.ConfigDict, input_shape, num_classes: int
                         ) -> TrainState:
  """Shapes and dtypes of the train state of a run of ``config`` (no computation)."""
  model = models.create_model(config.model.name, num_classes, **dict(config.model.kwargs))
  tx, _ = make_optimizer(config.optim, steps_per_epoch=1)

  def build():
    variables = model.init(jax.random.key(0), jnp.zeros((1, *input_shape), jnp.float32), train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    mask = dense_mask(params)
    return TrainState.create(params, batch_stats, mask, tx)

  return jax.eval_shape(build)


def load_solution(path: str, *, step: int | None = None) -> Solution:
  """Loads params, mask, BatchNorm statistics, config and step of a run's checkpoint.

  Args:
    path: a work dir, ``WORKDIR/init``, ``WORKDIR/checkpoints`` or ``WORKDIR/checkpoints/<step>``.
    step: a specific step in that checkpoint directory (default: the latest, i.e. the solution).
  Raises:
    UserError: missing path, no checkpoint, a corrupt checkpoint or a mask that does not match.
  """
  workdir, ckpt_dir, path_step = _resolve(path)
  config = read_run_config(workdir)
  with CheckpointStore(ckpt_dir, read_only=True) as store:
    steps = store.steps()
    if not steps:
      raise UserError(f"no checkpoint in {ckpt_dir} (has the run started?)")
    step = step if step is not None else (path_step if path_step is not None else steps[-1])
    if step not in steps:
      raise UserError(f"no checkpoint at step {step} in {ckpt_dir}; steps: {steps}")
    meta = store.restore_meta(step)
    target = abstract_train_state(config, meta["input_shape"], meta["num_classes"])
    state_dict, meta = store.restore(step, target.to_dict())
  state = TrainState.from_dict(state_dict)
  check_checkpoint_step(ckpt_dir, step, int(np.asarray(state.step)), meta)
  check_mask(state.params, state.mask)
  model = models.create_model(config.model.name, meta["num_classes"], **dict(config.model.kwargs))
  return Solution(params=state.params, mask=state.mask, batch_stats=state.batch_stats,
                  config=config, step=int(state.step), epoch=int(meta.get("epoch", 0)), meta=meta,
                  model=model, path=os.path.join(ckpt_dir, str(step)))
