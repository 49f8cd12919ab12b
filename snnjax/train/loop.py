"""``train_and_evaluate(config, workdir)``: one run from its init (or last checkpoint) to its solution.

Every random choice derives from ``config.seed``: the init (``starting_point.init_key``), the epoch's
shuffle (``pipeline.epoch_permutation(seed, epoch)``) and each step's augmentation
(``fold_in(starting_point.augment_key(config), step)``), so a run resumed from a checkpoint ends with
exactly the numbers of an uninterrupted run.

The pieces, in the order ``train_and_evaluate`` uses them: ``check_workdir`` and
``ensure_prerequisites`` (nothing is written before they pass), ``create_train_state`` (the regime's
starting point), ``initialize_workdir`` (config.json, identity.json, ``init/``), ``restore_checkpoint``
(resume), ``make_step_fns`` (the jitted ``step.train_step``), then per epoch ``run_epoch``
(``train_epoch``, ``evaluate_state``, the epoch hook) and ``save_checkpoints``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from snnjax import data as data_lib
from snnjax import models, sparsity, xla_cpu
from snnjax.data import pipeline
from snnjax.errors import UserError
from snnjax.train import config_io, curriculum, dst, evaluate, parallel, starting_point
from snnjax.train import summaries
from snnjax.train import lock as lock_lib
from snnjax.train.checkpoint import CheckpointStore, CorruptCheckpointError
from snnjax.train.optim import make_optimizer
from snnjax.train.run_dir import RunDir, strict_json_values
from snnjax.train.solution import load_solution
from snnjax.train.state import TrainState
from snnjax.train.step import (finite_part_names, first_nonfinite_part, make_predict_fn,
                               make_train_step)

# epoch_hook(epoch, state, context) -> dict of extra metrics for that epoch's record (or None).
EpochHook = Callable[[int, TrainState, dict], dict | None]


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a work dir that holds a different run: its ``config_io.run_identity`` differs.

  A sparse run's Sol-D counts by its identity, not by its path, so a study moved or copied elsewhere
  holds the same runs. Where either side's Sol-D is not there to identify, the paths are compared.
  """
  run = RunDir(workdir)
  config_io.check_path(run.path, "the work dir")
  if config_io.is_study_dir(run.path) and not config_io.is_run_dir(run.path):
    raise UserError(f"{run.path} is a study directory (runs/, results/), not a training run's work "
                    "dir: use a fresh --workdir (a study is run by scripts/study.py)")
  for name, is_dir in (("checkpoints", True), ("init", True), ("best_on_test", True),
                       ("config.json", False), ("metrics.jsonl", False), ("lock.json", False)):
    path = os.path.join(run.path, name)
    if os.path.lexists(path) and (os.path.isdir(path) != is_dir or not os.path.exists(path)):
      raise UserError(f"{path} should be a {'directory' if is_dir else 'file'}; use a fresh --workdir")
  if config_io.needs_dense_run(config) and _abspath(config.dense_workdir) == run.path:
    raise UserError(f"config.dense_workdir is this run's own work dir ({run.path}): a "
                    f"{config.regime} run needs a separate Sol-D run")
  try:
    old = run.config_dict()
  except UserError as e:
    raise UserError(f"{e}; use a fresh --workdir") from e
  if old is None:
    return
  missing = ([k for k in config_io.TRAINING_FIELDS if k not in old] if isinstance(old, dict)
             else ["(not a JSON object)"])
  if missing:  # {} or a partial file matches nothing
    raise UserError(f"{run.config_path} is not a snnjax run's config (no field {missing[0]}); "
                    "use a fresh --workdir")
  config_io.check_config_identity(run.path, old)
  new = config_io.config_to_dict(config)
  stored = run.stored_identity() or {}
  if not isinstance(stored, dict):
    raise UserError(f"{run.identity_path} is not a snnjax run's identity; use a fresh --workdir")
  _check_scores_content(config, run, stored)
  old_r = config_io.run_identity(old, dense_identity=stored.get("dense_identity"))
  new_r = config_io.run_identity(new)
  if "dense_workdir" in old_r and "dense_workdir" in new_r and (
      _unresolved(old_r["dense_workdir"]) or _unresolved(new_r["dense_workdir"])):
    old_r["dense_workdir"], new_r["dense_workdir"] = (_abspath(old["dense_workdir"]),
                                                      _abspath(new["dense_workdir"]))
  # Fields only one side has (added to or removed from snnjax's configs since the run) are ignored.
  diff = sorted(k for k in set(old_r) & set(new_r) if old_r[k] != new_r[k])
  if diff:
    raise UserError(f"{workdir} holds a run with a different config (fields {', '.join(diff)}); "
                    "use a new --workdir or the original config")


def _check_scores_content(config: ml_collections.ConfigDict, run: RunDir, stored: dict) -> None:
  """A curriculum's scores file counts by its name in the identity and by its content here: other
  scores under the same name are another run."""
  path = config_io.curriculum_scores_path(config_io.config_to_dict(config))
  before = stored.get("scores_digest")
  now = config_io.scores_digest(path) if path and before else None
  if before and now is not None and now != before:
    raise UserError(f"config.curriculum.scores_path={path} holds other scores than the ones the run "
                    f"in {run.path} was trained with (its content differs); use a new --workdir")


def _unresolved(identity: str) -> bool:
  return identity.startswith(config_io.UNRESOLVED)


def _abspath(path: str) -> str:
  return os.path.abspath(path) if path else ""


def check_dense_pairing(config: ml_collections.ConfigDict, dense_config) -> None:
  """Refuses a Sol-D (config or config.json dict) of another dataset or architecture than
  ``config``: known before anything is trained."""
  def fields(c):
    d = c if isinstance(c, dict) else config_io.config_to_dict(c)
    model = d.get("model") or {}
    return {"dataset.name": (d.get("dataset") or {}).get("name"), "model.name": model.get("name"),
            "model.kwargs": model.get("kwargs") or {}}
  mine, theirs = fields(config), fields(dense_config)
  diff = [k for k in mine if mine[k] != theirs[k]]
  if diff:
    raise UserError(f"the dense run {config.dense_workdir} has another architecture or dataset "
                    f"than this config's ({', '.join(f'{k}: {theirs[k]} vs {mine[k]}' for k in diff)})")


def ensure_prerequisites(config: ml_collections.ConfigDict) -> None:
  """Checks (or, with ``config.prerequisites == "train"``, trains) the Sol-D run a regime needs."""
  if not config_io.needs_dense_run(config):
    return
  dense = RunDir(config.dense_workdir)
  stored = dense.config_dict()
  if stored is not None:
    check_dense_pairing(config, stored)
  if dense.finished:
    return
  if stored is not None and stored.get("regime") != "dense":
    raise UserError(f"the previous lottery round {dense.path} is not finished: train it first")
  if config.prerequisites != "train":
    raise UserError(
        f"no finished Sol-D run at {dense.path}: train it first with `python scripts/train.py "
        f"--config configs/dense.py --workdir {config.dense_workdir}` (or set "
        "--config.prerequisites=train with --config.dense_config=SPEC)")
  if not config.dense_config:
    raise UserError("config.prerequisites=train needs config.dense_config (e.g. configs/dense.py:quick)")
  try:
    dense_config = config_io.load_config_spec(config.dense_config)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"cannot load config.dense_config={config.dense_config}: "
                    f"{type(e).__name__}: {e}") from e
  config_io.validate_config(dense_config, models.model_names())
  _check(dense_config.regime == "dense", f"config.dense_config={config.dense_config} is a "
                                         f"{dense_config.regime} config, not a dense one")
  check_dense_pairing(config, dense_config)
  print(f"[snnjax] training the prerequisite Sol-D run in {dense.path}", file=sys.stderr)
  # Another run started at the same time may be training the same Sol-D: wait for it.
  train_and_evaluate(dense_config, dense.path, wait_for_lock=True)


def _progress_bar(total: int, initial: int, enabled: bool):
  if not (enabled and sys.stderr.isatty()):
    return None
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False)


class DivergenceError(UserError):
  """Training produced a non-finite loss, gradient, params leaf or BatchNorm statistic."""


def _compute_dtype(config: ml_collections.ConfigDict):
  return jnp.bfloat16 if config.precision == "bfloat16" else None


def _check(condition, message: str) -> None:
  if not condition:
    raise UserError(message)


def num_steps_per_epoch(config: ml_collections.ConfigDict, num_train: int, num_devices: int) -> int:
  """Optimizer steps per epoch (whole batches; the remainder of the shuffled set is left out)."""
  if config.batch_size % num_devices:
    raise UserError(f"config.batch_size={config.batch_size} is not divisible by the "
                    f"{num_devices} devices in use (set --config.num_devices)")
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch < 1:
    raise UserError(f"config.batch_size={config.batch_size} exceeds the {num_train} "
                    "training examples")
  last = max([config.num_epochs, config.optim.warmup_epochs, *config.optim.boundaries_epochs])
  if last * steps_per_epoch >= 2**31:
    raise UserError(f"config: epoch {last:g} x {steps_per_epoch} steps per epoch overflows the "
                    "32-bit step counter; use fewer epochs (num_epochs, optim.warmup_epochs, "
                    "optim.boundaries_epochs)")
  return steps_per_epoch


def curriculum_scores(config: ml_collections.ConfigDict, num_train: int) -> np.ndarray | None:
  """The per-example scores of the run's curriculum (``config.curriculum``), or None without one."""
  schedule_cfg = config.get("curriculum", None)
  if schedule_cfg is None or schedule_cfg.kind == "none":
    return None
  return curriculum.load_scores(schedule_cfg.scores_path, num_train)


def create_train_state(config: ml_collections.ConfigDict, model, input_shape, tx, dataset=None
                       ) -> tuple[TrainState, dict]:
  """The regime's starting point (``starting_point.initial_variables``) as a fresh train state, and
  the ``info`` record of where its weights and mask came from (``dataset``: for masks scored on
  data, ``mask.source=snip|grasp``)."""
  params, batch_stats, mask, info = starting_point.initial_variables(
      config, model, input_shape, load_solution, dataset=dataset)
  sparsity.check_mask(params, mask)
  for path, leaf in jax.tree_util.tree_flatten_with_path(mask)[0]:
    if not np.any(np.asarray(leaf)):
      name = "/".join(str(getattr(k, "key", k)) for k in path)
      raise UserError(f"config.sparsity={config.sparsity} leaves layer {name} with no active "
                      "weight; lower the sparsity (or use --config.mask.scope=layerwise)")
  return TrainState.create(params, batch_stats, mask, tx), info


def initialize_workdir(config: ml_collections.ConfigDict, run: RunDir, state: TrainState,
                       init_meta: dict) -> None:
  """Writes what a new run's work dir holds before its first update (kept as it is on resume):
  config.json, identity.json and the initial state in ``init/``."""
  run.write_config(config)
  run.write_identity(config)
  with CheckpointStore(run.init_dir, max_to_keep=None) as init_store:
    if init_store.latest_step() is None:
      init_store.save(0, state.to_dict(), init_meta)


def restore_checkpoint(store: CheckpointStore, state: TrainState, run: RunDir
                       ) -> tuple[TrainState, int, list[dict]]:
  """``(state, epochs done, their records)`` from the latest checkpoint in ``store`` (``(state, 0,
  [])`` without one). metrics.jsonl is cut back to those epochs: later ones are trained again."""
  last = store.latest_step()
  start_epoch = 0
  if last is not None:
    restored, meta = store.restore(last, state.to_dict())
    state, start_epoch = TrainState.from_dict(restored), int(meta["epoch"])
    print(f"[snnjax] resuming {run.path} from epoch {start_epoch} (step {last})", file=sys.stderr)
    before, now = meta.get("environment"), xla_cpu.numerics_environment()
    if before is not None and before != now:
      print(f"[snnjax] note: the run began under another numerics environment ({before}; now "
            f"{now}): later epochs may differ in the last bits from an uninterrupted run",
            file=sys.stderr)
  records = _complete_records(store, run, [r for r in run.epoch_records() if r["epoch"] <= start_epoch],
                             start_epoch)
  run.write_records(records)
  return state, start_epoch, records


def _complete_records(store: CheckpointStore, run: RunDir, records: list[dict], epochs: int
                      ) -> list[dict]:
  """``records`` (epochs 1..``epochs`` resumed from) with every epoch record metrics.jsonl lost (a
  truncated or edited file) that a kept checkpoint's meta holds put back, said on stderr; epochs no
  checkpoint holds are named there too (their numbers are gone, the training is not)."""
  have = {r["epoch"] for r in records}
  if len(have) >= epochs:
    return records
  restored = {}
  for step in store.steps():
    meta = store.restore_meta(step)
    record = meta.get("record") or meta.get("final_metrics")
    if isinstance(record, dict) and record.get("epoch") not in have and record.get("epoch", 0) <= epochs:
      restored[record["epoch"]] = record
  if restored:
    print(f"[snnjax] note: {run.metrics_path} lacked the records of epochs {sorted(restored)}; "
          "restored from their checkpoints' meta", file=sys.stderr)
  lost = sorted(set(range(1, epochs + 1)) - have - set(restored))
  if lost:
    print(f"[snnjax] note: {run.metrics_path} lacks the records of epochs {lost} and no kept "
          "checkpoint holds them: those epochs stay without a record", file=sys.stderr)
  return sorted(records + list(restored.values()), key=lambda r: r["epoch"])


@dataclasses.dataclass(frozen=True)
class StepFns:
  """The jitted train steps of a run: ``plain`` and, with a Fisher penalty, ``penalized``."""

  plain: Callable
  penalized: Callable | None


def make_step_fns(config: ml_collections.ConfigDict, model, tx, *, augment: bool, mesh) -> StepFns:
  """``step.make_train_step`` for ``config`` (precision, data-parallel sharding, Fisher penalty;
  with ``grad_norm_every`` the steps also return the masked gradient norm)."""
  batch_sharding = parallel.batch_sharded(mesh) if mesh.devices.size > 1 else None
  nan_policy = config.get("nan_policy", "stop")
  grad_norm = int(config.get("grad_norm_every", 0)) > 0
  plain = make_train_step(model.apply, tx, augment=augment, compute_dtype=_compute_dtype(config),
                          batch_sharding=batch_sharding, nan_policy=nan_policy,
                          grad_norm=grad_norm)
  fisher_reg = config.get("fisher_reg", None)
  penalized = None
  if fisher_reg is not None and fisher_reg.weight:
    penalized = make_train_step(model.apply, tx, augment=augment,
                                compute_dtype=_compute_dtype(config),
                                fisher_examples=int(fisher_reg.num_examples),
                                batch_sharding=batch_sharding, nan_policy=nan_policy,
                                grad_norm=grad_norm)
  return StepFns(plain, penalized)


def epoch_batches(config: ml_collections.ConfigDict, epoch: int, num_train: int,
                  steps_per_epoch: int, scores: np.ndarray | None) -> list[np.ndarray]:
  """The index batches of epoch ``epoch`` (0-based): the curriculum's while it lasts, else the
  seeded shuffle's."""
  schedule_cfg = config.get("curriculum", None)
  if scores is not None and epoch < schedule_cfg.until_epoch:
    return curriculum.pool_batches(
        scores, order=schedule_cfg.kind, seed=starting_point.order_seed(config), epoch=epoch,
        num_steps=steps_per_epoch,
        batch_size=config.batch_size, pool_factor=float(schedule_cfg.pool_factor))
  return pipeline.batch_indices(pipeline.epoch_permutation(starting_point.order_seed(config),
                                                           epoch, num_train),
                                config.batch_size)


def train_epoch(state: TrainState, train_data: dict, batches, *, step_fn: Callable,
                aug_key: jax.Array, first_step: int, fisher_weight: float | None = None,
                bar=None, grad_norm_every: int = 0, save_steps=()) -> tuple[TrainState, dict]:
  """One pass of ``step_fn`` over ``batches``; returns the new state and the metrics averaged over
  its finite steps (``loss``, ``accuracy`` and, with ``fisher_weight``, ``fisher_penalty``), with
  the epoch's health: ``num_steps``, ``nonfinite_steps`` (steps whose update was not finite) and
  ``first_nonfinite`` (None, or ``(index of the step in the epoch, name of its first non-finite
  part)``, see ``step.finite_part_names``).

  The steps' finite flags stay on the device until the epoch's end (one transfer per epoch).
  With ``grad_norm_every`` n > 0 (a step function made with ``grad_norm=True``) ``grad_norm`` is
  ``{"step": [...], "value": [...]}``: the masked gradient norm of every step whose global index
  (0-based, the step's params before its update) is a multiple of n. ``saved``: ``{step: host
  state dict}`` of the states after ``step`` updates for the ``save_steps`` inside the epoch.
  """
  names = finite_part_names(state)
  norm_steps, norms, saved = [], [], {}
  wanted = {int(k) for k in save_steps}
  sums = {"loss": 0.0, "accuracy": 0.0, **({"fisher_penalty": 0.0} if fisher_weight is not None else {})}
  flags, parts = [], []
  for i, idx in enumerate(batches):
    step_key = jax.random.fold_in(aug_key, first_step + i)
    if fisher_weight is not None:
      state, m = step_fn(state, train_data, jnp.asarray(idx), step_key, jnp.float32(fisher_weight))
    else:
      state, m = step_fn(state, train_data, jnp.asarray(idx), step_key)
    sums = {k: sums[k] + jnp.where(m["finite"], m[k], 0.0) for k in sums}
    flags.append(m["finite"])
    parts.append(m["finite_parts"])
    if grad_norm_every and (first_step + i) % grad_norm_every == 0:
      norm_steps.append(first_step + i)
      norms.append(m["grad_norm"])
    if first_step + i + 1 in wanted:  # copied now: the next step donates the state's buffers
      saved[first_step + i + 1] = jax.device_get(state.to_dict())
    if bar is not None:
      bar.update(1)
  finite = np.asarray(jnp.stack(flags)) if flags else np.ones(0, bool)
  bad = np.flatnonzero(~finite)
  num_ok = int(finite.sum())
  means = {k: float(v) / num_ok if num_ok else float("nan") for k, v in sums.items()}
  means.update(num_steps=len(flags), nonfinite_steps=int(bad.size), first_nonfinite=None,
               saved=saved)
  if grad_norm_every:
    values = np.asarray(jnp.stack(norms)) if norms else np.zeros(0)
    means["grad_norm"] = {"step": norm_steps, "value": [float(v) for v in values]}
  if bad.size:
    means["first_nonfinite"] = (int(bad[0]), first_nonfinite_part(parts[int(bad[0])], names))
  return state, means


def check_epoch_health(config: ml_collections.ConfigDict, epoch: int, first_step: int,
                       means: dict, last_checkpoint: str) -> None:
  """Raises ``DivergenceError`` when epoch ``epoch`` (0-based) must stop the run: any non-finite
  step under ``nan_policy="stop"``, every step skipped under ``"skip_step"``."""
  if means["first_nonfinite"] is None:
    return
  policy = config.get("nan_policy", "stop")
  index, part = means["first_nonfinite"]
  if policy == "skip_step" and means["nonfinite_steps"] < means["num_steps"]:
    return
  what = "loss" if part == "loss" else f"leaf {part}"
  cause = ("every step of the epoch was skipped (nan_policy=skip_step)" if policy == "skip_step"
           else "nan_policy=stop")
  raise DivergenceError(
      f"training diverged at epoch {epoch + 1}, step {first_step + index + 1}: non-finite {what} "
      f"({cause}); nothing of epoch {epoch + 1} was saved; {last_checkpoint}; lower "
      "config.optim.lr (or warmup), or set --config.nan_policy=skip_step")


def evaluate_state(state: TrainState, dataset, predict, config, rng_seed: int = 0) -> dict:
  """Train/test loss and accuracy; with label noise, the clean / correct / memorized breakdown.

  Train metrics are on the labels trained on (noisy ones included) over ``config.train_eval_size``
  examples (0 = all, a fixed seeded subset otherwise); test metrics over the whole test split.
  """
  out = {}
  test_logits = evaluate.predict_logits(predict, state.params, state.batch_stats, dataset.x_test,
                                        config.eval_batch_size)
  out.update({f"test_{k}": v for k, v in evaluate.loss_and_accuracy(test_logits, dataset.y_test).items()})
  idx = np.arange(dataset.num_train)
  if config.train_eval_size and config.train_eval_size < dataset.num_train:
    idx = np.sort(np.random.default_rng(rng_seed).choice(dataset.num_train, config.train_eval_size,
                                                         replace=False))
  train_logits = evaluate.predict_logits(predict, state.params, state.batch_stats,
                                         dataset.x_train[idx], config.eval_batch_size)
  out.update({f"train_{k}": v for k, v in
              evaluate.loss_and_accuracy(train_logits, dataset.y_train[idx]).items()})
  if dataset.noisy.any():
    breakdown = evaluate.label_noise_breakdown(train_logits.argmax(1), dataset.y_train[idx],
                                               dataset.y_train_true[idx], dataset.noisy[idx])
    out.update({f"train_{k}": v for k, v in breakdown.items()})
    true_metrics = evaluate.loss_and_accuracy(train_logits, dataset.y_train_true[idx])
    out["train_true_label_accuracy"] = true_metrics["accuracy"]
  return out


@dataclasses.dataclass(frozen=True)
class RunContext:
  """What every epoch of a run uses and none changes."""

  config: ml_collections.ConfigDict
  workdir: str
  dataset: Any
  model: Any
  train_data: dict
  step_fns: StepFns
  predict: Callable
  schedule: Callable
  scores: np.ndarray | None
  steps_per_epoch: int
  aug_key: jax.Array
  meta_base: dict
  info: dict
  dst: Any = None  # dst.DynamicSparsity of a rigl / set run (mask updates), else None
  rewind_store: Any = None  # CheckpointStore of WORKDIR/rewind (config.save_steps), else None


def run_epoch(ctx: RunContext, state: TrainState, epoch: int, *,
              epoch_hook: EpochHook | None = None, bar=None, last_checkpoint: str = ""
              ) -> tuple[TrainState, dict]:
  """Trains epoch ``epoch`` (0-based); returns the new state and the epoch's metrics record
  (evaluated every ``config.eval_every_epochs`` epochs and at the last; non-finite floats become
  None). Under ``nan_policy="skip_step"`` the record has ``skipped_steps``.

  Raises:
    DivergenceError: a non-finite step the policy does not skip (see ``check_epoch_health``;
      ``last_checkpoint`` says in words which checkpoint is kept).
  """
  config, steps = ctx.config, ctx.steps_per_epoch
  last_checkpoint = last_checkpoint or "earlier checkpoints are kept"
  fisher_reg = config.get("fisher_reg", None)
  penalized = ctx.step_fns.penalized is not None and (
      not fisher_reg.until_epoch or epoch < fisher_reg.until_epoch)
  t0 = time.time()
  step_fn = ctx.step_fns.penalized if penalized else ctx.step_fns.plain
  if ctx.dst is not None:
    step_fn = ctx.dst.wrap(step_fn, first_step=epoch * steps)
  state, means = train_epoch(
      state, ctx.train_data, epoch_batches(config, epoch, ctx.dataset.num_train, steps, ctx.scores),
      step_fn=step_fn, aug_key=ctx.aug_key,
      first_step=epoch * steps, fisher_weight=fisher_reg.weight if penalized else None, bar=bar,
      grad_norm_every=int(config.get("grad_norm_every", 0)),
      save_steps=tuple(config.get("save_steps", ())) if ctx.rewind_store is not None else ())
  check_epoch_health(config, epoch, epoch * steps, means, last_checkpoint)
  for k, host_state in means["saved"].items():
    if k not in ctx.rewind_store.steps():
      ctx.rewind_store.save(k, host_state, {**ctx.meta_base, "epoch": epoch,
                                            "info": {**ctx.info, "rewind_point": k}})
  record = {"epoch": epoch + 1, "step": (epoch + 1) * steps,
            "lr": float(ctx.schedule((epoch + 1) * steps - 1)),
            "batch_loss": means["loss"], "batch_accuracy": means["accuracy"],
            "epoch_time_s": time.time() - t0}
  if penalized:
    record["fisher_penalty"] = means["fisher_penalty"]
  if "grad_norm" in means:
    record["grad_norm"] = means["grad_norm"]
  if config.get("nan_policy", "stop") == "skip_step":
    record["skipped_steps"] = means["nonfinite_steps"]
  if ctx.dst is not None:
    record.update(ctx.dst.epoch_metrics(state, (epoch + 1) * steps))
  if (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == config.num_epochs:
    record.update(evaluate_state(state, ctx.dataset, ctx.predict, config, rng_seed=config.seed))
  if epoch_hook is not None:
    record.update(epoch_hook(epoch + 1, state, {"config": config, "dataset": ctx.dataset,
                                                "model": ctx.model, "workdir": ctx.workdir}) or {})
  return state, strict_json_values(record)


def save_checkpoints(ctx: RunContext, state: TrainState, record: dict, ckpt_store: CheckpointStore,
                     best_store: CheckpointStore | None, best_accuracy: float) -> float:
  """Saves the epoch's checkpoint (every ``config.checkpoint_every_epochs`` and the last, which is
  marked finished with the final metrics) and, into ``best_store``, a new best test accuracy.
  Returns the best test accuracy so far."""
  epoch, last_epoch = record["epoch"], record["epoch"] == ctx.config.num_epochs
  accuracy = record.get("test_accuracy")
  best = best_store is not None and accuracy is not None and accuracy > best_accuracy
  due = epoch % ctx.config.checkpoint_every_epochs == 0 or last_epoch
  if not (best or due):
    return best_accuracy
  host_state = jax.device_get(state.to_dict())
  bad = nonfinite_leaf(host_state)
  if bad is not None:  # the step's flags make this unreachable; a good checkpoint is never rotated away
    raise DivergenceError(f"the state after epoch {epoch} has a non-finite leaf {bad}; not saved")
  if best:
    best_accuracy = record["test_accuracy"]
    best_store.save(record["step"], host_state,
                    {**ctx.meta_base, "epoch": epoch, "selection": "best test accuracy (on test data)"})
  if due:
    meta = {**ctx.meta_base, "epoch": epoch, "finished": last_epoch, "info": ctx.info,
            "record": record}  # metrics.jsonl's line of this epoch, restored from here if lost
    if last_epoch:
      meta["final_metrics"] = record
    ckpt_store.save(record["step"], host_state, meta)
  return best_accuracy


def nonfinite_leaf(tree: Any) -> str | None:
  """The path of the first floating leaf of ``tree`` holding NaN or inf (host arrays); None if none."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    a = np.asarray(leaf)
    if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
      return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
  return None


def _log_epoch(config: ml_collections.ConfigDict, record: dict) -> None:
  shown = {k: round(v, 4) for k, v in record.items()
           if k in ("batch_loss", "train_accuracy", "test_accuracy") and v is not None}
  print(f"[snnjax] epoch {record['epoch']}/{config.num_epochs} {shown} "
        f"({record['epoch_time_s']:.1f}s)", file=sys.stderr)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       epoch_hook: EpochHook | None = None, dataset=None,
                       wait_for_lock: bool | float = False,
                       on_start: Callable[[], None] | None = None) -> dict:
  """Trains one run of ``config`` in ``workdir`` and returns its final metrics record.

  Resumes from the last checkpoint in ``workdir``; a finished run (its final checkpoint verified)
  is not retrained (its final record is returned). ``epoch_hook`` runs after each epoch's
  evaluation and may add metrics to the record. ``dataset`` (a ``snnjax.data.Dataset``) skips
  loading when the caller already has it.

  The work dir is written only while this process holds its lock (``WORKDIR/lock.json``,
  ``snnjax.train.lock``): another live owner makes it refuse (``wait_for_lock=False``), or wait up
  to ``wait_for_lock`` seconds (True: until the owner is done, as a shared Sol-D prerequisite does).
  ``on_start()`` runs once every check has passed and the lock is held, right before the work dir
  is first written (``scripts/train.py`` prints the resolved config and identity there).

  Raises:
    UserError: invalid config, a work dir holding a different run, a missing prerequisite run, a
      corrupt checkpoint, a work dir locked by another process (``lock.LockedError``). Nothing is
      written before these checks pass.
  """
  config_io.validate_config(config, models.model_names())
  summaries.check_available(config)  # --config.tensorboard without its writer: refused up front
  run = RunDir(workdir)
  check_workdir(config, run.path)
  parallel.initialize_distributed(config.distributed)
  try:
    final_metrics = run.final_metrics()
  except CorruptCheckpointError:
    holder = lock_lib.owner(run.lock_path)  # a checkpoint rotated away by a live owner meanwhile?
    if holder is not None and not lock_lib.is_stale(holder):
      raise lock_lib.LockedError(f"{run.lock_path} is held by {lock_lib.describe(holder)}; wait "
                                 "for it to finish") from None
    raise
  if final_metrics is not None:  # before prerequisites and data: a finished run needs neither
    print(f"[snnjax] {run.path} is already finished; not retraining", file=sys.stderr)
    # --config.tensorboard on a run finished without it: its curves from metrics.jsonl
    summaries.write_finished(config, run.path, run.epoch_records(), primary=parallel.is_primary())
    return final_metrics
  # Everything knowable from this config is checked before a prerequisite run is trained.
  if dataset is None:
    dataset = data_lib.load_dataset(config.dataset)
  model = models.create_model(config.model.name, dataset.num_classes, **dict(config.model.kwargs))
  mesh = parallel.make_mesh(config.num_devices)
  steps_per_epoch = num_steps_per_epoch(config, dataset.num_train, mesh.devices.size)
  scores = curriculum_scores(config, dataset.num_train)
  ensure_prerequisites(config)
  tx, schedule = make_optimizer(config.optim, steps_per_epoch, config.num_epochs)
  state, info = create_train_state(config, model, dataset.input_shape, tx, dataset=dataset)
  mask_updates = dst.make(  # rigl / set: the mask updates (None otherwise)
      config, model, state, steps_per_epoch, augment=bool(config.dataset.augment and dataset.is_image),
      compute_dtype=_compute_dtype(config),
      batch_sharding=parallel.batch_sharded(mesh) if mesh.devices.size > 1 else None)
  meta_base = {"input_shape": list(dataset.input_shape), "num_classes": int(dataset.num_classes),
               "steps_per_epoch": steps_per_epoch, "dataset": dataset.name,
               "environment": xla_cpu.numerics_environment()}  # recorded, not in the identity

  # Only now, with every check passed, the work dir is written to; every store is closed on exit.
  with contextlib.ExitStack() as stores:
    stores.enter_context(_workdir_lock(run, wait_for_lock))
    check_workdir(config, run.path)  # again: a run that held the lock meanwhile may have begun it
    if on_start is not None:
      on_start()
    ckpt_store = stores.enter_context(
        CheckpointStore(run.checkpoints_dir, max_to_keep=config.checkpoint_keep))
    initialize_workdir(config, run, state, {**meta_base, "epoch": 0, "info": info})
    state, start_epoch, records = restore_checkpoint(ckpt_store, state, run)
    best_store = stores.enter_context(CheckpointStore(
        os.path.join(run.path, "best_on_test"), max_to_keep=1)) if config.select_best_on_test else None
    rewind_store = stores.enter_context(CheckpointStore(
        os.path.join(run.path, starting_point.REWIND_DIR), max_to_keep=None)) if tuple(
            config.get("save_steps", ())) else None
    best_accuracy = max([r["test_accuracy"] for r in records if r.get("test_accuracy") is not None],
                        default=-1.0)
    ctx = RunContext(
        config=config, workdir=run.path, dataset=dataset, model=model,
        train_data=parallel.replicate({"x": jnp.asarray(dataset.x_train),
                                       "y": jnp.asarray(dataset.y_train)}, mesh),
        step_fns=make_step_fns(config, model, tx, mesh=mesh,
                               augment=bool(config.dataset.augment and dataset.is_image)),
        predict=make_predict_fn(model.apply, compute_dtype=_compute_dtype(config)),
        schedule=schedule, scores=scores, steps_per_epoch=steps_per_epoch,
        aug_key=starting_point.augment_key(config), meta_base=meta_base, info=info,
        dst=mask_updates, rewind_store=rewind_store)
    state = parallel.replicate(state, mesh)
    bar = stores.enter_context(_closing(
        _progress_bar(steps_per_epoch * config.num_epochs, start_epoch * steps_per_epoch,
                      config.progress)))
    record = records[-1] if records else {}
    earlier = records if not summaries.has_training_events(run.path) else []
    events = stores.enter_context(summaries.open_writer(config, run.path,
                                                        primary=parallel.is_primary()))
    for r in earlier:  # resumed with --config.tensorboard after epochs trained without it
      events.write(r)
    t_start = time.time()
    for epoch in range(start_epoch, config.num_epochs):
      last = ckpt_store.latest_step()
      kept = (f"the last checkpoint (step {last}) is kept" if last is not None
              else "there is no earlier checkpoint")
      state, record = run_epoch(ctx, state, epoch, epoch_hook=epoch_hook, bar=bar,
                                last_checkpoint=kept)
      records.append(record)
      run.write_records(records)
      events.write(record)
      best_accuracy = save_checkpoints(ctx, state, record, ckpt_store, best_store, best_accuracy)
      if bar is None and config.progress:
        _log_epoch(config, record)
  return {**record, "wall_time_s": time.time() - t_start}


def _workdir_lock(run: RunDir, wait: bool | float):
  """``lock.hold`` of the run's work dir (created here), telling once on stderr when it waits.
  In a multi-process run the primary process holds it for all (the others join its collectives)."""
  if not parallel.is_primary():
    return contextlib.nullcontext()

  def tell(record):
    print(f"[snnjax] {run.path} is being trained by {lock_lib.describe(record)}; waiting",
          file=sys.stderr)
  os.makedirs(run.path, exist_ok=True)
  return lock_lib.hold(run.lock_path, wait=wait, on_wait=tell)


@contextlib.contextmanager
def _closing(bar):
  try:
    yield bar
  finally:
    if bar is not None:
      bar.close()
