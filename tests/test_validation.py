"""Issue 14's bad inputs, one by one: scripts/train.py (its main, in process) answers each with
one ``error:`` line and exit 2 before anything is written, and before a prerequisite is trained;
bad data files and a garbage metrics.jsonl are clear errors."""

import contextlib
import io
import os

import numpy as np
import pytest

from snnjax.data import sources
from snnjax.errors import UserError
from snnjax.studies import commands
from snnjax.train import cli
from snnjax.train.run_dir import RunDir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
QUICK = ["--config", os.path.join(CONFIGS, "dense.py:quick"), "--config.progress=False"]
TINY = QUICK + ["--config.dataset.name=mnist1d", "--config.model.name=mlp"]


def _main(fn, argv):
  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    rc = fn(argv)
  return rc, [l for l in err.getvalue().splitlines() if l.strip()]


def _refused(tmp_path, args, message, *, workdir=None, fn=cli.main):
  before = sorted(os.listdir(tmp_path))
  workdir = workdir or str(tmp_path / "run")
  rc, lines = _main(fn, ["prog.py"] + args + ["--workdir", workdir])
  assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
  assert message in lines[0], lines[0]
  assert sorted(os.listdir(tmp_path)) == before, "something was written"
  return lines[0]


@pytest.mark.parametrize("args,message", [
    (["--config.seed=100000000000000000000"], "config.seed must be an integer"),
    (["--config.optim.warmup_epochs=1e9"], "optim.warmup_epochs must be a finite number"),
    (["--config.optim.warmup_epochs=inf"], "optim.warmup_epochs must be a finite number"),
    (["--config.optim.boundaries_epochs=(1e9,)"], "boundaries_epochs must hold numbers"),
    (["--config.optim.boundaries_epochs=('a',)"], "boundaries_epochs must hold numbers"),
    (["--config.num_epochs=100000000000"], "config.num_epochs must be an integer"),
    (["--config.sparsity=0.9"], "on a dense run"),
    (["--config.batch_size=100000"], "exceeds the 4000 training examples"),
    (["--config.num_devices=64"], "config.num_devices=64 but only"),
    (["--config.curriculum.kind=low_first", "--config.curriculum.until_epoch=2"],
     "needs per-example scores"),
    (["--config.distributed.enabled=True"], "config.distributed: could not join the JAX cluster"),
    (["--config.distributed=True"], "config.distributed=True"),
    (["stray"], "unexpected argument 'stray'"),
    (["--config.regime=scratch", "--config.mask.source=random", "--config.sparsity=0.999999"],
     "leaves layer"),
])
def test_train_refuses_before_writing(tmp_path, args, message):
  _refused(tmp_path, TINY + args, message)


def test_mnist1d_with_a_2d_conv_model(tmp_path):
  _refused(tmp_path, QUICK + ["--config.dataset.name=mnist1d"], "needs images")


@pytest.mark.parametrize("regime", ["finetune", "scratch"])
def test_sparse_contradictions(tmp_path, regime):
  spec = ["--config", os.path.join(CONFIGS, f"{regime}90.py:quick"), "--config.progress=False"]
  same = str(tmp_path / "same")
  _refused(tmp_path, spec + [f"--config.dense_workdir={same}"], "this run's own work dir",
           workdir=same)
  (tmp_path / "afile").write_text("")
  _refused(tmp_path, spec + [f"--config.dense_workdir={tmp_path / 'afile'}"], "is a file")
  _refused(tmp_path, spec + [f"--config.dense_workdir={tmp_path / ('x' * 300)}"], "path too long")
  if regime == "finetune":
    _refused(tmp_path, spec + ["--config.mask.source=random"], "does not apply to the finetune")


def test_errors_knowable_at_the_start_come_before_training_the_prerequisite(tmp_path):
  spec = ["--config", os.path.join(CONFIGS, "scratch90.py:quick"), "--config.progress=False",
          f"--config.dense_workdir={tmp_path / 'dense'}", "--config.prerequisites=train",
          f"--config.dense_config={os.path.join(CONFIGS, 'dense.py:quick')}"]
  _refused(tmp_path, spec + ["--config.batch_size=5000"], "exceeds the 1437 training examples")
  _refused(tmp_path, spec + ["--config.num_devices=64"], "but only")
  _refused(tmp_path, spec + ["--config.model.name=mlp"], "another architecture or dataset")
  _refused(tmp_path, spec + ["--config.curriculum.kind=high_first",
                             "--config.curriculum.until_epoch=1",
                             f"--config.curriculum.scores_path={tmp_path / 'none.npy'}"],
           "no scores file")


def test_bad_work_dirs(tmp_path):
  (tmp_path / "afile").write_text("")
  (tmp_path / "ck").mkdir()
  (tmp_path / "ck" / "checkpoints").write_text("")
  os.symlink(tmp_path / "loop2", tmp_path / "loop1")
  os.symlink(tmp_path / "loop1", tmp_path / "loop2")
  _refused(tmp_path, TINY, "is a file, not a directory", workdir=str(tmp_path / "afile"))
  _refused(tmp_path, TINY, "which is a file", workdir=str(tmp_path / "afile" / "x"))
  _refused(tmp_path, TINY, "symlink loop", workdir=str(tmp_path / "loop1"))
  _refused(tmp_path, TINY, "checkpoints should be a directory", workdir=str(tmp_path / "ck"))


@pytest.mark.parametrize("body,message", [
    ("def get_config():\n  raise RuntimeError('boom')\n", "RuntimeError: boom"),
    ("def get_config():\n  return None\n", "get_config() returned NoneType"),
    ("def get_config(:\n", "SyntaxError"),
    ("x = 1\n", "has no attribute 'get_config'"),
])
def test_config_files_that_do_not_give_a_config(tmp_path, body, message):
  (tmp_path / "c.py").write_text(body)
  _refused(tmp_path, ["--config", str(tmp_path / "c.py")], message)
  _refused(tmp_path, ["--config", str(tmp_path / "c.py")], message, fn=commands.study_main)


def test_the_wrong_kind_of_config(tmp_path):
  (tmp_path / "c.txt").write_text("hello")
  _refused(tmp_path, ["--config", str(tmp_path / "c.txt")], "not a Python file")
  _refused(tmp_path, ["--config", os.path.join(CONFIGS, "study.py:quick")],
           "not a training config: it has no field regime (a study config? use scripts/study.py)")
  _refused(tmp_path, QUICK, "not a study config", fn=commands.study_main)


def test_study_messages(tmp_path):
  study = ["--config", os.path.join(CONFIGS, "study.py:quick")]
  _refused(tmp_path, study + ["--config.bogus=1"], "unknown config field in an override: bogus",
           fn=commands.study_main)
  _refused(tmp_path, study + ["--stages=tabel", "--dry_run"], "unknown stages ['tabel']",
           fn=commands.study_main)


def test_measure_out_directory_and_unwritable_out(tmp_path):
  assert commands.measure_out(str(tmp_path) + os.sep, "x") == str(tmp_path / "measure")
  assert commands.measure_out(str(tmp_path), "x") == str(tmp_path / "measure")
  (tmp_path / "afile").write_text("")
  with pytest.raises(UserError, match="--out: .*afile is a file"):
    commands.measure_out(str(tmp_path / "afile" / "m"), "x")


def _npz(path, x_train, x_test=None, y=None):
  y = np.arange(len(x_train)) % 10 if y is None else y
  x_test = x_train[:10] if x_test is None else x_test
  np.savez(path, x_train=x_train, y_train=y, x_test=x_test, y_test=y[:len(x_test)])


def test_bad_npz_files(tmp_path):
  x = np.random.default_rng(0).random((100, 8, 8, 3)).astype(np.float32)
  poisoned = x.copy()
  poisoned.reshape(-1)[::100] = np.nan  # 1% NaN pixels
  _npz(tmp_path / "nan.npz", poisoned)
  with pytest.raises(UserError, match="x_train holds 192 non-finite values"):
    sources.load_npz("cifar10", str(tmp_path / "nan.npz"))
  _npz(tmp_path / "empty.npz", x, x_test=x[:0])
  with pytest.raises(UserError, match="the test split is empty"):
    sources.load_npz("cifar10", str(tmp_path / "empty.npz"))
  _npz(tmp_path / "good.npz", x)
  data = (tmp_path / "good.npz").read_bytes()
  (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
  (tmp_path / "text.npz").write_text("x_train,y_train\n")
  for name in ("cut", "text"):
    with pytest.raises(UserError, match="cannot read .* as an npz file: it is not a zip archive"):
      sources.load_npz("cifar10", str(tmp_path / f"{name}.npz"))


@pytest.mark.parametrize("content,message", [
    (b"\x00\xff\xfe garbage\n{}\n", "line 1 is not JSON"),
    (b'{"epoch": "one", "step": 5}\n{"epoch": 2, "step": 10}\n', "record 1 has a bad epoch"),
])
def test_garbage_metrics_are_a_clear_error(tmp_path, content, message):
  (tmp_path / "metrics.jsonl").write_bytes(content)
  with pytest.raises(UserError, match=message):
    RunDir(tmp_path).epoch_records()


@pytest.mark.parametrize("content", ["{}", '{"regime": "dense"}', "[1, 2]"])
def test_a_config_json_missing_fields_matches_no_config(tmp_path, content):
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text(content)
  _refused(tmp_path, TINY, "is not a snnjax run's config")
