"""The vmapped ensemble: K members equal K separately trained runs; --config.ensemble=K."""

import dataclasses
import json
import os

import chex
import jax
import numpy as np
import pytest

from snnjax import data as data_lib
from snnjax.errors import UserError
from snnjax.train import RunDir, cli, config_io, ensemble, load_solution, train_and_evaluate
from tests._train_configs import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = {"rtol": 1e-4, "atol": 1e-5}


def _config(regime="dense", **kw):
  c = tiny(regime, model="cnn", dataset="digits", epochs=2, channels=(8, 8), strides=(1, 2), **kw)
  c.dataset.train_size = 240
  c.batch_size = 40
  c.eval_batch_size = 200
  return c


def _subset(dataset, rows):
  """The dataset restricted to training examples ``rows`` (in that order)."""
  return dataclasses.replace(dataset, x_train=dataset.x_train[rows], y_train=dataset.y_train[rows],
                             y_train_true=dataset.y_train_true[rows], noisy=dataset.noisy[rows],
                             train_source_index=None)


def test_members_on_subsets_equal_separately_trained_runs(tmp_path):
  """Each member (own seed, own subset) ends with the params of a separate run of its seed on
  its subset alone: vmap changes nothing but the program."""
  config = _config()
  config.ensemble_vectorize = True  # the vmapped program (the CPU default for a CNN is looped)
  dataset = data_lib.load_dataset(config.dataset)
  seeds = [3, 7, 11]
  membership = np.zeros((3, dataset.num_train), bool)
  rng = np.random.default_rng(0)
  for k in range(3):
    membership[k, rng.choice(dataset.num_train, 160, replace=False)] = True
  states = ensemble.train_members(config, dataset, seeds=seeds, membership=membership)
  assert ensemble.num_members(states) == 3
  for k, seed in enumerate(seeds):
    c = config.copy_and_resolve_references()
    c.seed = seed
    workdir = str(tmp_path / f"run{seed}")
    train_and_evaluate(c, workdir, dataset=_subset(dataset, np.flatnonzero(membership[k])))
    separate = load_solution(workdir)
    got = ensemble.member(states, k)
    chex.assert_trees_all_close(got.params, separate.params, **TOL)
    chex.assert_trees_all_close(got.batch_stats, separate.batch_stats, **TOL)
    assert int(got.step) == separate.step
  # The members really differ (own init, own subset).
  a, b = (jax.tree.leaves(ensemble.member(states, k).params)[0] for k in (0, 1))
  assert not np.allclose(a, b)
  for vectorize in (True, False):
    predict = ensemble.make_ensemble_predict(separate.model.apply, vectorize=vectorize)
    logits = ensemble.predict_members(predict, states, dataset.x_test, batch_size=128)
    assert logits.shape == (3, len(dataset.x_test), dataset.num_classes)
    np.testing.assert_allclose(logits[2], separate.predict(dataset.x_test), rtol=1e-4, atol=1e-4)


def test_member_batches_are_the_separate_runs_batches():
  subsets = np.tile(np.arange(100, dtype=np.int32), (2, 1))
  got = ensemble.member_batches([4, 9], 3, 32, subsets)
  assert got.shape == (3, 2, 32)
  from snnjax.data import pipeline  # pylint: disable=import-outside-toplevel
  for k, seed in enumerate((4, 9)):
    want = pipeline.batch_indices(pipeline.epoch_permutation(seed, 3, 100), 32)
    np.testing.assert_array_equal(got[:, k], np.stack(want))


def test_unequal_subsets_are_refused():
  membership = np.zeros((2, 10), bool)
  membership[0, :5] = True
  membership[1, :6] = True
  with pytest.raises(UserError, match="same number"):
    ensemble.subset_indices(membership)


def _cli(args, capsys):
  rc = cli.main(["train.py", *args])
  return rc, capsys.readouterr()


def test_cli_ensemble_writes_ordinary_member_runs(tmp_path, capsys):
  """--config.ensemble=2 on a sparse config (random masks, one per member) writes two work
  dirs, each the separate run of its seed: same identity, params within float tolerance (on CPU
  the CNN's members take the looped path: ``ensemble.default_vectorize``)."""
  overrides = ["--config.regime=scratch", "--config.sparsity=0.8", "--config.mask.source=random",
               "--config.num_epochs=2", "--config.dataset.train_size=240",
               "--config.batch_size=40", "--config.optim.boundaries_epochs=(1,)",
               "--config.progress=False", "--config.seed=5"]
  spec = os.path.join(ROOT, "configs", "dense.py") + ":quick"
  workdir = str(tmp_path / "ens")
  rc, out = _cli(["--config", spec, *overrides, "--config.ensemble=2", "--workdir", workdir],
                 capsys)
  assert rc == 0, out.err
  result = json.loads(out.out.strip().splitlines()[-1])
  assert sorted(result["members"]) == ["5", "6"]
  assert json.load(open(os.path.join(workdir, "ensemble.json")))["members"] == ["seed5", "seed6"]
  masks = []
  for seed in (5, 6):
    single = str(tmp_path / f"single{seed}")
    rc, out = _cli(["--config", spec, *overrides[:-1], f"--config.seed={seed}", "--workdir",
                    single], capsys)
    assert rc == 0, out.err
    member_run, single_run = RunDir(os.path.join(workdir, f"seed{seed}")), RunDir(single)
    assert member_run.identity == single_run.identity
    assert "ensemble" not in member_run.config_dict()
    a, b = member_run.solution(), single_run.solution()
    chex.assert_trees_all_equal(a.mask, b.mask)
    chex.assert_trees_all_close(a.params, b.params, **TOL)
    assert member_run.finished
    masks.append(a.mask)
  assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(masks[0]),
                                                      jax.tree.leaves(masks[1])))
  # A finished ensemble trains nothing.
  rc, out = _cli(["--config", spec, *overrides, "--config.ensemble=2", "--workdir", workdir],
                 capsys)
  assert rc == 0 and "finished" in out.err


def test_cli_refuses_a_bad_ensemble_before_writing(tmp_path, capsys):
  spec = os.path.join(ROOT, "configs", "dense.py") + ":quick"
  workdir = str(tmp_path / "never")
  for bad in ("--config.ensemble=0", "--config.ensemble=two"):
    rc, out = _cli(["--config", spec, bad, "--workdir", workdir], capsys)
    assert rc == 2 and out.err.startswith("error: ") and "ensemble" in out.err
  rc, out = _cli(["--config", spec, "--config.ensemble=2", "--config.fisher_reg.weight=0.1",
                  "--workdir", workdir], capsys)
  assert rc == 2 and "Fisher penalty" in out.err
  assert not os.path.exists(workdir)


def test_cli_parses_the_ensemble_fields():
  spec = os.path.join(ROOT, "configs", "dense.py") + ":quick"
  config, _ = cli.parse(["train.py", "--config", spec, "--config.ensemble", "3",
                         "--config.ensemble_vectorize=true", "--config.seed=2"])
  assert (config.ensemble, config.ensemble_vectorize, config.seed) == (3, True, 2)
  assert [int(c.seed) for c in ensemble.member_configs(config)] == [2, 3, 4]
  assert all("ensemble" not in c and "ensemble_vectorize" not in c
             for c in ensemble.member_configs(config))
  config, _ = cli.parse(["train.py", "--config", spec])
  assert "ensemble" not in config and "ensemble_vectorize" not in config


def test_ensemble_is_not_part_of_the_identity_at_one():
  config = _config()
  d = config_io.config_to_dict(config)
  assert config_io.identity_hash({**d, "ensemble": 1}) == config_io.identity_hash(d)
  assert config_io.identity_hash({**d, "ensemble": 4}) != config_io.identity_hash(d)


@pytest.mark.parametrize("regime", ["rigl", "set"])
def test_dst_ensemble_members_are_their_single_runs_masks_included(tmp_path, regime):
  """--config.ensemble=2 with a rigl / set config: each member moves its mask exactly as
  ``train.py --config.seed=s`` does (same masks, same updates, same metrics.jsonl but the
  timing). The looped execution (the CPU default for a CNN) runs the separate run's own
  programs, so the masks are bit for bit the same; an MLP keeps the test fast."""
  from snnjax.train import config_presets  # pylint: disable=import-outside-toplevel
  config = tiny(regime, model="mlp", dataset="digits", epochs=1, sparsity=0.8)
  config.dataset.train_size = 240
  config.batch_size = 40
  config.ensemble_vectorize = False
  config.mask.source = "random"
  config_presets.dst_block(config)
  config.num_epochs = 1
  config.dst.update_every = 2  # 6 steps, end_fraction 0.75: updates after steps 2 and 4
  config.ensemble = 2
  result = ensemble.train_ensemble(config, str(tmp_path / "ens"))
  assert sorted(result["members"]) == ["0", "1"]
  for seed in (1,):  # the second member: its own seed, init, mask and mask-update key
    single = config.copy_and_resolve_references()
    del single.ensemble, single.ensemble_vectorize
    single.seed = seed
    train_and_evaluate(single, str(tmp_path / f"single{seed}"))
    member_run, single_run = RunDir(tmp_path / "ens" / f"seed{seed}"), RunDir(tmp_path /
                                                                              f"single{seed}")
    assert member_run.identity == single_run.identity
    a, b = member_run.solution(), single_run.solution()
    chex.assert_trees_all_equal(a.mask, b.mask)
    chex.assert_trees_all_close(a.params, b.params, **TOL)
    init = member_run.init_solution().mask
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a.mask),
                                                        jax.tree.leaves(init)))
    timing = ("epoch_time_s", "ensemble_size")
    ra = [{k: v for k, v in r.items() if k not in timing} for r in member_run.epoch_records()]
    rb = [{k: v for k, v in r.items() if k not in timing} for r in single_run.epoch_records()]
    assert [sorted(r) for r in ra] == [sorted(r) for r in rb]
    for x, y in zip(ra, rb):  # the mask fields exactly; the batch means are summed differently
      assert {k: x[k] for k in x if k.startswith("mask")} == {k: y[k] for k in y
                                                               if k.startswith("mask")}
      for k in ("batch_loss", "test_loss", "train_accuracy"):
        assert x[k] == pytest.approx(y[k], rel=1e-5)
    assert ra[-1]["mask_updates"] == 2 and ra[-1]["mask_change_all"] > 0
