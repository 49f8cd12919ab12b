"""Several study workers on one directory (``snnjax.studies.workers``, ``runs.train_all``): every
run trained once, a killed worker's run resumed by its restart, the numbers of one worker."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from snnjax.errors import UserError
from snnjax.studies import stages as stages_lib
from snnjax.studies import workers
from snnjax.studies.study import run_study
from snnjax.train import lock as lock_lib
from snnjax.train.run_dir import RunDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = '''
import sys
sys.path.insert(0, {root!r})
from tests._study_configs import tiny_study

def get_config():
  c = tiny_study()
  c.sol_r = False
  c.train.overrides["num_epochs"] = 3
  for stage in {stages!r}:
    if stage != "measure":
      c[stage].enabled = False
  return c
'''


def _config_file(tmp_path):
  keys = [s.key for s in stages_lib.REGISTRY]
  path = tmp_path / "workers_study.py"
  path.write_text(CONFIG.format(root=ROOT, stages=keys))
  return str(path)


def _worker(config_file, workdir, index, *extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", SNNJAX_STUDY_WORKER=str(index))
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "study.py"), "--config",
                           config_file, "--workdir", str(workdir), *extra],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=600):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-3000:]
  return out


def _table(workdir):
  with open(os.path.join(workdir, "report", "results.json")) as f:
    return json.load(f)["table"]


def _held_runs(workdir):
  runs = os.path.join(workdir, "runs")
  if not os.path.isdir(runs):
    return {}
  return {name: lock_lib.owner(os.path.join(runs, name, lock_lib.LOCK_FILE))
          for name in os.listdir(runs)
          if lock_lib.owner(os.path.join(runs, name, lock_lib.LOCK_FILE)) is not None}


def test_two_workers_one_killed_and_restarted_equal_one_worker(tmp_path):
  config_file = _config_file(tmp_path)
  from snnjax.train import config_io  # pylint: disable=import-outside-toplevel
  single = tmp_path / "single"
  run_study(config_io.load_config_spec(config_file), str(single))

  multi = tmp_path / "multi"
  # Worker 1 starts first, so that it (not worker 0) holds a run when it is killed; worker 0
  # starts meanwhile and waits for that run (the Sol-D) or takes another.
  b = _worker(config_file, multi, 1)
  deadline = time.time() + 300
  while not any(rec and rec["pid"] == b.pid for rec in _held_runs(multi).values()):
    assert time.time() < deadline, "worker 1 never claimed a run"
    assert b.poll() is None, b.communicate()[0][-3000:]
    time.sleep(0.05)
  a = _worker(config_file, multi, 0)
  time.sleep(1.0)
  b.send_signal(signal.SIGKILL)
  b.wait()
  b = _worker(config_file, multi, 1)
  logs = [_finish(a), _finish(b)]

  # Both workers trained; every run once (each epoch recorded once), as the single worker did.
  assert all("done in" in log for log in logs), logs
  names = sorted(os.listdir(single / "runs"))
  assert sorted(os.listdir(multi / "runs")) == names
  for name in names:
    epochs = [r["epoch"] for r in RunDir(multi / "runs" / name).epoch_records()]
    assert epochs == [1, 2, 3], (name, epochs)
    assert not os.path.exists(multi / "runs" / name / lock_lib.LOCK_FILE)
  assert _table(multi) == _table(single)

  # The launcher: two workers on the finished directory reuse everything and agree.
  out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "study.py"), "--config",
                        config_file, "--workdir", str(multi), "--workers", "2"],
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "[study worker 0]" in out.stderr and "[study worker 1]" in out.stderr
  assert "computing" not in out.stderr
  assert _table(multi) == _table(single)


def test_workers_flag_parsing():
  assert workers.split_workers_flag(["study.py", "--workers", "3", "--workdir", "d"]) == (
      ["study.py", "--workdir", "d"], 3)
  assert workers.split_workers_flag(["study.py", "--workers=2"]) == (["study.py"], 2)
  assert workers.split_workers_flag(["study.py"]) == (["study.py"], 1)
  for bad in (["--workers", "0"], ["--workers", "x"], ["--workers"]):
    with pytest.raises(UserError, match="--workers"):
      workers.split_workers_flag(["study.py", *bad])


def test_each_worker_gets_its_own_gpus():
  gpus = ["0", "1", "2", "3", "4", "5", "6", "7"]
  envs = [workers.worker_env(i, 4, gpus, environ={}) for i in range(4)]
  assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0,4", "1,5", "2,6", "3,7"]
  assert [e["SNNJAX_STUDY_WORKER"] for e in envs] == ["0", "1", "2", "3"]
  shared = [workers.worker_env(i, 3, ["0", "1"], environ={}) for i in range(3)]
  assert [e["CUDA_VISIBLE_DEVICES"] for e in shared] == ["0", "1", "0"]
  assert "CUDA_VISIBLE_DEVICES" not in workers.worker_env(0, 2, [], environ={})
  assert workers.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
  assert workers.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_a_missing_sol_d_nobody_trains_is_an_error_not_a_wait(tmp_path):
  """``train_all`` waits for a Sol-D only while some worker is going to train it; a Sol-D that is
  neither planned nor held is ``train_and_evaluate``'s business (here: prerequisites=error)."""
  import threading  # pylint: disable=import-outside-toplevel
  from snnjax.studies import runs as runs_lib  # pylint: disable=import-outside-toplevel
  from tests._train_configs import tiny  # pylint: disable=import-outside-toplevel
  config = tiny("scratch", dataset="digits", model="cnn", sparsity=0.5)
  config.dense_workdir = str(tmp_path / "no-sol-d")
  run = runs_lib.Run(runs_lib.RunSpec("clean", "scratch", 0.5, 0), config,
                     str(tmp_path / "scratch"), "0" * 12)
  outcome = {}

  def target():
    try:
      runs_lib.train_all([run], runs_lib.DatasetCache(), log=lambda m: None, poll_s=0.1)
    except UserError as e:
      outcome["error"] = str(e)
  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(timeout=120)
  assert not thread.is_alive(), "train_all waits for a Sol-D nobody will train"
  assert "no-sol-d" in outcome.get("error", ""), outcome
