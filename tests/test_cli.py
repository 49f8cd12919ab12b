"""scripts/train.py: kill -9 and resume, and one clear error (exit 2, nothing written) for bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from snnjax.errors import UserError
from snnjax.train import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [sys.executable, os.path.join(REPO, "scripts", "train.py")]
QUICK = ["--config", os.path.join(REPO, "configs", "dense.py:quick"), "--config.progress=False"]
TINY = QUICK + ["--config.dataset.name=mnist1d", "--config.model.name=mlp", "--config.num_epochs=6",
                "--config.checkpoint_every_epochs=1", "--config.optim.boundaries_epochs=(4,)"]


def _run(args, cwd=REPO, timeout=300):
  return subprocess.run(TRAIN + args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _final(stdout):
  return json.loads(stdout.strip().splitlines()[-1])


def test_kill_and_resume_gives_the_same_final_metrics(tmp_path):
  straight = _run(TINY + ["--workdir", str(tmp_path / "straight")])
  assert straight.returncode == 0, straight.stderr
  workdir = tmp_path / "killed"
  proc = subprocess.Popen(TRAIN + TINY + ["--workdir", str(workdir)], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpts = workdir / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    steps = [d for d in os.listdir(ckpts) if d.isdigit()] if ckpts.exists() else []
    if len(steps) >= 1:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  resumed = _run(TINY + ["--workdir", str(workdir)])
  assert resumed.returncode == 0, resumed.stderr
  assert "resuming" in resumed.stderr
  a, b = _final(straight.stdout), _final(resumed.stdout)
  for key in ("test_loss", "test_accuracy", "train_loss", "train_accuracy", "batch_loss"):
    assert a[key] == b[key], key
  lines = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert [r["epoch"] for r in lines] == list(range(1, 7))


@pytest.mark.parametrize("args,message", [
    (["--config.sparsity=1.5"], "config.sparsity must be in [0, 1)"),
    (["--config.model.name=resnet1000"], "config.model.name must be one of"),
    (["--config.dataset.name=imagenet"], "config.dataset.name must be one of"),
    (["--config.dataset.label_noise=1.0"], "label_noise must be in [0, 1)"),
    (["--config.regime=finetune", "--config.sparsity=0.9"], "needs a Sol-D run"),
    (["--config.regime=finetune", "--config.sparsity=0.9", "--config.dense_workdir=/nonexistent"],
     "no finished Sol-D run"),
    (["--config.num_epochs=abc"], "num_epochs"),
    (["--config.no_such_field=1"], "no_such_field"),
])
def test_bad_config_values_exit_2_and_write_nothing(tmp_path, args, message):
  workdir = tmp_path / "run"
  out = _run(QUICK + args + ["--workdir", str(workdir)])
  assert out.returncode == 2, (out.returncode, out.stderr)
  lines = [l for l in out.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
  assert not workdir.exists()


def test_missing_config_file_and_npz(tmp_path):
  out = _run(["--config", str(tmp_path / "nope.py"), "--workdir", str(tmp_path / "w")])
  assert out.returncode == 2 and out.stderr.startswith("error: ")
  out = _run(QUICK + ["--config.dataset.name=cifar10", "--config.dataset.source=npz",
                      f"--config.dataset.npz_path={tmp_path / 'missing.npz'}",
                      "--workdir", str(tmp_path / "w")])
  assert out.returncode == 2 and "missing.npz" in out.stderr, out.stderr
  assert not (tmp_path / "w").exists()


def test_corrupt_checkpoint_is_a_clear_error_and_nothing_is_lost(tmp_path):
  workdir = tmp_path / "run"
  args = TINY + ["--config.num_epochs=2", "--workdir", str(workdir)]
  first = _run(args + ["--config.num_epochs=2"])
  assert first.returncode == 0, first.stderr
  # Corrupt every file of the latest checkpoint's state.
  ckpts = workdir / "checkpoints"
  latest = max(int(d) for d in os.listdir(ckpts) if d.isdigit())
  corrupted = []
  for root, _, files in os.walk(ckpts / str(latest)):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "wb") as f:
        f.write(b"\x00garbage")
      corrupted.append(path)
  metrics_before = (workdir / "metrics.jsonl").read_bytes()
  again = _run(args)
  assert again.returncode == 2, again.stderr
  assert again.stderr.startswith("error: ") and "corrupt" in again.stderr, again.stderr
  assert (workdir / "metrics.jsonl").read_bytes() == metrics_before
  assert all(open(p, "rb").read() == b"\x00garbage" for p in corrupted)


def test_help_exits_0_and_names_the_flags():
  out = _run(["--help"])
  assert out.returncode == 0 and "--config" in out.stdout and "--workdir" in out.stdout


def test_parse_reads_overrides_from_its_own_argv():
  # Not from sys.argv: an embedding program (or a test) passes its own argument list.
  spec = os.path.join(REPO, "configs", "dense.py:quick")
  config, workdir = cli.parse(["train.py", "--config", spec, "--config.num_epochs=3",
                               "--config.optim.lr=0.2"])
  assert config.num_epochs == 3 and config.optim.lr == 0.2
  assert workdir == os.path.join("runs", "dense-quick")
  with pytest.raises(UserError, match="unknown config field.*hidden_size"):
    cli.parse(["train.py", "--config", spec, "--config.model.kwargs.hidden_size=3"])
