"""Multi-process overhead on CPU: the data-parallel train step in 1 process x 4 devices vs 2
processes x 2 devices (``jax.distributed`` with gloo collectives) on one machine.

  python -m benchmarks.distributed --out docs/results/distributed.json [--model cnn --batch 64]

Each configuration runs in fresh processes (``XLA_FLAGS=--xla_force_host_platform_device_count``)
that time ``snnjax.train.step.make_train_step`` over the global mesh: the median over ``--reps``
steps after two warm-up steps, compile excluded, every process timing the same steps. On one CPU
all "devices" share the cores: the ratio measures what the cross-process collectives cost, not a
speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(args) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  if args.num_processes > 1:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                               num_processes=args.num_processes, process_id=args.process_id)
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from snnjax import models, sparsity  # pylint: disable=import-outside-toplevel
  from snnjax.train import optim, parallel  # pylint: disable=import-outside-toplevel
  from snnjax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  from snnjax.train import step as step_lib  # pylint: disable=import-outside-toplevel

  kwargs = {"width": args.width} if args.model != "mlp" else {}
  model = models.create_model(args.model, 10, **kwargs)
  shape = (args.image, args.image, 3)
  params, stats = models.init_variables(model, jax.random.key(0), shape)
  tx = optim.masked_sgd(0.05, momentum=0.9, weight_decay=5e-4)
  mesh = parallel.make_mesh(0)
  state = parallel.replicate(state_lib.TrainState.create(params, stats, sparsity.dense_mask(params),
                                                         tx), mesh)
  rng = np.random.default_rng(0)
  data = parallel.replicate({"x": rng.standard_normal((args.batch * 4, *shape), np.float32),
                             "y": rng.integers(0, 10, args.batch * 4).astype(np.int32)}, mesh)
  step = step_lib.make_train_step(model.apply, tx, augment=False,
                                  batch_sharding=parallel.batch_sharded(mesh))
  idx = jnp.arange(args.batch, dtype=jnp.int32)
  times = []
  for i in range(args.reps + 2):
    t0 = time.perf_counter()
    state, metrics = step(state, data, idx, jax.random.key(i))
    jax.block_until_ready(metrics["loss"])
    if i >= 2:
      times.append(time.perf_counter() - t0)
  return {"processes": jax.process_count(), "devices": jax.device_count(),
          "step_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times)}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(num_processes: int, devices_each: int, args) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}")
  port = _free_port()
  cmd = [sys.executable, "-m", "benchmarks.distributed", "--worker", "--num-processes",
         str(num_processes), "--port", str(port), "--model", args.model, "--width", str(args.width),
         "--image", str(args.image), "--batch", str(args.batch), "--reps", str(args.reps)]
  procs = [subprocess.Popen(cmd + ["--process-id", str(i)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(num_processes)]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (_, err) in zip(procs, outs):
    if p.returncode != 0:
      raise RuntimeError(f"worker failed: {err.strip().splitlines()[-1:]}")
  rows = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
  return {"processes": num_processes, "devices_per_process": devices_each,
          "step_ms": max(r["step_ms"] for r in rows), "per_process": rows}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--worker", action="store_true")
  ap.add_argument("--process-id", type=int, default=0)
  ap.add_argument("--num-processes", type=int, default=1)
  ap.add_argument("--port", type=int, default=0)
  ap.add_argument("--model", default="cnn")
  ap.add_argument("--width", type=float, default=1.0)
  ap.add_argument("--image", type=int, default=8)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--reps", type=int, default=30)
  ap.add_argument("--out", default="")
  args = ap.parse_args(argv)
  if args.worker:
    print(json.dumps(worker(args)))
    return 0
  sys.path.insert(0, ROOT)
  from benchmarks.jax_bench import machine_info  # pylint: disable=import-outside-toplevel
  single = launch(1, 4, args)
  multi = launch(2, 2, args)
  res = {"machine": machine_info(), "model": args.model, "width": args.width, "image": args.image,
         "batch": args.batch, "reps": args.reps, "one_process_4_devices": single,
         "two_processes_2_devices": multi,
         "multi_over_single": multi["step_ms"] / single["step_ms"],
         "command": "python -m benchmarks.distributed " + " ".join(argv or sys.argv[1:])}
  text = json.dumps(res, indent=2)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
