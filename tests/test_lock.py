"""Lock files (snnjax.train.lock) and the work-dir lock of train_and_evaluate: one owner at a time,
a clean refusal naming the owner's pid and host, stale locks (dead pid, old heartbeat) taken over,
and two processes started at once on one work dir (or one shared Sol-D prerequisite) never crash."""

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from snnjax.train import cli, lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [sys.executable, os.path.join(REPO, "scripts", "train.py")]
TINY = ["--config.progress=False", "--config.dataset.name=mnist1d", "--config.model.name=mlp",
        "--config.num_epochs=3", "--config.checkpoint_every_epochs=1",
        "--config.optim.boundaries_epochs=(2,)"]
DENSE = ["--config", os.path.join(REPO, "configs", "dense.py:quick")] + TINY


def _dead_pid():
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def _write(path, **record):
  with open(path, "w") as f:
    json.dump({"token": "x", "started": time.time(), "heartbeat": time.time(), **record}, f)


def test_one_owner_at_a_time_and_owner_names_pid_and_host(tmp_path):
  path = tmp_path / "lock.json"
  first = lock.try_acquire(path, info={"what": "test"})
  assert first is not None and lock.try_acquire(path) is None
  record = lock.owner(path)
  assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
  assert record["what"] == "test" and record["token"] == first.token
  beat = record["heartbeat"]
  time.sleep(0.01)
  assert first.heartbeat() and lock.owner(path)["heartbeat"] > beat
  first.release()
  assert lock.owner(path) is None and not os.listdir(tmp_path)
  second = lock.try_acquire(path)
  assert second is not None
  second.release()


def test_stale_locks_are_taken_over(tmp_path):
  path = tmp_path / "lock.json"
  _write(path, pid=_dead_pid(), host=socket.gethostname())  # killed: pid gone on this host
  taken = lock.try_acquire(path)
  assert taken is not None and lock.owner(path)["pid"] == os.getpid()
  taken.release()
  _write(path, pid=1, host="elsewhere", heartbeat=time.time() - 1000)  # no heartbeat for long
  assert lock.try_acquire(path, stale_after_s=100) is not None
  os.unlink(path)
  _write(path, pid=1, host="elsewhere")  # another host, beating: held
  assert lock.try_acquire(path, stale_after_s=100) is None
  path.write_text("not json")  # garbage is stale
  assert lock.try_acquire(path) is not None


def test_a_taken_over_lock_is_not_released_by_its_old_owner(tmp_path):
  path = tmp_path / "lock.json"
  old = lock.try_acquire(path)
  os.unlink(path)  # as if judged stale and removed
  new = lock.try_acquire(path)
  assert not old.heartbeat()
  old.release()
  assert lock.owner(path)["token"] == new.token
  new.release()


def test_hold_refuses_or_waits(tmp_path):
  path = tmp_path / "lock.json"
  with lock.hold(path) as held:
    with pytest.raises(lock.LockedError, match=rf"held by pid {os.getpid()} on host "
                                                rf"{socket.gethostname()}"):
      lock.acquire(path)
    t0 = time.monotonic()
    with pytest.raises(lock.LockedError):
      lock.acquire(path, wait=0.3, poll_s=0.05)
    assert time.monotonic() - t0 >= 0.3
    threading.Timer(0.3, held.release).start()
    waited = []
    got = lock.acquire(path, wait=True, poll_s=0.05, on_wait=waited.append)
    assert waited and waited[0]["token"] == held.token
    got.release()
  assert lock.owner(path) is None


def test_hold_heartbeats_in_the_background(tmp_path):
  path = tmp_path / "lock.json"
  with lock.hold(path, stale_after_s=0.2):
    first = lock.owner(path)["heartbeat"]
    time.sleep(0.3)
    assert lock.owner(path)["heartbeat"] > first
  assert lock.owner(path) is None


def test_racing_threads_hold_it_one_at_a_time(tmp_path):
  path, inside, overlaps, wins = tmp_path / "lock.json", [], [], []
  start = threading.Barrier(8)

  def contend():
    start.wait()
    for _ in range(30):
      held = lock.try_acquire(path)
      if held is None:
        continue
      inside.append(1)
      overlaps.append(len(inside) > 1)
      wins.append(1)
      inside.pop()
      held.release()

  threads = [threading.Thread(target=contend) for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert wins and not any(overlaps)
  assert lock.owner(path) is None


def test_a_second_train_on_a_held_workdir_refuses_naming_the_owner(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  with lock.hold(workdir / "lock.json"):  # held by this process: train.py's main, in process
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
      rc = cli.main(["train.py"] + DENSE + ["--workdir", str(workdir)])
  assert rc == 2
  lines = err.getvalue().strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  assert f"pid {os.getpid()} on host {socket.gethostname()}" in lines[0]
  assert sorted(os.listdir(workdir)) == []  # nothing written (the lock file is gone again)


def _start(args):
  return subprocess.Popen(TRAIN + args, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def test_two_processes_on_one_workdir_never_crash(tmp_path):
  workdir = tmp_path / "run"
  procs = [_start(DENSE + ["--workdir", str(workdir)]) for _ in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  codes = sorted(p.returncode for p in procs)
  assert codes in ([0, 0], [0, 2]), outs
  for p, (_, err) in zip(procs, outs):
    assert "Traceback" not in err, err
    if p.returncode == 2:
      assert err.strip().startswith("error: ") and "held by pid" in err and len(
          err.strip().splitlines()) == 1, err
  with open(workdir / "metrics.jsonl") as f:
    assert [json.loads(l)["epoch"] for l in f] == [1, 2, 3]
  assert not (workdir / "lock.json").exists()


def test_runs_sharing_a_sol_d_prerequisite_train_it_once(tmp_path):
  dense_workdir, spec = tmp_path / "dense", tmp_path / "dense_tiny.py"
  # The prerequisite's config file: dense.py:quick with TINY's overrides.
  spec.write_text(
      "from snnjax.train import config_presets\n"
      "def get_config():\n"
      "  c = config_presets.dense_config('quick')\n"
      "  c.progress = False\n  c.dataset.name = 'mnist1d'\n  c.model.name = 'mlp'\n"
      "  c.num_epochs = 3\n  c.checkpoint_every_epochs = 1\n  c.optim.boundaries_epochs = (2,)\n"
      "  return c\n")
  sparse = TINY + [f"--config.dense_workdir={dense_workdir}", "--config.prerequisites=train",
                   f"--config.dense_config={spec}"]
  procs = [_start(["--config", os.path.join(REPO, "configs", f"{name}90.py:quick")] + sparse
                  + ["--workdir", str(tmp_path / name)]) for name in ("scratch", "finetune")]
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  assert sum("waiting" in err or "already finished" in err for _, err in outs) >= 1, outs
  with open(dense_workdir / "metrics.jsonl") as f:
    assert [json.loads(l)["epoch"] for l in f] == [1, 2, 3]
