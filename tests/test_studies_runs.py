"""Tests of the run plan: which runs a study trains, their configs and dependencies."""

import os

import pytest

from snnjax.errors import UserError
from snnjax.studies import cache as cache_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies import study as study_lib
from snnjax.train import config_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _study():
  return config_io.load_config_spec(os.path.join(ROOT, "configs", "study.py") + ":quick")


def test_quick_plan_has_every_role():
  specs = study_lib.plan(_study())
  names = {s.name for s in specs}
  assert "clean-dense-seed0" in names
  for sp in ("0.90", "0.94", "0.96"):
    assert f"clean-finetune-{sp}-seed0" in names and f"clean-scratch-{sp}-seed0" in names
  assert {"noisy-dense-seed0", "noisy-finetune-0.95-seed0", "noisy-scratch-0.95-seed0",
          "longtail-dense-seed0", "longtail-finetune-0.96-seed0",
          "longtail-scratch-0.96-seed0"} <= names
  # Sol-R (quick: config.sol_r) beside every Sol-S of the comparisons; none in the others' plans
  assert {"clean-rigl-0.90-seed0", "clean-rigl-0.94-seed0", "clean-rigl-0.96-seed0",
          "noisy-rigl-0.95-seed0", "longtail-rigl-0.96-seed0"} <= names
  assert len(specs) == 18
  c = _study()
  c.sol_r = False
  assert len(study_lib.plan(c)) == 13


def test_seeds_multiply_runs():
  c = _study()
  c.seeds = (0, 1)
  assert len(study_lib.plan(c)) == 36


def test_training_configs_depend_on_their_dense_run(tmp_path):
  c = _study()
  cache = cache_lib.StageCache(str(tmp_path))
  runs = study_lib.resolve(c, cache)
  by = {s.name: r for s, r in runs.items()}
  ft, sc = by["clean-finetune-0.90-seed0"], by["clean-scratch-0.90-seed0"]
  assert ft.config.dense_workdir == sc.config.dense_workdir == by["clean-dense-seed0"].workdir
  assert sc.config.mask.source == "prune_dense"
  noisy = by["noisy-scratch-0.95-seed0"]
  assert noisy.config.dataset.label_noise == 0.3 and noisy.config.dataset.noise_kind == "uniform"
  assert noisy.config.dense_workdir == by["noisy-dense-seed0"].workdir
  assert by["longtail-dense-seed0"].config.dataset.imbalance_ratio == 10.0
  # trend runs keep a checkpoint every k epochs; the others keep their preset's
  assert ft.config.checkpoint_every_epochs == c.fisher_trend.every_epochs
  assert by["clean-finetune-0.94-seed0"].config.checkpoint_every_epochs != 2 or \
      0.94 in c.fisher_trend.sparsities
  # a sparse run's hash follows its Sol-D's *hash*, not the Sol-D work dir's path
  spec = next(s for s in runs if s.name == "clean-scratch-0.90-seed0")
  dense = by["clean-dense-seed0"]
  moved = study_lib.training_config(c, spec, "/elsewhere/" + os.path.basename(dense.workdir))
  assert cache_lib.run_hash(moved, dense_hash=dense.hash) == sc.hash
  assert cache_lib.run_hash(moved, dense_hash="0" * 12) != sc.hash
  # a change to Sol-D (only) changes every run that prunes it
  c.train.overrides = {"num_epochs": 3}
  changed = {s.name: r for s, r in study_lib.resolve(c, cache).items()}
  assert changed["clean-dense-seed0"].hash != dense.hash
  assert changed["clean-scratch-0.90-seed0"].hash != sc.hash


def test_unknown_override_field_raises():
  c = _study()
  c.train.overrides = {"optim": {"learning_rate": 0.1}}
  with pytest.raises(UserError, match="optim.learning_rate"):
    runs_lib.training_config(c, runs_lib.RunSpec("clean", "dense", 0.0, 0), "")


def test_model_kwargs_may_be_added():
  c = _study()
  c.train.overrides = {"model": {"kwargs": {"channels": (8, 8), "strides": (1, 2)}}}
  cfg = runs_lib.training_config(c, runs_lib.RunSpec("clean", "dense", 0.0, 0), "")
  assert tuple(cfg.model.kwargs.channels) == (8, 8)


@pytest.mark.parametrize("preset,clean,noisy", [
    ("cifar10", ("cifar10", "resnet32"), ("cifar10", "resnet32")),
    ("paper", ("cifar100", "wide_resnet32"), ("cifar10", "resnet32"))])
def test_accelerator_presets_plan_the_studys_setups(tmp_path, preset, clean, noisy):
  c = config_io.load_config_spec(os.path.join(ROOT, "configs", "study.py") + f":{preset}")
  runs = study_lib.resolve(c, cache_lib.StageCache(str(tmp_path)))
  for spec, run in runs.items():
    want = noisy if spec.family == "noisy" else clean
    assert (run.config.dataset.name, run.config.model.name) == want, spec.name
  assert c.measure.hessian.num_examples == 1024 and c.measure.fisher.num_samples == 5
  if preset == "paper":
    names = {s.name for s in runs}
    assert "clean-scratch-0.97-seed0" in names  # the study's disagreement sparsity


def test_turning_the_fisher_trend_off_keeps_every_run(tmp_path):
  c = _study()
  cache = cache_lib.StageCache(str(tmp_path))
  on = {s.name: r.hash for s, r in study_lib.resolve(c, cache).items()}
  c.fisher_trend.enabled = False
  off = {s.name: r.hash for s, r in study_lib.resolve(c, cache).items()}
  assert off == {name: h for name, h in on.items() if name in off}


def test_sol_r_starts_as_sol_s_and_trains_as_long(tmp_path):
  """Sol-R's training config is Sol-S's (same Sol-D, mask source, seed, epochs, schedule) but for
  the regime and its config.dst block; dynamic_sparsity.update_every overrides its cadence."""
  c = _study()
  c.sparse_epochs = 5
  c.dynamic_sparsity.update_every = 7
  runs = {s.name: r for s, r in study_lib.resolve(c, cache_lib.StageCache(str(tmp_path))).items()}
  sol_s = config_io.config_to_dict(runs["clean-scratch-0.90-seed0"].config)
  sol_r = config_io.config_to_dict(runs["clean-rigl-0.90-seed0"].config)
  assert sol_r.pop("dst")["update_every"] == 7
  assert sol_r.pop("regime") == "rigl" and sol_s.pop("regime") == "scratch"
  assert sol_r == sol_s and sol_s["num_epochs"] == 5
