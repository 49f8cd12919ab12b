"""Divergence: a non-finite step is detected inside the jitted step and never destroys a good
checkpoint (config.nan_policy stop | skip_step); metrics.jsonl is strict JSON; configs with
non-finite or absurd optimizer values are refused; measurements refuse non-finite solutions."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax import data as data_lib
from snnjax import models
from snnjax.errors import UserError
from snnjax.train import TrainState, cli, config_io, loop, make_optimizer, train_and_evaluate, train_step
from snnjax.train.checkpoint import CheckpointStore
from snnjax.train.run_dir import RunDir
from snnjax.train.solution import abstract_train_state, load_solution
from snnjax.train.step import finite_part_names, first_nonfinite_part
from tests._train_configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [sys.executable, os.path.join(REPO, "scripts", "train.py")]
MEASURE = [sys.executable, os.path.join(REPO, "scripts", "measure.py")]
QUICK = ["--config", os.path.join(REPO, "configs", "dense.py:quick"), "--config.progress=False"]


def _strict_records(path):
  def refuse(token):
    raise AssertionError(f"bare {token} token in {path}")
  with open(path) as f:
    return [json.loads(line, parse_constant=refuse) for line in f if line.strip()]


def _leaves_finite(tree):
  return all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(a).dtype, np.inexact))


def _config(epochs, **fields):
  config = tiny(model="cnn", dataset="digits", epochs=epochs)
  config.batch_size = 256  # 5 steps per epoch on the 1437 digits, 157 examples left out of each
  config.eval_every_epochs = epochs  # evaluated at the last epoch only
  for k, v in fields.items():
    config[k] = v
  return config


@pytest.fixture(scope="module")
def digits():
  return data_lib.load_dataset(tiny(dataset="digits").dataset)


def _used(config, epoch, num_train):
  steps = loop.num_steps_per_epoch(config, num_train, 1)
  return set(np.concatenate(loop.epoch_batches(config, epoch, num_train, steps, None)).tolist())


def _poisoned(dataset, index):
  x = dataset.x_train.copy()
  x[index] = np.nan
  return dataclasses.replace(dataset, x_train=x)


# Validation.

@pytest.mark.parametrize("field,value", [
    ("optim.lr", float("inf")), ("optim.lr", 1e9), ("optim.lr", float("nan")), ("optim.lr", 100.0),
    ("optim.weight_decay", float("inf")), ("optim.weight_decay", 1.0),
    ("optim.momentum", float("nan")), ("fisher_reg.weight", float("inf")),
    ("fisher_reg.weight", 1e6), ("fisher_reg.weight", -1.0), ("nan_policy", "ignore")])
def test_validate_config_rejects_non_finite_and_absurd_values(field, value):
  config = tiny()
  node, leaf = (config[field.split(".")[0]], field.split(".")[1]) if "." in field else (config, field)
  node[leaf] = value
  with pytest.raises(UserError, match=rf"^config\.{field} must be"):
    config_io.validate_config(config)


def test_the_default_nan_policy_keeps_every_run_identity():
  d = config_io.config_to_dict(tiny())
  assert d["nan_policy"] == "stop"
  before = {k: v for k, v in d.items() if k != "nan_policy"}  # a config from before the field
  assert config_io.identity_hash(d) == config_io.identity_hash(before)
  assert config_io.identity_hash({**d, "nan_policy": "skip_step"}) != config_io.identity_hash(before)


def test_metrics_jsonl_is_strict_json_and_reads_back(tmp_path):
  run = RunDir(tmp_path)
  run.write_records([{"epoch": 1, "step": 5, "batch_loss": float("nan"),
                                          "test_loss": float("inf"), "lrs": [float("-inf"), 0.5]}])
  assert _strict_records(run.metrics_path) == run.epoch_records() == [
      {"epoch": 1, "step": 5, "batch_loss": None, "test_loss": None, "lrs": [None, 0.5]}]


# The jitted step.

def test_the_step_flags_a_non_finite_update_and_skip_step_keeps_the_state():
  model = models.create_model("cnn", 10, width=4)
  params, stats = jax.device_get(models.init_variables(model, jax.random.key(0), (8, 8, 1)))
  mask = jax.tree.map(lambda p: np.ones(p.shape, bool), params)
  rng = np.random.default_rng(0)
  batch = {"x": jnp.asarray(rng.normal(size=(16, 8, 8, 1)), jnp.float32),
           "y": jnp.asarray(rng.integers(0, 10, 16), jnp.int32)}
  tx, _ = make_optimizer(tiny().optim, 10)
  state = TrainState.create(params, stats, mask, tx)
  # An infinite momentum buffer: the loss and gradients stay finite, the update does not.
  state = state.replace(opt_state=jax.tree.map(
      lambda a: jnp.full_like(a, jnp.inf) if jnp.issubdtype(a.dtype, jnp.floating) else a,
      state.opt_state))
  step = jax.jit(lambda s: train_step(s, batch, apply_fn=model.apply, tx=tx, nan_policy="skip_step"))
  kept, m = step(state)
  assert not bool(m["finite"]) and np.isfinite(float(m["loss"]))
  assert first_nonfinite_part(m["finite_parts"], finite_part_names(state)).startswith("params/")
  assert int(kept.step) == 1
  for a, b in zip(jax.tree.leaves((kept.params, kept.batch_stats, kept.opt_state)),
                  jax.tree.leaves((state.params, state.batch_stats, state.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# Runs.

def test_stop_raises_naming_the_step_and_keeps_the_finite_checkpoints(tmp_path, digits):
  config = _config(4, checkpoint_keep=2)
  n = digits.num_train
  late = sorted(_used(config, 2, n) - _used(config, 1, n) - _used(config, 0, n))
  assert late, "no example first used in epoch 3"
  data = _poisoned(digits, late[0])
  steps = loop.num_steps_per_epoch(config, n, 1)
  index = [i for i, b in enumerate(loop.epoch_batches(config, 2, n, steps, None)) if late[0] in b][0]
  workdir = str(tmp_path / "stop")
  bad_step = 2 * steps + index + 1
  with pytest.raises(UserError, match=rf"epoch 3, step {bad_step}: non-finite (loss|leaf params/\S+) "
                                      rf".*last checkpoint \(step {2 * steps}\) is kept"):
    train_and_evaluate(config, workdir, dataset=data)
  run = RunDir(workdir)
  assert run.checkpoint_steps() == [steps, 2 * steps]
  kept = [load_solution(workdir, step=s) for s in run.checkpoint_steps()]
  assert all(_leaves_finite((s.params, s.batch_stats)) for s in kept)
  records = _strict_records(run.metrics_path)
  assert [r["epoch"] for r in records] == [1, 2]

def test_skip_step_skips_the_non_finite_steps_and_finishes(tmp_path, digits):
  config = _config(2, nan_policy="skip_step")
  n = digits.num_train
  everywhere = sorted(_used(config, 0, n) & _used(config, 1, n))
  workdir = str(tmp_path / "skip")
  final = train_and_evaluate(config, workdir, dataset=_poisoned(digits, everywhere[0]))
  records = _strict_records(RunDir(workdir).metrics_path)
  assert [r["skipped_steps"] for r in records] == [1, 1]
  assert all(np.isfinite(r["batch_loss"]) for r in records) and final["epoch"] == 2
  sol = load_solution(workdir)
  assert sol.meta["finished"] and _leaves_finite((sol.params, sol.batch_stats))


@pytest.fixture(scope="module")
def clean_runs(tmp_path_factory, digits):
  root = tmp_path_factory.mktemp("clean")
  out = {}
  for policy in ("stop", "skip_step"):
    out[policy] = str(root / policy)
    train_and_evaluate(_config(1, nan_policy=policy), out[policy], dataset=digits)
  return out


def test_skip_step_is_bit_identical_to_the_default_when_nothing_diverges(clean_runs):
  a, b = load_solution(clean_runs["stop"]), load_solution(clean_runs["skip_step"])
  for x, y in zip(jax.tree.leaves((a.params, a.batch_stats)),
                  jax.tree.leaves((b.params, b.batch_stats))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  ra, rb = (_strict_records(RunDir(w).metrics_path)[-1] for w in clean_runs.values())
  assert rb.pop("skipped_steps") == 0 and "skipped_steps" not in ra
  for k in ra:
    if k != "epoch_time_s":
      assert ra[k] == rb[k], k


# Command lines.

def _one_error_line(proc):
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  errors = [l for l in lines if l.startswith("error: ")]
  assert proc.returncode == 2 and len(errors) == 1, proc.stderr
  return errors[0]


def test_train_cli_exits_2_on_divergence_and_on_an_absurd_lr(tmp_path, monkeypatch, capsys):
  workdir = tmp_path / "div"
  proc = subprocess.run(TRAIN + QUICK + [
      "--config.optim.lr=10", "--config.optim.weight_decay=0.5", "--config.optim.warmup_epochs=1",
      "--config.num_epochs=3", "--config.checkpoint_every_epochs=1", "--config.eval_every_epochs=3",
      "--workdir", str(workdir)],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  line = _one_error_line(proc)
  assert "training diverged at epoch 2" in line and "nan_policy=stop" in line, line
  sol = load_solution(str(workdir))
  assert sol.epoch == 1 and _leaves_finite((sol.params, sol.batch_stats))
  assert [r["epoch"] for r in _strict_records(workdir / "metrics.jsonl")] == [1]
  # The command (in process: the same main): refused before anything is written.
  monkeypatch.setenv("SNNJAX_XLA_TUNING", "0")
  capsys.readouterr()
  rc = cli.main(["train.py"] + QUICK + ["--config.optim.lr=100", "--config.optim.warmup_epochs=12",
                                        "--workdir", str(tmp_path / "lr100")])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and err == ["error: config.optim.lr must be a finite number in (0, 10], got 100.0"]
  assert not (tmp_path / "lr100").exists()


def test_measure_cli_refuses_a_nan_checkpoint(tmp_path, clean_runs):
  workdir = str(tmp_path / "run")
  shutil.copytree(clean_runs["stop"], workdir)
  config = config_io.config_from_dict(RunDir(workdir).config_dict())
  with CheckpointStore(os.path.join(workdir, "checkpoints")) as store:
    last = store.latest_step()
    meta = store.restore_meta(last)
    target = abstract_train_state(config, meta["input_shape"], meta["num_classes"])
    state, meta = store.restore(last, target.to_dict())
  state["params"] = jax.tree.map(lambda p: np.full_like(np.asarray(p), np.nan), state["params"])
  shutil.rmtree(os.path.join(workdir, "checkpoints", str(last)))  # the same step, NaN params
  with CheckpointStore(os.path.join(workdir, "checkpoints")) as store:
    store.save(last, jax.device_get(state), meta)
  proc = subprocess.run(MEASURE + ["--workdir", workdir, "--quiet", "--out", str(tmp_path / "m")],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  line = _one_error_line(proc)
  assert "params of" in line and "are not finite (leaf" in line, line
  assert "nan" not in proc.stdout.lower()
  assert not (tmp_path / "m.md").exists()
