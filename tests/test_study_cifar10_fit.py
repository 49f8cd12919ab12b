"""The converged real-image preset (cifar10_fit): its plan, the 16x16 pixels, a smoke run of every
stage at its architecture and resolution on real CIFAR-10 pixels, and its budget sweep."""

import json
import os

import numpy as np
import pytest

from _study_configs import CIFAR10_NPZ, ROOT, small_cifar10_npz, tiny_cifar10_cpu_study
from snnjax import data as data_lib
from snnjax.data import datasets as datasets_lib
from snnjax.studies import dry_run, findings, study
from snnjax.train import config_io, config_presets

needs_cifar10 = pytest.mark.skipif(
    not os.path.isfile(CIFAR10_NPZ),
    reason=f"the real CIFAR-10 subset is not at {CIFAR10_NPZ} (see ../shared/data/README)")


def _preset(name):
  return config_io.load_config_spec(os.path.join(ROOT, "configs", "study.py") + f":{name}")


def test_preset_validates_and_dry_run_lists_every_run_with_its_epochs(tmp_path):
  config = _preset("cifar10_fit")
  study.validate(config)
  assert tuple(config.seeds) == (0, 1, 2) and len(config.sparsities) == 3
  assert tuple(config.label_noise.seeds) == (0, 1)
  assert config.sol_r and config.departures
  plan = dry_run.plan_study(config, str(tmp_path / "study"), log=lambda m: None)
  runs = {r["name"]: r for r in plan["runs"]}
  expected = {f"clean-dense-seed{s}" for s in (0, 1, 2)} | {"longtail-dense-seed0"}
  expected |= {f"noisy-dense-seed{s}" for s in (0, 1)}
  for seed in (0, 1, 2):
    for sp in config.sparsities:
      expected |= {f"clean-{r}-{sp:.2f}-seed{seed}" for r in ("finetune", "scratch", "rigl")}
  for seed in (0, 1):
    expected |= {f"noisy-{r}-0.95-seed{seed}" for r in ("finetune", "scratch", "rigl")}
  expected |= {f"longtail-{r}-0.95-seed0" for r in ("finetune", "scratch", "rigl")}
  expected |= {f"gap-{v}-0.95-seed0" for v in ("fisher_penalty", "low_first", "high_first")}
  assert set(runs) == expected
  clean = {r["epochs"] for n, r in runs.items() if not n.startswith("noisy")}
  noisy = {r["epochs"] for n, r in runs.items() if n.startswith("noisy")}
  # Sol-D, Sol-F, Sol-S and Sol-R: one budget.
  assert clean == {config_presets.FIT_EPOCHS["clean"]}
  assert noisy == {config_presets.FIT_EPOCHS["noisy"]}
  arch, = plan["architectures"]
  assert "resnet20" in arch and "width=1.0" in arch and "16x16" in arch
  for stage in ("table", "sanity", "per_layer", "fisher_trend", "label_noise", "disagreement",
                "interpolation", "closing_gap"):
    assert plan["stages"][stage] > 0, stage
  assert not os.path.exists(tmp_path / "study"), "a dry run writes nothing"


def test_training_preset_is_the_pilots_choice():
  for regime in ("dense", "finetune", "scratch", "rigl"):
    spec = "dense.py" if regime == "dense" else f"{regime}95.py"
    c = config_io.load_config_spec(os.path.join(ROOT, "configs", spec) + ":cifar10_fit")
    config_io.validate_config(c)
    assert (c.dataset.downsample, c.dataset.train_size, c.dataset.augment) == (2, 5000, False)
    assert (c.model.name, c.model.kwargs.width) == ("resnet20", 1.0)
    assert (c.optim.schedule, c.optim.lr) == ("linear", 0.1)
    assert c.num_epochs == config_presets.FIT_EPOCHS["clean"]
    assert c.train_eval_size == 0     # the plateau criterion reads the whole train subset


def test_sixteen_pixels_are_the_exact_2x2_mean():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
  pooled = datasets_lib.average_pool(x, 2)
  assert pooled.shape == (3, 16, 16, 3) and pooled.dtype == np.float32
  want = (x[:, 0::2, 0::2].astype(np.int64) + x[:, 1::2, 0::2] + x[:, 0::2, 1::2]
          + x[:, 1::2, 1::2]) / 4.0
  np.testing.assert_array_equal(pooled, want.astype(np.float32))  # exact, not close
  with pytest.raises(Exception, match="does not divide"):
    datasets_lib.average_pool(x[:, :31, :31], 2)


@needs_cifar10
def test_sixteen_pixel_dataset_pools_the_real_images_before_normalizing(tmp_path):
  npz = small_cifar10_npz(str(tmp_path / "small.npz"), num_train=200, num_test=50)
  full = data_lib.load_dataset({"name": "cifar10", "source": "npz", "npz_path": npz})
  half = data_lib.load_dataset({"name": "cifar10", "source": "npz", "npz_path": npz,
                                "downsample": 2})
  assert half.x_train.shape == (200, 16, 16, 3) and half.x_test.shape == (50, 16, 16, 3)
  raw = full.x_train * full.std + full.mean          # back to raw pixel units
  pooled = raw.reshape(200, 16, 2, 16, 2, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(half.x_train * half.std + half.mean, pooled, atol=2e-3)
  np.testing.assert_array_equal(half.y_train, full.y_train)
  with pytest.raises(Exception, match="downsample"):
    data_lib.load_dataset({"name": "mnist1d", "downsample": 2})


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
  if not os.path.isfile(CIFAR10_NPZ):
    pytest.skip(f"the real CIFAR-10 subset is not at {CIFAR10_NPZ}")
  root = tmp_path_factory.mktemp("cifar10_fit")
  config = tiny_cifar10_cpu_study(small_cifar10_npz(str(root / "cifar10-small.npz")),
                                  preset="cifar10_fit")
  workdir = str(root / "study")
  results = study.run_study(config, workdir)
  return config, workdir, results


FIGURES = ("table.png", "fisher_trend.png", "label_noise.png", "disagreement.png",
           "interpolation.png", "interpolation_cosines.png", "closing_gap.png",
           "dynamic_sparsity.png")


@needs_cifar10
def test_real_data_smoke_run_produces_every_artifact(smoke_study):
  config, workdir, results = smoke_study
  report_dir = os.path.join(workdir, "report")
  for name in ("report.md", "results.json") + FIGURES:
    assert os.path.getsize(os.path.join(report_dir, name)) > 0, name
  text = open(os.path.join(report_dir, "report.md")).read()
  for section in ("## Departures from the study's protocol", "## Findings", "## The table",
                  "## Regimes", "### Did each run stop moving?", "## Sanity check",
                  "## Fisher trend", "## Label noise", "## Disagreement", "## Interpolation",
                  "## Closing the gap"):
    assert section in text, section
  assert os.path.abspath(workdir) not in text, "the report names no absolute path"
  stored = json.load(open(os.path.join(report_dir, "results.json")))
  assert stored["num_classes"] == 10
  rows = stored["table"]["rows"]
  assert {(r["regime"], r["sparsity"]) for r in rows} == {
      ("dense", 0.0), ("finetune", 0.95), ("scratch", 0.95), ("rigl", 0.95)}
  assert {f["status"] for f in stored["findings"]} <= set(findings.STATUSES)
  # Every trained run has a plateau verdict; two-epoch runs cannot have plateaued: flagged.
  verdicts = stored["regimes"]["plateau"]
  assert {v["run"] for v in verdicts} >= {"clean-dense-seed0", "clean-scratch-0.95-seed1",
                                          "noisy-scratch-0.95-seed0"}
  plateau_row = next(f for f in stored["findings"] if f["name"] == "plateau")
  assert plateau_row["status"] in ("reproduced", "not reproduced")
  assert all(v["num_epochs"] == 2 for v in verdicts)
  # The runs really are 16x16 ResNet-20s.
  from snnjax.train.run_dir import RunDir  # pylint: disable=import-outside-toplevel
  run = RunDir(os.path.join(workdir, "runs", next(
      d for d in os.listdir(os.path.join(workdir, "runs")) if d.startswith("clean-dense-seed0"))))
  assert run.latest_meta()["input_shape"] == [16, 16, 3]


def test_budget_sweep_spans_half_to_twice_the_sparse_budget(tmp_path):
  from snnjax.studies import cache as cache_lib  # pylint: disable=import-outside-toplevel
  cache = cache_lib.StageCache(str(tmp_path))
  main = {s.name: r for s, r in study.resolve(_preset("cifar10_fit"), cache).items()}
  sweep = _preset("cifar10_fit_budget")
  study.validate(sweep)
  assert sweep.report_dir != "report" and tuple(sweep.seeds) == (0, 1, 2)
  assert sweep.sparse_epochs == config_presets.FIT_EPOCHS["clean"]
  runs = {s.name: r for s, r in study.resolve(sweep, cache).items()}
  assert all(runs[n].workdir == main[n].workdir for n in runs)   # 1x: the study's own runs
  for factor in (0.5, 2.0):
    sweep.sparse_epochs = int(factor * config_presets.FIT_EPOCHS["clean"])
    other = {s.name: r for s, r in study.resolve(sweep, cache).items()}
    assert other["clean-dense-seed1"].workdir == main["clean-dense-seed1"].workdir
    c = other["clean-scratch-0.95-seed1"].config
    assert c.num_epochs == sweep.sparse_epochs and c.optim.schedule == "linear"


def test_explanations_preset_shares_the_study_runs_and_plans_each_variant_once(tmp_path):
  from snnjax.studies import cache as cache_lib  # pylint: disable=import-outside-toplevel
  config = _preset("cifar10_fit_explain")
  study.validate(config)
  assert tuple(config.seeds) == (0, 1) and tuple(config.sparsities) == (0.95,)
  assert not config.sol_r and config.report_dir == "report"
  for stage in ("gradient_flow", "lottery", "masks_at_init", "explanations"):
    assert config[stage].enabled, stage
  for stage in ("fisher_trend", "label_noise", "memorization", "disagreement", "interpolation",
                "sanity", "per_layer", "closing_gap", "dynamic_sparsity"):
    assert not config[stage].enabled, stage
  # Its Sol-D, Sol-F and Sol-S are the converged study's runs (same identities).
  cache = cache_lib.StageCache(str(tmp_path))
  main = {s.name: r.workdir for s, r in study.resolve(_preset("cifar10_fit"), cache).items()}
  mine = {s.name: r.workdir for s, r in study.resolve(config, cache).items()}
  assert set(mine) == {f"clean-{r}-seed{s}" for r in ("dense", "finetune-0.95", "scratch-0.95")
                       for s in (0, 1)}
  assert all(mine[n] == main[n] for n in mine)
  plan = dry_run.plan_study(config, str(tmp_path / "study"), log=lambda m: None)
  names = [r["name"] for r in plan["runs"]]
  workdirs = [r["workdir"] for r in plan["runs"]]
  assert len(set(workdirs)) == len(workdirs), "a run two stages share is planned once"
  per_seed = {n for n in names if n.endswith("seed0")}
  # 3 table runs, the sparse-aware Sol-S, 4 one-shot / rewound tickets and copies, 2 IMP rounds,
  # 3 mask sources and 4 shuffles.
  assert len(per_seed) == 3 + 1 + 4 + 2 + 7 and len(names) == 2 * len(per_seed)
  assert plan["stages"]["lottery"] > 0 and plan["stages"]["table"] > 0
