"""TensorBoard event files (--config.tensorboard=True): read back with TensorBoard's own reader,
they equal metrics.jsonl; the field is not part of any run's identity; absent writer refused."""

import importlib.util
import os
import sys

import pytest

from snnjax.errors import UserError
from snnjax.train import RunDir, config_io, config_presets, summaries, train_and_evaluate
from tests._train_configs import tiny

HAVE_TENSORBOARD = all(importlib.util.find_spec(m) is not None
                       for m in ("tensorboardX", "tensorboard"))


def test_scalars_flatten_the_record():
  record = {"epoch": 2, "step": 44, "lr": 0.1, "test_accuracy": None, "batch_loss": 1.5,
            "mask_change": {"stem/kernel": 0.25, "head/kernel": 0.0}, "mask_updates": 3,
            "finished": True, "note": "x"}
  assert summaries.scalars(record) == {"lr": 0.1, "batch_loss": 1.5, "mask_updates": 3.0,
                                       "mask_change/stem/kernel": 0.25,
                                       "mask_change/head/kernel": 0.0}


def test_tensorboard_is_a_runtime_field():
  config = config_presets.base_config()
  assert config.tensorboard is False and "tensorboard" in config_io.RUNTIME_FIELDS
  d = config_io.config_to_dict(config)
  without = {k: v for k, v in d.items() if k != "tensorboard"}  # a run made before the field
  assert config_io.identity_hash({**d, "tensorboard": True}) == config_io.identity_hash(without)


def test_missing_writer_is_refused_before_writing(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
  config = tiny(epochs=1)
  config.tensorboard = True
  with pytest.raises(UserError, match="needs tensorboardX"):
    train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboardX / tensorboard not installed "
                    "(pip install -e '.[dev]' installs both)")
def test_events_read_back_equal_metrics_jsonl(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
  from snnjax.train import config_presets as presets  # pylint: disable=import-outside-toplevel
  config = tiny("rigl", dataset="digits", model="mlp", epochs=2, sparsity=0.9)
  config.mask.source = "random"
  presets.dst_block(config)
  config.dst.update_every = 5
  config.nan_policy = "skip_step"
  config.tensorboard = True
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)
  assert RunDir(workdir).identity == config_io.identity_hash(
      {**config_io.config_to_dict(config), "tensorboard": False})
  acc = event_accumulator.EventAccumulator(os.path.join(workdir, summaries.EVENTS_DIR))
  acc.Reload()
  records = RunDir(workdir).epoch_records()
  want = {}
  for r in records:
    for tag, value in summaries.scalars(r).items():
      want.setdefault(tag, []).append((r["epoch"], value))
  tags = set(acc.Tags()["scalars"])
  assert tags == set(want)
  for must in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr",
               "skipped_steps", "mask_change_all", "mask_updates"):
    assert must in tags, must
  assert any(t.startswith("mask_change/") for t in tags)
  for tag, points in want.items():
    got = [(e.step, e.value) for e in acc.Scalars(tag)]
    assert [s for s, _ in got] == [s for s, _ in points], tag
    assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-7), tag


def _read_back(workdir):
  """``{tag: [(step, value)]}`` of the run's event folder, read by TensorBoard's own reader."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
  acc = event_accumulator.EventAccumulator(summaries.events_dir(workdir))
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _want(records):
  want = {}
  for tag, value, step in summaries.record_points(records):
    want.setdefault(tag, []).append((step, value))
  return want


def _assert_curves(got, records):
  want = _want(records)
  assert set(got) == set(want)
  for tag, points in want.items():
    assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
    assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6,
                                                     abs=1e-7), tag


@pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboardX / tensorboard not installed")
def test_turned_on_for_a_finished_run_writes_its_curves_once(tmp_path, capsys):
  """A run finished without the field, rerun with it: not retrained, its metrics.jsonl written as
  one event file of fixed name (again: nothing more)."""
  config = tiny(epochs=2)
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)
  assert summaries.event_files(workdir) == []
  config.tensorboard = True
  train_and_evaluate(config, workdir)
  assert "already finished" in capsys.readouterr().err
  assert summaries.event_files(workdir) == [summaries.METRICS_EVENTS]
  _assert_curves(_read_back(workdir), RunDir(workdir).epoch_records())
  train_and_evaluate(config, workdir)
  assert summaries.event_files(workdir) == [summaries.METRICS_EVENTS]
  assert not [n for n in os.listdir(workdir) if n.startswith(".tensorboard-tmp")]


@pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboardX / tensorboard not installed")
def test_turned_on_when_resuming_writes_the_earlier_epochs_too(tmp_path):
  config = tiny(epochs=3)

  def stop(epoch, state, context):
    if epoch == 3:
      raise KeyboardInterrupt
  workdir = str(tmp_path / "run")
  with pytest.raises(KeyboardInterrupt):
    train_and_evaluate(config, workdir, epoch_hook=stop)
  assert summaries.event_files(workdir) == []
  config.tensorboard = True
  train_and_evaluate(config, workdir)
  records = RunDir(workdir).epoch_records()
  assert [r["epoch"] for r in records] == [1, 2, 3]
  _assert_curves(_read_back(workdir), records)
