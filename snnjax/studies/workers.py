"""``scripts/study.py --workers N``: N worker processes on one study directory.

Each worker is an ordinary ``scripts/study.py`` process with the same arguments: the workers
claim runs through their work dirs' lock files (``snnjax.studies.runs.train_all``), wait for each
other's analyses (``snnjax.studies.cache.StageCache.cached``) and write the same report, so N
workers give the numbers of one. Many machines sharing a filesystem (a SLURM array) run the plain
command once per task instead; this module only starts the N processes of one machine.

Devices: with GPUs (``CUDA_VISIBLE_DEVICES``, or ``nvidia-smi -L``) worker ``i`` gets the GPUs
``j`` with ``j % N == i`` (worker ``i`` shares GPU ``i % G`` when there are fewer GPUs than
workers); on a CPU every worker sees the whole machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

from snnjax.errors import UserError
from snnjax.studies import cache as cache_lib

_CHILD = "import sys; from snnjax.studies.commands import study_main; sys.exit(study_main(sys.argv))"


def split_workers_flag(argv: list[str]) -> tuple[list[str], int]:
  """``(argv without --workers, N)`` (N = 1 without the flag); UserError for a bad value."""
  out, workers, i = [], 1, 0
  while i < len(argv):
    arg = argv[i]
    if arg == "--workers" or arg.startswith("--workers="):
      if "=" in arg:
        value = arg.split("=", 1)[1]
      elif i + 1 < len(argv):
        value, i = argv[i + 1], i + 1
      else:
        raise UserError("--workers needs a number, e.g. --workers 2")
      try:
        workers = int(value)
      except ValueError:
        raise UserError(f"--workers must be a positive integer, got {value!r}") from None
      if workers < 1 or workers > 256:
        raise UserError(f"--workers must be in [1, 256], got {workers}")
    else:
      out.append(arg)
    i += 1
  return out, workers


def visible_gpus(environ=os.environ) -> list[str]:
  """The GPU ids this process may hand out: ``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``."""
  if environ.get("CUDA_VISIBLE_DEVICES") is not None:
    return [d for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() and d != "-1"]
  if shutil.which("nvidia-smi") is None:
    return []
  try:
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    return []
  return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


def worker_env(index: int, workers: int, gpus: list[str], environ=os.environ) -> dict:
  """The environment of worker ``index`` of ``workers`` (its GPUs pinned when there are any)."""
  env = dict(environ, **{cache_lib.WORKER_ENV: str(index)})
  if gpus:
    mine = [g for j, g in enumerate(gpus) if j % workers == index] or [gpus[index % len(gpus)]]
    env["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
  return env


def run_workers(argv: list[str], workers: int) -> int:
  """Starts ``workers`` study processes with ``argv`` (program name first, no ``--workers``) and
  waits for all; returns the worst exit code. Ctrl-C / SIGTERM reach every worker."""
  gpus = visible_gpus()
  procs = [subprocess.Popen([sys.executable, "-c", _CHILD, *argv[1:]],
                            env=worker_env(i, workers, gpus)) for i in range(workers)]
  cache_lib.log(f"started {workers} workers (pids {', '.join(str(p.pid) for p in procs)})"
                + (f" on GPUs {gpus}" if gpus else ""))

  def forward(signum, frame):
    del frame
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)
  previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    codes = [p.wait() for p in procs]
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  return max(codes, key=lambda c: (c != 0, abs(c)))
