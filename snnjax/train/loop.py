"""``train_and_evaluate(config, workdir)``: one run from its init (or last checkpoint) to its solution.

Every random choice derives from ``config.seed``: the init (``regimes.init_key``), the epoch's shuffle
(``pipeline.epoch_permutation(seed, epoch)``) and each step's augmentation (``fold_in(key, step)``),
so a run resumed from a checkpoint ends with exactly the numbers of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from snnjax import data as data_lib
from snnjax import models, sparsity
from snnjax.data import pipeline
from snnjax.errors import UserError
from snnjax.train import config_io, curriculum, evaluate, parallel, regimes
from snnjax.train.checkpoint import CheckpointStore
from snnjax.train.optim import make_optimizer
from snnjax.train.solution import load_solution
from snnjax.train.state import TrainState
from snnjax.train.step import make_predict_fn, make_train_step

# epoch_hook(epoch, state, context) -> dict of extra metrics for that epoch's record (or None).
EpochHook = Callable[[int, TrainState, dict], dict | None]


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a work dir that holds a different run (its config.json differs in a result field)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"{path} is unreadable ({e}); use a fresh --workdir") from e
  new = config_io.config_to_dict(config)
  old_r, new_r = config_io.result_fields(old), config_io.result_fields(new)
  # Fields only one side has (added to or removed from snnjax's configs since the run) are ignored.
  diff = sorted(k for k in set(old_r) & set(new_r) if old_r[k] != new_r[k])
  if diff:
    raise UserError(f"{workdir} holds a run with a different config (fields {', '.join(diff)}); "
                    "use a new --workdir or the original config")


def ensure_prerequisites(config: ml_collections.ConfigDict) -> None:
  """Checks (or, with ``config.prerequisites == "train"``, trains) the Sol-D run a regime needs."""
  needs_dense = config.regime in ("finetune", "lottery") or (
      config.regime == "scratch" and config.mask.source == "prune_dense")
  if not needs_dense:
    return
  workdir = os.path.abspath(config.dense_workdir)
  finished = _is_finished(workdir)
  if finished:
    return
  if config.prerequisites != "train":
    raise UserError(
        f"no finished Sol-D run at {workdir}: train it first with `python scripts/train.py "
        f"--config configs/dense.py --workdir {config.dense_workdir}` (or set "
        "--config.prerequisites=train with --config.dense_config=SPEC)")
  if not config.dense_config:
    raise UserError("config.prerequisites=train needs config.dense_config (e.g. configs/dense.py:quick)")
  dense_config = config_io.load_config_spec(config.dense_config)
  print(f"[snnjax] training the prerequisite Sol-D run in {workdir}", file=sys.stderr)
  train_and_evaluate(dense_config, workdir)


def _is_finished(workdir: str) -> bool:
  path = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(path):
    return False
  store = CheckpointStore(path, read_only=True)
  step = store.latest_step()
  return step is not None and bool(store.restore_meta(step).get("finished", False))


def _progress_bar(total: int, initial: int, enabled: bool):
  if not (enabled and sys.stderr.isatty()):
    return None
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False)


def finished_metrics(ckpt_dir: str) -> dict | None:
  """The final metrics of a finished run in ``ckpt_dir``, or None (no run there, or unfinished)."""
  if not os.path.isdir(ckpt_dir):
    return None
  store = CheckpointStore(ckpt_dir, read_only=True)
  try:
    last = store.latest_step()
    meta = store.restore_meta(last) if last is not None else {}
  finally:
    store.close()
  return meta["final_metrics"] if meta.get("finished") else None


def trained_epochs(workdir: str) -> int:
  """Epochs trained by the run in ``workdir`` as of its last checkpoint (0: none yet)."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    return 0
  store = CheckpointStore(ckpt_dir, read_only=True)
  try:
    last = store.latest_step()
    return int(store.restore_meta(last).get("epoch", 0)) if last is not None else 0
  finally:
    store.close()


def _read_metrics(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _write_metrics(path: str, records: list[dict]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
  os.replace(tmp, path)


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       epoch_hook: EpochHook | None = None, dataset=None) -> dict:
  """Trains one run of ``config`` in ``workdir`` and returns its final metrics record.

  Resumes from the last checkpoint in ``workdir``; a finished run is not retrained (its final record
  is returned). ``epoch_hook`` runs after each epoch's evaluation and may add metrics to the record.
  ``dataset`` (a ``snnjax.data.Dataset``) skips loading when the caller already has it.

  Raises:
    UserError: invalid config, a work dir holding a different run, a missing prerequisite run, a
      corrupt checkpoint. Nothing is written before these checks pass.
  """
  config_io.validate_config(config, models.model_names())
  workdir = os.path.abspath(workdir)
  check_workdir(config, workdir)
  parallel.maybe_initialize_distributed(bool(config.distributed))
  ckpt_dir = os.path.join(workdir, "checkpoints")
  final_metrics = finished_metrics(ckpt_dir)
  if final_metrics is not None:  # before prerequisites and data: a finished run needs neither
    print(f"[snnjax] {workdir} is already finished; not retraining", file=sys.stderr)
    return final_metrics
  ensure_prerequisites(config)
  if dataset is None:
    dataset = data_lib.load_dataset(config.dataset)
  model = models.create_model(config.model.name, dataset.num_classes, **dict(config.model.kwargs))

  mesh = parallel.make_mesh(config.num_devices)
  num_devices = mesh.devices.size
  if config.batch_size % num_devices:
    raise UserError(f"config.batch_size={config.batch_size} is not divisible by the "
                    f"{num_devices} devices in use (set --config.num_devices)")
  steps_per_epoch = dataset.num_train // config.batch_size
  if steps_per_epoch < 1:
    raise UserError(f"config.batch_size={config.batch_size} exceeds the {dataset.num_train} "
                    "training examples")
  total_steps = steps_per_epoch * config.num_epochs
  schedule_cfg = config.get("curriculum", None)
  scores = None
  if schedule_cfg is not None and schedule_cfg.kind != "none":
    scores = curriculum.load_scores(schedule_cfg.scores_path, dataset.num_train)
  tx, schedule = make_optimizer(config.optim, steps_per_epoch)

  meta_base = {"input_shape": list(dataset.input_shape), "num_classes": int(dataset.num_classes),
               "steps_per_epoch": steps_per_epoch, "dataset": dataset.name}
  metrics_path = os.path.join(workdir, "metrics.jsonl")

  params, batch_stats, mask, info = regimes.initial_variables(
      config, model, dataset.input_shape, load_solution)
  sparsity.check_mask(params, mask)
  state = TrainState.create(params, batch_stats, mask, tx)

  # Only now, with every check passed, the work dir is written to.
  ckpt_store = CheckpointStore(ckpt_dir, max_to_keep=config.checkpoint_keep)
  last = ckpt_store.latest_step()
  os.makedirs(workdir, exist_ok=True)
  if not os.path.exists(os.path.join(workdir, "config.json")):
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config_io.format_config(config))
  init_store = CheckpointStore(os.path.join(workdir, "init"), max_to_keep=None)
  if init_store.latest_step() is None:
    init_store.save(0, state.to_dict(), {**meta_base, "epoch": 0, "info": info})
  init_store.close()

  start_epoch = 0
  if last is not None:
    restored, meta = ckpt_store.restore(last, state.to_dict())
    state = TrainState.from_dict(restored)
    start_epoch = int(meta["epoch"])
    print(f"[snnjax] resuming {workdir} from epoch {start_epoch} (step {last})", file=sys.stderr)
  records = [r for r in _read_metrics(metrics_path) if r["epoch"] <= start_epoch]
  _write_metrics(metrics_path, records)

  state = parallel.replicate(state, mesh)
  train_data = parallel.replicate({"x": jnp.asarray(dataset.x_train),
                                   "y": jnp.asarray(dataset.y_train)}, mesh)
  compute_dtype = jnp.bfloat16 if config.precision == "bfloat16" else None
  step_fn = make_train_step(model.apply, tx, augment=bool(config.dataset.augment and dataset.is_image),
                            compute_dtype=compute_dtype,
                            batch_sharding=parallel.batch_sharded(mesh) if num_devices > 1 else None)
  fisher_reg = config.get("fisher_reg", None)
  penalty_step_fn = None
  if fisher_reg is not None and fisher_reg.weight:
    penalty_step_fn = make_train_step(
        model.apply, tx, augment=bool(config.dataset.augment and dataset.is_image),
        compute_dtype=compute_dtype, fisher_examples=int(fisher_reg.num_examples),
        batch_sharding=parallel.batch_sharded(mesh) if num_devices > 1 else None)
  predict = make_predict_fn(model.apply, compute_dtype=compute_dtype)
  aug_key = jax.random.fold_in(jax.random.key(config.seed), 1000 + regimes._STREAM[config.regime])
  best = {"test_accuracy": -1.0}
  if config.select_best_on_test:
    best_store = CheckpointStore(os.path.join(workdir, "best_on_test"), max_to_keep=1)
    if records:
      best = max(records, key=lambda r: r.get("test_accuracy", -1.0))

  bar = _progress_bar(total_steps, start_epoch * steps_per_epoch, config.progress)
  record = records[-1] if records else {}
  t_start = time.time()
  for epoch in range(start_epoch, config.num_epochs):
    t0 = time.time()
    perm = pipeline.epoch_permutation(config.seed, epoch, dataset.num_train)
    penalized = penalty_step_fn is not None and (
        not fisher_reg.until_epoch or epoch < fisher_reg.until_epoch)
    sums = {"loss": 0.0, "accuracy": 0.0, **({"fisher_penalty": 0.0} if penalized else {})}
    if scores is not None and epoch < schedule_cfg.until_epoch:
      epoch_batches = curriculum.pool_batches(
          scores, order=schedule_cfg.kind, seed=config.seed, epoch=epoch, num_steps=steps_per_epoch,
          batch_size=config.batch_size, pool_factor=float(schedule_cfg.pool_factor))
    else:
      epoch_batches = pipeline.batch_indices(perm, config.batch_size)
    for i, idx in enumerate(epoch_batches):
      step_key = jax.random.fold_in(aug_key, epoch * steps_per_epoch + i)
      if penalized:
        state, m = penalty_step_fn(state, train_data, jnp.asarray(idx), step_key,
                                   jnp.float32(fisher_reg.weight))
      else:
        state, m = step_fn(state, train_data, jnp.asarray(idx), step_key)
      sums = {k: sums[k] + m[k] for k in sums}
      if bar is not None:
        bar.update(1)
    train_time = time.time() - t0
    record = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
              "lr": float(schedule((epoch + 1) * steps_per_epoch - 1)),
              "batch_loss": float(sums["loss"]) / steps_per_epoch,
              "batch_accuracy": float(sums["accuracy"]) / steps_per_epoch,
              "epoch_time_s": train_time}
    if penalized:
      record["fisher_penalty"] = float(sums["fisher_penalty"]) / steps_per_epoch
    last_epoch = epoch + 1 == config.num_epochs
    if (epoch + 1) % config.eval_every_epochs == 0 or last_epoch:
      record.update(evaluate_state(state, dataset, predict, config, rng_seed=config.seed))
    if epoch_hook is not None:
      record.update(epoch_hook(epoch + 1, state, {"config": config, "dataset": dataset,
                                                  "model": model, "workdir": workdir}) or {})
    records.append(record)
    _write_metrics(metrics_path, records)
    if config.select_best_on_test and record.get("test_accuracy", -1.0) > best["test_accuracy"]:
      best = record
      best_store.save(record["step"], jax.device_get(state.to_dict()),
                      {**meta_base, "epoch": epoch + 1, "selection": "best test accuracy (on test data)"})
    if (epoch + 1) % config.checkpoint_every_epochs == 0 or last_epoch:
      meta = {**meta_base, "epoch": epoch + 1, "finished": last_epoch, "info": info}
      if last_epoch:
        meta["final_metrics"] = record
      ckpt_store.save(record["step"], jax.device_get(state.to_dict()), meta)
    if bar is None and config.progress:
      shown = {k: round(v, 4) for k, v in record.items()
               if k in ("batch_loss", "train_accuracy", "test_accuracy") and v is not None}
      print(f"[snnjax] epoch {epoch + 1}/{config.num_epochs} {shown} ({train_time:.1f}s)",
            file=sys.stderr)
  if bar is not None:
    bar.close()
  ckpt_store.close()
  record = dict(record)
  record["wall_time_s"] = time.time() - t_start
  return record
