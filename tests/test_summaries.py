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
