"""Issue 23's bad inputs, one by one: scripts/study.py, scripts/measure.py and scripts/train.py
(their mains, in process) answer each with one ``error:`` line and exit code 2, before anything is
written and within seconds (the 20-digit probe and example counts once ran for minutes)."""

import contextlib
import io
import os
import time

import pytest

from snnjax.studies import commands
from snnjax.train import cli, config_io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
STUDY = ["--config", os.path.join(CONFIGS, "study.py:quick")]
TINY = ["--config", os.path.join(CONFIGS, "dense.py:quick"), "--config.progress=False",
        "--config.dataset.name=mnist1d", "--config.model.name=mlp"]
HUGE = "99999999999999999999"  # 20 digits
UNWRITABLE = "/sys/snn" if os.path.isdir("/sys") else "/proc/snn"


def _refused(fn, argv, needle, tmp_path, *, seconds=20.0):
  before = sorted(os.listdir(tmp_path))
  err = io.StringIO()
  t0 = time.time()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    rc = fn([os.path.basename(argv[0])] + argv[1:])
  elapsed = time.time() - t0
  lines = [l for l in err.getvalue().splitlines() if l.strip()]
  assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
  assert needle in lines[0], lines[0]
  assert sorted(os.listdir(tmp_path)) == before, "something was written"
  assert elapsed < seconds, f"{elapsed:.1f}s"
  return lines[0]


@pytest.mark.parametrize("args,needle", [
    # a training config of another regime in a slot, and the reverse; a preset that does not exist
    (["--config.train.clean_dense=scratch95.py:quick"], "is a scratch config; the clean_dense slot"),
    (["--config.train.clean_finetune=scratch95.py:quick"], "the clean_finetune slot takes a finetune"),
    (["--config.train.clean_scratch=dense.py:quick"], "is a dense config; the clean_scratch slot"),
    (["--config.train.noisy_dense=finetune95.py:quick_noisy"], "the noisy_dense slot"),
    (["--config.train.clean_dense=dense.py:bogus"], "unknown preset 'bogus'"),
    (["--config.train.clean_dense=study.py:quick"], "not a training config"),
    # non-finite or out-of-range stage settings
    (["--config.regimes.threshold=nan"], "regimes.threshold"),
    (["--config.closing_gap.fisher_weight=inf"], "closing_gap.fisher_weight"),
    (["--config.sanity.max_probes=0"], "sanity.max_probes"),
    (["--config.measure.hessian.rtol=inf"], "hessian.rtol"),
    ([f"--config.per_layer.num_probes={HUGE}"], "per_layer.num_probes"),
    (["--config.measure.hessian.min_probes=50", "--config.measure.hessian.max_probes=10"],
     "min_probes=50 exceeds measure.hessian.max_probes=10"),
    # the study's own fields (also under --dry-run)
    (["--config.sparsities=(nan,)", "--dry-run"], "study sparsities must be a finite number"),
    (["--config.seeds=('a',)", "--dry-run"], "study seeds must be an integer"),
    ([f"--config.seeds=({HUGE},)", "--dry-run"], "study seeds must be an integer"),
])
def test_study_refuses(tmp_path, args, needle):
  _refused(commands.study_main, ["study.py"] + STUDY + args + ["--workdir", str(tmp_path / "s")],
           needle, tmp_path)


def test_study_refuses_a_training_runs_work_dir(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text("{}")
  (run / "checkpoints").mkdir()
  before = sorted(os.listdir(run))
  _refused(commands.study_main, ["study.py"] + STUDY + ["--workdir", str(run), "--stages", "table"],
           "is a training run's work dir", tmp_path)
  assert sorted(os.listdir(run)) == before  # no jax_cache/, no runs/


def test_train_refuses_a_study_directory(tmp_path):
  study = tmp_path / "study"
  for name in ("runs", "results", "jax_cache"):
    (study / name).mkdir(parents=True)
  _refused(cli.main, ["train.py"] + TINY + ["--workdir", str(study)], "is a study directory",
           tmp_path)
  assert sorted(os.listdir(study)) == ["jax_cache", "results", "runs"]


@pytest.mark.parametrize("fn,argv,needle", [
    (commands.study_main, ["study.py"] + STUDY + ["--workdir", UNWRITABLE], "cannot create"),
    (cli.main, ["train.py"] + TINY + ["--workdir", UNWRITABLE], "cannot create"),
    (cli.main, ["train.py"] + TINY + ["--config.regime=finetune", "--config.sparsity=0.9",
                                      f"--config.dense_workdir={UNWRITABLE}/dense"],
     "config.dense_workdir: cannot create"),
])
def test_an_unwritable_directory_is_tried_not_read_from_mode_bits(tmp_path, fn, argv, needle):
  if fn is cli.main and "--workdir" not in argv:
    argv = argv + ["--workdir", str(tmp_path / "run")]
  _refused(fn, argv, needle, tmp_path)


@pytest.mark.parametrize("args,needle", [
    (["--config.optim.boundaries_epochs=(5,3)"], "boundaries_epochs must be in increasing order"),
    (["--config.optim.lr=nan"], "optim.lr"),
])
def test_train_refuses(tmp_path, args, needle):
  _refused(cli.main, ["train.py"] + TINY + args + ["--workdir", str(tmp_path / "run")], needle,
           tmp_path)


@pytest.mark.parametrize("args,needle", [
    ([f"--config.jacobian.num_projections={HUGE}"], "jacobian.num_projections must be an integer"),
    ([f"--config.key_seed={HUGE}"], "key_seed must be an integer"),
    ([f"--config.fisher.num_examples={HUGE}"], "fisher.num_examples must be an integer"),
    ([f"--config.hessian.max_probes={HUGE}"], "hessian.max_probes must be an integer"),
    ([f"--config.hessian.min_probes={HUGE}"], "hessian.min_probes must be an integer"),
    (["--config.hessian.min_probes=50", "--config.hessian.max_probes=10"],
     "min_probes=50 exceeds measure.hessian.max_probes=10"),
    (["--config.hessian.rtol=inf"], "hessian.rtol"),
    (["--config.hessian.rtol=nan"], "hessian.rtol"),
    (["--config.fisher.num_samples=0"], "fisher.num_samples"),
])
def test_measure_refuses_within_seconds(tmp_path, args, needle):
  """The counts are bounded: a 20-digit probe or example count is refused, not run."""
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text("{}")
  _refused(commands.measure_main, ["measure.py", "--workdir", str(run), "--out",
                                   str(tmp_path / "m")] + args, needle, tmp_path, seconds=10.0)


def test_check_path_tries_to_write(tmp_path):
  config_io.check_path(str(tmp_path / "new" / "dir"), "--workdir")
  assert not os.path.exists(tmp_path / "new")
  assert os.listdir(tmp_path) == []  # the probe file is gone
  with pytest.raises(Exception, match="cannot create"):
    config_io.check_path(UNWRITABLE, "--workdir")
