"""The run loop: learning, regimes and their masks, resume, finished runs, mismatched work dirs."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from snnjax import sparsity
from snnjax.errors import UserError
from snnjax.train import load_solution, train_and_evaluate
from tests._train_configs import tiny


def _leaves_equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("model,dataset,epochs,kwargs,min_acc", [
    ("mlp", "mnist1d", 8, {}, 0.35),
    ("cnn", "digits", 6, {}, 0.8),
    ("resnet20", "digits", 4, {"shortcut": "A"}, 0.6),
    ("resnet20", "digits", 4, {"shortcut": "B", "width": 0.5}, 0.6),
])
def test_models_learn_embedded_datasets(tmp_path, model, dataset, epochs, kwargs, min_acc):
  config = tiny(model=model, dataset=dataset, epochs=epochs, **kwargs)
  config.checkpoint_every_epochs = epochs
  record = train_and_evaluate(config, str(tmp_path / "run"))
  assert record["test_accuracy"] >= min_acc, record  # chance is 0.1


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("dense") / "run")
  record = train_and_evaluate(tiny(model="cnn", dataset="digits", epochs=2), workdir)
  return workdir, record


def test_dense_run_layout_and_solution(dense_run):
  workdir, record = dense_run
  assert {"checkpoints", "config.json", "init", "metrics.jsonl"} <= set(os.listdir(workdir))
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["epoch"] for r in lines] == [1, 2]
  sol = load_solution(workdir)
  assert sol.step == lines[-1]["step"] and sol.epoch == 2
  assert sol.logits_fn(sol.params, np.zeros((3, 8, 8, 1), np.float32)).shape == (3, 10)
  init = load_solution(os.path.join(workdir, "init"))
  assert init.step == 0 and not _leaves_equal(init.params, sol.params)


def test_finished_run_is_not_retrained(dense_run):
  workdir, record = dense_run
  before = os.path.getmtime(os.path.join(workdir, "metrics.jsonl"))
  again = train_and_evaluate(tiny(model="cnn", dataset="digits", epochs=2), workdir)
  assert again["test_accuracy"] == record["test_accuracy"]
  assert os.path.getmtime(os.path.join(workdir, "metrics.jsonl")) == before


def test_workdir_with_another_config_is_refused(dense_run):
  workdir, _ = dense_run
  with pytest.raises(UserError, match="different config"):
    train_and_evaluate(tiny(model="cnn", dataset="digits", epochs=3), workdir)


def test_sparse_regimes_share_the_pruning_mask(dense_run, tmp_path):
  dense_dir, _ = dense_run
  dense = load_solution(dense_dir)
  runs = {}
  for regime in ("finetune", "scratch", "lottery"):
    config = tiny(regime, model="cnn", dataset="digits", epochs=1, sparsity=0.9)
    config.dense_workdir = dense_dir
    train_and_evaluate(config, str(tmp_path / regime))
    runs[regime] = (load_solution(str(tmp_path / regime / "init")), load_solution(str(tmp_path / regime)))
  prunable = sparsity.prunable(dense.params)
  expected = sparsity.magnitude_mask(dense.params, 0.9, prunable_tree=prunable)
  for regime, (init, sol) in runs.items():
    assert _leaves_equal(init.mask, expected), regime
    assert _leaves_equal(sol.mask, expected), regime
    # Pruned weights are exactly zero at init and at the end.
    for p, m in zip(jax.tree.leaves(sol.params), jax.tree.leaves(sol.mask)):
      assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
    assert sparsity.density(sol.mask, prunable) == pytest.approx(0.1, abs=1e-3)
  masked_dense = sparsity.apply_mask(dense.params, expected)
  assert _leaves_equal(runs["finetune"][0].params, masked_dense)  # Init-F = pruned Sol-D
  dense_init = load_solution(os.path.join(dense_dir, "init"))
  assert _leaves_equal(runs["lottery"][0].params, sparsity.apply_mask(dense_init.params, expected))
  assert not _leaves_equal(runs["scratch"][0].params, runs["lottery"][0].params)  # fresh Init-S


def test_scratch_without_dense_run_is_a_clear_error(tmp_path):
  config = tiny("scratch", sparsity=0.9)
  config.dense_workdir = str(tmp_path / "missing")
  with pytest.raises(UserError, match="no finished Sol-D run"):
    train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_scratch_with_erk_and_random_masks_hit_the_sparsity(tmp_path):
  for source in ("erk", "random"):
    config = tiny("scratch", model="cnn", dataset="digits", epochs=1, sparsity=0.8)
    config.mask.source = source
    train_and_evaluate(config, str(tmp_path / source))
    sol = load_solution(str(tmp_path / source))
    assert sparsity.density(sol.mask, sparsity.prunable(sol.params)) == pytest.approx(0.2, abs=2e-3)


def test_label_noise_metrics_are_recorded(tmp_path):
  config = tiny(epochs=1)
  config.dataset.label_noise = 0.3
  config.dataset.noise_kind = "flip"
  record = train_and_evaluate(config, str(tmp_path / "noisy"))
  parts = record["train_noisy_correct"] + record["train_noisy_memorized"] + record["train_noisy_other"]
  assert parts == pytest.approx(1.0)
  assert record["train_num_noisy"] == round(0.3 * 4000)  # mnist1d: 4000 training examples


def test_finished_sparse_run_needs_no_dense_run(dense_run, tmp_path):
  dense_copy = tmp_path / "dense"
  shutil.copytree(dense_run[0], dense_copy)
  config = tiny("finetune", model="cnn", dataset="digits", epochs=1, sparsity=0.9)
  config.dense_workdir = str(dense_copy)
  record = train_and_evaluate(config, str(tmp_path / "ft"))
  shutil.rmtree(dense_copy)  # prerequisites are not consulted for a finished run
  again = train_and_evaluate(config, str(tmp_path / "ft"))
  assert again["test_accuracy"] == record["test_accuracy"] and again["step"] == record["step"]


def test_dense_run_of_another_architecture_is_refused_before_writing(dense_run, tmp_path):
  dense_dir, _ = dense_run
  config = tiny("finetune", model="cnn", dataset="digits", epochs=1, sparsity=0.9, width=0.5)
  config.dense_workdir = dense_dir
  with pytest.raises(UserError, match="another architecture"):
    train_and_evaluate(config, str(tmp_path / "ft"))
  assert not os.path.exists(tmp_path / "ft")


def test_resume_after_the_best_checkpoint_was_saved(tmp_path):
  # A run killed between the best-on-test save and the periodic checkpoint of the same step
  # recomputes that epoch on resume and must not fail on the step already saved.
  config = tiny(epochs=2)
  config.select_best_on_test = True
  workdir = tmp_path / "run"
  record = train_and_evaluate(config, str(workdir))
  ckpts = workdir / "checkpoints"
  last = max(int(d) for d in os.listdir(ckpts) if d.isdigit())
  assert os.listdir(workdir / "best_on_test")
  shutil.rmtree(ckpts / str(last))
  again = train_and_evaluate(config, str(workdir))
  assert again["test_accuracy"] == record["test_accuracy"]


@pytest.mark.parametrize("field,value", [("seed", -1), ("train_eval_size", -5),
                                         ("fisher_reg.weight", -0.1)])
def test_out_of_range_fields_are_refused_before_writing(tmp_path, field, value):
  config = tiny(epochs=1)
  section, _, name = field.rpartition(".")
  setattr(config[section] if section else config, name, value)
  with pytest.raises(UserError, match=field.replace(".", r"\.")):
    train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_solutions_of_one_architecture_give_equal_function_structures(dense_run):
  # The estimators key their compilations on these structures (BatchNorm statistics are leaves).
  sol, init = load_solution(dense_run[0]), load_solution(os.path.join(dense_run[0], "init"))
  for a, b in [(sol.logits_fn, init.logits_fn), (sol.loss_fn, init.loss_fn)]:
    assert jax.tree.structure(a) == jax.tree.structure(b)
  assert jax.tree.structure(sol.logits_fn) != jax.tree.structure(sol.loss_fn)
  x = np.zeros((2, 8, 8, 1), np.float32)
  assert not np.allclose(sol.logits_fn(sol.params, x), init.logits_fn(sol.params, x))


def test_a_lost_epoch_record_is_restored_from_its_checkpoint(tmp_path, capsys):
  """An unfinished run whose metrics.jsonl lost its last line (``truncate -s -40``): the rerun puts
  the record back from the checkpoint's meta and says so (issue 23)."""
  config = tiny(epochs=3)
  whole = tmp_path / "whole"
  train_and_evaluate(config, str(whole))

  def stop(epoch, state, context):
    if epoch == 3:
      raise KeyboardInterrupt
  run = tmp_path / "run"
  with pytest.raises(KeyboardInterrupt):
    train_and_evaluate(config, str(run), epoch_hook=stop)
  metrics = run / "metrics.jsonl"
  os.truncate(metrics, os.path.getsize(metrics) - 40)
  capsys.readouterr()
  train_and_evaluate(config, str(run))
  assert "lacked the records of epochs [2]; restored" in capsys.readouterr().err
  drop = lambda r: {k: v for k, v in r.items() if k != "epoch_time_s"}
  read = lambda p: [drop(json.loads(l)) for l in p.read_text().splitlines()]
  assert read(metrics) == read(whole / "metrics.jsonl")
