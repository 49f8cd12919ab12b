"""RunDir (a run's work dir, read in one place), run identity across moves, Solution.predict."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from snnjax import data as data_lib
from snnjax.errors import UserError
from snnjax.train import config_io, evaluate, solution as solution_lib, train_and_evaluate
from snnjax.train.checkpoint import CheckpointStore
from snnjax.train.run_dir import RunDir
from snnjax.train.step import make_predict_fn
from tests._train_configs import tiny


def _dense_config(epochs=2):
  config = tiny(model="cnn", dataset="digits", epochs=epochs)
  config.checkpoint_keep = 3
  return config


def _finetune_config(dense_workdir):
  config = tiny("finetune", model="cnn", dataset="digits", epochs=1, sparsity=0.9)
  config.dense_workdir = str(dense_workdir)
  return config


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                    for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """A trained Sol-D (2 epochs, both checkpoints kept) and a finetune run of it, in one parent dir."""
  root = tmp_path_factory.mktemp("study")
  dense_record = train_and_evaluate(_dense_config(), str(root / "dense"))
  ft_record = train_and_evaluate(_finetune_config(root / "dense"), str(root / "ft"))
  return root, dense_record, ft_record


def test_finished_run(study):
  root, record, _ = study
  run = RunDir(root / "dense")
  assert run.path == str(root / "dense") and os.path.isabs(run.path) and run.exists
  assert config_io.config_to_dict(run.config) == config_io.config_to_dict(_dense_config())
  lines = [json.loads(l) for l in open(root / "dense" / "metrics.jsonl")]
  assert run.records() == lines and run.epoch_records() == lines
  assert [r["epoch"] for r in run.epoch_records()] == [1, 2]
  assert run.finished and run.trained_epochs == 2
  assert run.final_metrics() == {k: v for k, v in record.items() if k != "wall_time_s"}
  assert run.train_seconds == pytest.approx(sum(r["epoch_time_s"] for r in lines))
  steps_per_epoch = lines[0]["step"]
  assert run.checkpoint_steps() == [steps_per_epoch, 2 * steps_per_epoch]


def test_solutions_at_kept_steps_equal_the_checkpoints(study):
  root, _, _ = study
  run = RunDir(root / "dense")
  first = run.checkpoint_steps()[0]
  sol = run.solution(step=first)
  with CheckpointStore(run.checkpoints_dir, read_only=True) as store:
    meta = store.restore_meta(first)
    target = solution_lib.abstract_train_state(run.config, meta["input_shape"], meta["num_classes"])
    state, _ = store.restore(first, target.to_dict())
  assert sol.step == first and sol.epoch == 1
  assert _leaves_equal(sol.params, state["params"]) and _leaves_equal(sol.mask, state["mask"])
  assert _leaves_equal(sol.batch_stats, state["batch_stats"])
  final = run.solution()
  assert final.step == run.checkpoint_steps()[-1] and not _leaves_equal(final.params, sol.params)
  init = run.init_solution()
  assert init.step == 0 and init.epoch == 0
  with pytest.raises(UserError, match="no checkpoint at step"):
    run.solution(step=first + 1)


def test_unfinished_run_and_a_partial_last_line(study, tmp_path):
  root, _, _ = study
  copy = tmp_path / "dense"
  shutil.copytree(root / "dense", copy)
  run = RunDir(copy)
  last = run.checkpoint_steps()[-1]
  shutil.rmtree(copy / "checkpoints" / str(last))
  with open(copy / "metrics.jsonl", "a") as f:
    f.write('{"epoch": 3, "step": 9')  # a write cut short
  assert not run.finished and run.final_metrics() is None and run.trained_epochs == 1
  assert run.checkpoint_steps() == [last // 2]
  assert [r["epoch"] for r in run.records()] == [1, 2]


def test_a_corrupt_line_before_the_last_is_an_error(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "step": 2}\nnot json\n{"epoch": 2}\n')
  with pytest.raises(UserError, match="line 2"):
    RunDir(tmp_path).records()


def test_missing_run(tmp_path):
  run = RunDir(tmp_path / "nothing")
  assert not run.exists and run.config is None and run.records() == []
  assert run.checkpoint_steps() == [] and not run.finished and run.final_metrics() is None
  assert run.trained_epochs == 0 and run.train_seconds == 0.0
  with pytest.raises(UserError, match="no config.json"):
    _ = run.identity


def test_identity_is_the_config_identity(study):
  root, _, _ = study
  dense, ft = RunDir(root / "dense"), RunDir(root / "ft")
  assert dense.identity == config_io.identity_hash(_dense_config())
  assert len(dense.identity) == 12 and int(dense.identity, 16) >= 0
  assert ft.dense_identity == dense.identity
  assert ft.identity == config_io.identity_hash(_finetune_config(root / "dense"))
  # A caller that plans a run before its Sol-D exists names the Sol-D by its identity.
  planned = _finetune_config(root / "not-trained-yet")
  assert config_io.identity_hash(planned, dense_identity=dense.identity) == ft.identity
  assert config_io.run_identity(config_io.config_to_dict(_dense_config()))["dense_workdir"] == ""


def test_copied_study_is_the_same_run(study, tmp_path):
  root, _, ft_record = study
  copy = tmp_path / "copy"
  shutil.copytree(root, copy)
  metrics = (copy / "ft" / "metrics.jsonl").read_bytes()
  config = _finetune_config(copy / "dense")
  again = train_and_evaluate(config, str(copy / "ft"))
  assert again == {k: v for k, v in ft_record.items() if k != "wall_time_s"}
  assert (copy / "ft" / "metrics.jsonl").read_bytes() == metrics  # nothing trained
  assert RunDir(copy / "ft").identity == RunDir(root / "ft").identity
  assert config_io.identity_hash(config) == config_io.identity_hash(_finetune_config(root / "dense"))


def test_moved_study_is_the_same_run(study, tmp_path):
  # Moved: the Sol-D path the stored config names is gone; identity.json still names its Sol-D.
  root, _, ft_record = study
  shutil.copytree(root, tmp_path / "old")
  stored = json.loads((tmp_path / "old" / "ft" / "config.json").read_text())
  stored["dense_workdir"] = str(tmp_path / "old" / "dense")  # as if trained there
  (tmp_path / "old" / "ft" / "config.json").write_text(json.dumps(stored))
  shutil.move(str(tmp_path / "old"), str(tmp_path / "new"))
  metrics = (tmp_path / "new" / "ft" / "metrics.jsonl").read_bytes()
  again = train_and_evaluate(_finetune_config(tmp_path / "new" / "dense"), str(tmp_path / "new" / "ft"))
  assert again["test_accuracy"] == ft_record["test_accuracy"]
  assert (tmp_path / "new" / "ft" / "metrics.jsonl").read_bytes() == metrics
  assert not (tmp_path / "old").exists()


def test_another_sol_d_is_another_run(study, tmp_path):
  root, _, _ = study
  shutil.copytree(root, tmp_path / "copy")
  other = tmp_path / "copy" / "dense"
  os.remove(other / config_io.IDENTITY_FILE)
  d = json.loads((other / "config.json").read_text())
  d["seed"] = 7
  (other / "config.json").write_text(json.dumps(d))
  with pytest.raises(UserError, match="fields dense_workdir"):
    train_and_evaluate(_finetune_config(other), str(tmp_path / "copy" / "ft"))


def test_every_checkpoint_store_is_closed_also_on_errors(tmp_path, monkeypatch):
  opened, closed = [], []
  init, close = CheckpointStore.__init__, CheckpointStore.close

  def counting_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    opened.append(self)

  def counting_close(self):
    closed.append(self)
    close(self)

  monkeypatch.setattr(CheckpointStore, "__init__", counting_init)
  monkeypatch.setattr(CheckpointStore, "close", counting_close)
  config = tiny(epochs=2)
  config.select_best_on_test = True

  def failing_hook(epoch, state, context):
    raise RuntimeError("hook failed")

  with pytest.raises(RuntimeError, match="hook failed"):
    train_and_evaluate(config, str(tmp_path / "run"), epoch_hook=failing_hook)
  assert opened and all(s in closed for s in opened)
  opened.clear()
  closed.clear()
  train_and_evaluate(config, str(tmp_path / "run"))
  assert len(opened) >= 3 and all(s in closed for s in opened)


def test_predict_equals_the_predict_fn_and_compiles_once_per_architecture(study):
  root, _, _ = study
  run = RunDir(root / "dense")
  sol, init = run.solution(), run.init_solution()
  dataset = data_lib.load_dataset(run.config.dataset)
  x, y = dataset.x_test, dataset.y_test
  batch = 128
  assert len(x) > batch and len(x) % batch  # several batches, the last one short
  before = solution_lib.predict_compilations().get(sol.architecture, 0)
  logits = sol.predict(x, batch_size=batch)
  init_logits = init.predict(x, batch_size=batch)
  assert solution_lib.predict_compilations()[sol.architecture] - before == 1
  assert sol.architecture == init.architecture
  predict = make_predict_fn(sol.apply_fn)
  np.testing.assert_array_equal(
      logits, evaluate.predict_logits(predict, sol.params, sol.batch_stats, x, batch))
  np.testing.assert_array_equal(
      init_logits, evaluate.predict_logits(predict, init.params, init.batch_stats, x, batch))
  assert logits.shape == (len(x), 10) and not np.array_equal(logits, init_logits)
  assert sol.evaluate(x, y, batch_size=batch) == evaluate.loss_and_accuracy(logits, y)
  assert sol.evaluate(x, y, batch_size=batch)["accuracy"] == pytest.approx(
      run.final_metrics()["test_accuracy"], abs=0.01)
