"""The under-trained laptop preset on real CIFAR-10: its plan, its cost estimate and its budget sweep
(the real-data smoke run of every stage is the converged preset's: tests/test_study_cifar10_fit.py)."""

import os

import pytest

from _study_configs import ROOT
from snnjax.studies import commands, dry_run, study
from snnjax.train import config_io


def _preset(name):
  return config_io.load_config_spec(os.path.join(ROOT, "configs", "study.py") + f":{name}")


def _expected_runs():
  names = {"clean-dense-seed0", "clean-dense-seed1", "noisy-dense-seed0", "longtail-dense-seed0",
           "noisy-finetune-0.95-seed0", "noisy-scratch-0.95-seed0",
           "longtail-finetune-0.95-seed0", "longtail-scratch-0.95-seed0"}
  for seed in (0, 1):
    for sp in ("0.90", "0.95", "0.98"):
      names |= {f"clean-finetune-{sp}-seed{seed}", f"clean-scratch-{sp}-seed{seed}"}
  names |= {f"gap-{v}-0.95-seed0" for v in ("fisher_penalty", "low_first", "high_first")}
  return names


def test_cifar10_cpu_preset_validates_and_plans_every_run(tmp_path):
  config = _preset("cifar10_cpu")
  study.validate(config)
  assert len(config.seeds) >= 2 and max(config.sparsities) >= 0.98
  assert config.departures, "every departure from the protocol is stated"
  plan = dry_run.plan_study(config, str(tmp_path / "study"), log=lambda m: None)
  runs = {r["name"]: r for r in plan["runs"]}
  assert set(runs) == _expected_runs()
  assert not any(r["finished"] for r in runs.values())
  dense = {n: r for n, r in runs.items() if r["regime"] == "dense"}
  sparse = {n: r for n, r in runs.items() if r["regime"] != "dense"}
  assert {r["epochs"] for r in dense.values()} == {8}
  assert {r["epochs"] for r in sparse.values()} == {6}     # Sol-F and Sol-S: the same epochs
  assert all(r["train_s"] > 0 for r in runs.values())
  arch, = plan["architectures"]                           # one architecture, timed once
  assert "resnet20" in arch and "width=0.5" in arch
  assert plan["architectures"][arch]["train_step_s"] > 0
  assert plan["training_s"] == pytest.approx(sum(r["train_s"] for r in runs.values()))
  for stage in ("table", "sanity", "fisher_trend", "label_noise", "disagreement",
                "interpolation", "closing_gap"):
    assert plan["stages"][stage] > 0, stage
  assert plan["total_s"] == pytest.approx(sum(plan["stages"].values()))
  assert not os.path.exists(tmp_path / "study"), "a dry run writes nothing"


def test_dry_run_cli_on_the_full_preset_points_to_the_laptop_preset(tmp_path, capsys):
  rc = commands.study_main(["study.py", "--config", os.path.join(ROOT, "configs", "study.py:cifar10"),
                       "--workdir", str(tmp_path / "s"), "--dry-run"])
  out = capsys.readouterr().out
  assert rc == 0
  assert "clean-dense-seed0" in out and "to train" in out
  assert "hours" in out and "cifar10_cpu" in out and "GPU" in out
  assert not os.path.exists(tmp_path / "s")


def test_budget_sweep_reuses_the_studys_runs_and_rescales_the_sparse_schedule(tmp_path):
  from snnjax.studies import cache as cache_lib  # pylint: disable=import-outside-toplevel
  from snnjax.studies import study as study_lib  # pylint: disable=import-outside-toplevel
  cache = cache_lib.StageCache(str(tmp_path))
  main = study_lib.resolve(_preset("cifar10_cpu"), cache)
  by_name = {s.name: r for s, r in main.items()}
  sweep = _preset("cifar10_cpu_budget")
  study.validate(sweep)
  assert sweep.report_dir != "report"           # the main report is never overwritten
  runs = {s.name: r for s, r in study_lib.resolve(sweep, cache).items()}
  assert set(runs) == {"clean-dense-seed0", "clean-finetune-0.95-seed0",
                       "clean-scratch-0.95-seed0"}
  # Its own budget (6) is the study's: every run is the study's run, trained once.
  assert all(runs[n].workdir == by_name[n].workdir for n in runs)
  sweep.sparse_epochs = 12
  longer = {s.name: r for s, r in study_lib.resolve(sweep, cache).items()}
  assert longer["clean-dense-seed0"].workdir == by_name["clean-dense-seed0"].workdir
  for name in ("clean-finetune-0.95-seed0", "clean-scratch-0.95-seed0"):
    c = longer[name].config
    assert longer[name].workdir != by_name[name].workdir
    assert c.num_epochs == 12 and tuple(c.optim.boundaries_epochs) == (4, 8, 10)  # 2,4,5 of 6


def test_rescale_epochs_keeps_the_schedule_fractions():
  from snnjax.studies import runs as runs_lib  # pylint: disable=import-outside-toplevel
  c = _preset("cifar10_cpu")
  t = config_io.load_config_spec(os.path.join(ROOT, "configs", "scratch95.py") + ":cifar10_cpu")
  assert t.num_epochs == 6 and tuple(t.optim.boundaries_epochs) == (2, 4, 5)
  runs_lib.rescale_epochs(t, 3)
  assert t.num_epochs == 3 and tuple(t.optim.boundaries_epochs) == (1, 2)
  runs_lib.rescale_epochs(t, 1)
  assert t.num_epochs == 1 and tuple(t.optim.boundaries_epochs) == ()
  c.sparse_epochs = -1
  with pytest.raises(Exception, match="sparse_epochs"):
    study.validate(c)
