"""Dynamic sparse training runs (snnjax.train.dst): rigl / set start as scratch, keep their counts,
resume to the same mask, and rigl95.py:quick trains end to end."""

import os
import shutil

import jax
import numpy as np
import pytest

from snnjax import models, sparsity
from snnjax.data import load_dataset
from snnjax.train import config_io, config_presets, load_solution, starting_point, train_and_evaluate
from snnjax.train.checkpoint import CheckpointStore
from snnjax.train.loop import create_train_state
from snnjax.train.optim import make_optimizer
from snnjax.train.run_dir import RunDir
from tests._train_configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dst(regime, epochs=3, update_every=5, **dst):
  config = tiny(regime, dataset="digits", model="mlp", epochs=epochs, sparsity=0.9)
  config.mask.source = "random"
  config_presets.dst_block(config)
  config.dst.update_every = update_every
  config.dst.update(dst)
  config.checkpoint_keep = 10
  return config


def _leaves_equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _active_counts(mask):
  return {k: v[0] for k, v in sparsity.layer_densities(mask).items()}


@pytest.mark.parametrize("regime", ["rigl", "set"])
def test_dst_starts_from_scratch_init_and_mask(regime):
  scratch, dst = _dst("scratch"), _dst(regime)
  del scratch.dst
  dataset = load_dataset(scratch.dataset)
  model = models.create_model("mlp", dataset.num_classes)
  a = starting_point.initial_variables(scratch, model, dataset.input_shape, load_solution)
  b = starting_point.initial_variables(dst, model, dataset.input_shape, load_solution)
  assert _leaves_equal(a[0], b[0]) and _leaves_equal(a[2], b[2])
  assert jax.random.key_data(starting_point.augment_key(scratch)).tolist() == (
      jax.random.key_data(starting_point.augment_key(dst)).tolist())


def test_rigl_without_drops_is_exactly_the_scratch_run(tmp_path):
  """drop_fraction 0: every update keeps the mask, so the run is bit for bit Sol-S (the same init,
  data order and plain step)."""
  scratch = _dst("scratch", epochs=2)
  del scratch.dst
  a = train_and_evaluate(scratch, str(tmp_path / "scratch"))
  b = train_and_evaluate(_dst("rigl", epochs=2, drop_fraction=0.0), str(tmp_path / "rigl"))
  assert a["test_loss"] == b["test_loss"] and b["mask_updates"] > 0
  sa, sb = load_solution(str(tmp_path / "scratch")), load_solution(str(tmp_path / "rigl"))
  assert _leaves_equal(sa.params, sb.params) and _leaves_equal(sa.mask, sb.mask)


@pytest.mark.parametrize("regime", ["rigl", "set"])
def test_resume_gives_the_same_final_mask_and_params(tmp_path, regime):
  config = _dst(regime)
  straight = train_and_evaluate(config, str(tmp_path / "straight"))
  interrupted = tmp_path / "interrupted"
  shutil.copytree(tmp_path / "straight", interrupted)
  # As if killed after epoch 1: later checkpoints gone (metrics.jsonl is cut back on resume).
  ckpts = interrupted / "checkpoints"
  steps = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
  for step in steps[1:]:
    shutil.rmtree(ckpts / str(step))
  assert not RunDir(str(interrupted)).finished
  resumed = train_and_evaluate(config, str(interrupted))
  assert resumed["mask_change"] == straight["mask_change"]
  a, b = load_solution(str(tmp_path / "straight")), load_solution(str(interrupted))
  assert _leaves_equal(a.mask, b.mask) and _leaves_equal(a.params, b.params)
  # Counts exact, the mask moved, pruned weights and their momentum exactly 0.
  init = load_solution(os.path.join(str(tmp_path / "straight"), "init"))
  assert _active_counts(a.mask) == _active_counts(init.mask)
  assert not _leaves_equal(a.mask, init.mask)
  run = RunDir(str(interrupted))
  dataset = load_dataset(config.dataset)
  tx, _ = make_optimizer(config.optim, 22)
  target, _ = create_train_state(config, models.create_model("mlp", 10), dataset.input_shape, tx)
  with CheckpointStore(run.checkpoints_dir) as store:
    state, _ = store.restore(store.latest_step(), target.to_dict())
  momentum = state["opt_state"]
  for p, m in zip(jax.tree.leaves(a.params), jax.tree.leaves(a.mask)):
    assert not np.any(np.asarray(p)[~np.asarray(m)])
  moms = [x for x in jax.tree.leaves(momentum) if np.ndim(x) >= 2]
  kernels = [m for m in jax.tree.leaves(a.mask) if np.ndim(m) >= 2]
  assert len(moms) == len(kernels)
  for mom, m in zip(moms, kernels):
    assert not np.any(np.asarray(mom)[~np.asarray(m)])
  records = run.epoch_records()
  assert [r["mask_updates"] for r in records] == [4, 8, 9]  # 22 steps/epoch, end 49, every 5


def test_rigl95_quick_trains_end_to_end(tmp_path):
  config = config_io.load_config_spec(os.path.join(REPO, "configs", "rigl95.py:quick"))
  config.dense_workdir = str(tmp_path / "dense")
  config.dense_config = os.path.join(REPO, "configs", "dense.py:quick")
  config.progress = False
  final = train_and_evaluate(config, str(tmp_path / "rigl"))
  assert final["mask_updates"] == 9  # 264 steps, end 198, every 20
  assert final["test_accuracy"] > 0.8
  assert set(final["mask_change"]) == {"stem/kernel", "conv1/kernel", "conv2/kernel"}
  assert all(0.0 < v <= 1.0 for v in final["mask_change"].values())
  sol, init = load_solution(str(tmp_path / "rigl")), load_solution(str(tmp_path / "rigl" / "init"))
  assert _active_counts(sol.mask) == _active_counts(init.mask)
  assert sparsity.sparsity_of(sol.mask) == pytest.approx(0.95, abs=1e-3)
