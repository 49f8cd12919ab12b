"""Multi-process JAX on this machine: 2 processes x 2 CPU devices (gloo collectives) against one
process with 4 devices.

One test does it all, to start as few processes as possible: the two processes train the tiny
digits run; once the first checkpoint exists one of them is killed (kill -9); the survivor must
stop by itself within the heartbeat timeout (JAX's distributed service declares the peer dead)
instead of hanging; both are started again, resume from the checkpoint and finish. The final
params, BatchNorm statistics, metrics, Tr(H) and Tr(F) (measured over the devices of both
processes) must equal the single-process run's, and the work dir must hold every checkpoint and
metrics record once (process 0 writes; orbax writes host arrays from process 0 only).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from snnjax.errors import UserError
from snnjax.train import config_io, parallel
from snnjax.train.run_dir import RunDir
from tests._train_configs import tiny

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_distributed_worker.py")
EPOCHS = 3
RTOL = 1e-5


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _start(workdir, out, *, process_id=0, num_processes=1, port=0, devices=2, epoch_sleep=0.0,
           log=None):
  cmd = [sys.executable, WORKER, "--workdir", str(workdir), "--out", str(out), "--epochs",
         str(EPOCHS), "--process-id", str(process_id), "--num-processes", str(num_processes),
         "--port", str(port), "--epoch-sleep", str(epoch_sleep)]
  return subprocess.Popen(cmd, env=_env(devices), stdout=log or subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait(proc, timeout, what):
  try:
    out, _ = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, _ = proc.communicate()
    pytest.fail(f"{what} did not finish within {timeout} s:\n{(out or '')[-3000:]}")
  return proc.returncode, out or ""


def _close(a, b, what):
  np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=RTOL,
                             atol=1e-6, err_msg=what)


def test_two_processes_equal_one_and_survive_a_dead_peer(tmp_path):
  ref = _start(tmp_path / "single", tmp_path / "single.json", devices=4)
  rc, log = _wait(ref, 300, "the single-process run")
  assert rc == 0, log[-3000:]
  single = json.loads((tmp_path / "single.json").read_text())
  assert single["device_count"] == 4 and single["process_count"] == 1

  # Phase 1: two processes; kill process 1 once the first checkpoint is on disk.
  workdir = tmp_path / "multi"
  port = _free_port()
  logs = [open(tmp_path / f"phase1-{i}.log", "w") for i in range(2)]
  procs = [_start(workdir, tmp_path / f"m{i}.json", process_id=i, num_processes=2, port=port,
                  epoch_sleep=1.5, log=logs[i]) for i in range(2)]
  deadline = time.time() + 300
  while not RunDir(workdir).checkpoint_steps():
    assert time.time() < deadline, "no checkpoint within 300 s"
    assert all(p.poll() is None for p in procs), "a process exited before its first checkpoint"
    time.sleep(0.5)
  procs[1].send_signal(signal.SIGKILL)
  killed_at = time.time()
  rc0, _ = _wait(procs[0], 120, "the surviving process (it should notice its dead peer)")
  procs[1].wait()
  for f in logs:
    f.close()
  survivor_log = (tmp_path / "phase1-0.log").read_text()
  assert rc0 != 0, "the survivor of a dead peer exited 0"
  assert time.time() - killed_at < 90
  assert "another task died" in survivor_log or "heartbeat" in survivor_log, survivor_log[-3000:]
  done_before = len(RunDir(workdir).epoch_records())
  assert 1 <= done_before < EPOCHS

  # Phase 2: both again, on a fresh port; they resume from the last checkpoint and finish.
  port = _free_port()
  procs = [_start(workdir, tmp_path / f"m{i}.json", process_id=i, num_processes=2, port=port)
           for i in range(2)]
  for i, p in enumerate(procs):
    rc, log = _wait(p, 300, f"process {i} of the resumed run")
    assert rc == 0, log[-3000:]
    assert "resuming" in log, log[-2000:]
  multi = [json.loads((tmp_path / f"m{i}.json").read_text()) for i in range(2)]
  assert [m["process_index"] for m in multi] == [0, 1]
  for m in multi:
    assert m["device_count"] == 4 and m["process_count"] == 2
    for p_multi, p_single in zip(m["params"] + m["batch_stats"],
                                 single["params"] + single["batch_stats"]):
      _close(p_multi, p_single, "final params / BatchNorm statistics")
    for key, value in single["record"].items():
      _close(m["record"][key], value, key)
    _close(m["tr_h"], single["tr_h"], "Tr(H)")
    _close(m["tr_f"], single["tr_f"], "Tr(F)")

  run = RunDir(workdir)
  assert [r["epoch"] for r in run.epoch_records()] == list(range(1, EPOCHS + 1))
  assert run.checkpoint_steps() == RunDir(tmp_path / "single").checkpoint_steps()
  assert run.finished
  leftovers = [n for n in os.listdir(workdir) if "tmp" in n]
  assert not leftovers, leftovers


def test_distributed_block_is_validated_before_anything_runs():
  config = tiny()
  config.distributed.enabled = True
  config.distributed.coordinator_address = "127.0.0.1:1234"
  config.distributed.num_processes = 2
  config.distributed.process_id = 2
  with pytest.raises(UserError, match="process_id must be in"):
    config_io.validate_config(config)
  config.distributed.process_id = 0
  config.distributed.coordinator_address = "localhost"
  with pytest.raises(UserError, match="HOST:PORT"):
    config_io.validate_config(config)
  config.distributed.coordinator_address = "127.0.0.1:1234"
  config.distributed.heartbeat_timeout_s = 0
  with pytest.raises(UserError, match="heartbeat_timeout_s"):
    config_io.validate_config(config)


def test_enabled_without_a_cluster_is_one_clear_error(monkeypatch):
  for name in list(os.environ):
    if name.startswith(("SLURM_", "OMPI_", "PMI_")):
      monkeypatch.delenv(name)
  config = tiny()
  config.distributed.enabled = True
  with pytest.raises(UserError, match="coordinator_address=HOST:PORT"):
    parallel.initialize_distributed(config.distributed)
