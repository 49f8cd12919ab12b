"""One process of a multi-process (``jax.distributed``) run, started by tests/test_distributed.py.

Trains the tiny digits CNN run (``_train_configs.tiny``) in ``--workdir`` over every device of the
cluster, then measures Tr(H) (Hutchinson, fixed probes) and the exact Tr(F) of the solution over
``jax.devices()`` (all processes' devices) and writes ``--out`` (JSON). ``--num-processes 1`` is
the single-process reference. Needs ``XLA_FLAGS=--xla_force_host_platform_device_count=K`` in
the environment. ``--epoch-sleep`` slows each epoch down (so a test can kill a process mid-run).
"""

import argparse
import json
import os
import sys
import time

_TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_TESTS), _TESTS]

import jax  # noqa: E402
import numpy as np  # noqa: E402

from _train_configs import tiny  # noqa: E402
from snnjax import data as data_lib  # noqa: E402
from snnjax.estimators import fisher, hessian  # noqa: E402
from snnjax.train import load_solution, train_and_evaluate  # noqa: E402


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--process-id", type=int, default=0)
  ap.add_argument("--num-processes", type=int, default=1)
  ap.add_argument("--port", type=int, default=0)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--epochs", type=int, default=3)
  ap.add_argument("--epoch-sleep", type=float, default=0.0)
  ap.add_argument("--out", required=True)
  args = ap.parse_args()

  config = tiny(model="cnn", dataset="digits", epochs=args.epochs)
  config.checkpoint_keep = 10
  # A calm setting: early SGD on the digits CNN at lr 0.05 amplifies float rounding (the
  # reduction order of an all-reduce across processes differs from one within a process) by ~1e4
  # within one epoch; at lr 0.02 the two runs stay within ~1e-5.
  config.optim.lr = 0.02
  config.optim.weight_decay = 5e-4
  if args.num_processes > 1:
    config.distributed.enabled = True
    config.distributed.coordinator_address = f"127.0.0.1:{args.port}"
    config.distributed.num_processes = args.num_processes
    config.distributed.process_id = args.process_id
    config.distributed.heartbeat_timeout_s = 10
    config.distributed.initialization_timeout_s = 60

  def slow(epoch, state, ctx):
    del epoch, state, ctx
    time.sleep(args.epoch_sleep)
    return {}

  record = train_and_evaluate(config, args.workdir, epoch_hook=slow if args.epoch_sleep else None)
  sol = load_solution(args.workdir)
  dataset = data_lib.load_dataset(config.dataset)
  batch = {"x": dataset.x_train[:64], "y": dataset.y_train[:64]}
  loss_fn, logits_fn = sol.loss_fn, sol.logits_fn
  devices = jax.devices()
  tr_h = hessian.hessian_trace(loss_fn, sol.params, batch, key=jax.random.key(0), num_probes=8,
                               mask=sol.mask, devices=devices)
  tr_f = fisher.fisher_trace(logits_fn, sol.params, batch, labels="exact", mask=sol.mask,
                             devices=devices)
  out = {"process_index": jax.process_index(), "process_count": jax.process_count(),
         "device_count": jax.device_count(),
         "record": {k: v for k, v in record.items() if k in (
             "batch_loss", "batch_accuracy", "train_loss", "train_accuracy", "test_loss",
             "test_accuracy")},
         "params": [np.asarray(p, np.float64).ravel().tolist() for p in jax.tree.leaves(sol.params)],
         "batch_stats": [np.asarray(p, np.float64).ravel().tolist()
                         for p in jax.tree.leaves(sol.batch_stats)],
         "tr_h": tr_h.value, "tr_f": tr_f.value}
  with open(args.out, "w") as f:
    json.dump(out, f)


if __name__ == "__main__":
  main()
