"""Ensemble speed-up: K members as one vmapped step vs K separate runs' steps.

The timed unit is one optimizer step of the ``configs/dense.py:quick`` setup (digits, the small
CNN 32/64/64 with BatchNorm, batch 64; ``--models mlp``: the MLP 100-100 on the same digits),
timed over ``steps`` steps through each path's own epoch loop: ``loop.train_epoch`` with
``step.make_train_step`` for the separate run, ``ensemble.train_epoch`` with
``ensemble.make_ensemble_step`` (one vmapped program) or ``ensemble.make_looped_step`` (members in
turn) for K members: batches sent from the host, keys folded, metrics gathered at the end.
Per-model throughput is ``K * batch / step time``; the speed-up is ``K * separate step time /
ensemble step time``. Times are medians over ``repeats`` after a first (compiling) pass.

Usage: ``python -m benchmarks.ensemble_speed [--members 1,4,16] [--out ensemble_speed.json]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from snnjax import data as data_lib
from snnjax import models, xla_cpu
from snnjax.train import config_io, ensemble, loop, starting_point
from snnjax.train.optim import make_optimizer
from snnjax.train.step import make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _time(fn, repeats: int) -> list[float]:
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


def measure(members=(1, 4, 16), steps: int = 20, repeats: int = 5, *, model_name: str = "cnn",
            vectorize: bool = True) -> dict:
  config = config_io.load_config_spec(os.path.join(ROOT, "configs", "dense.py") + ":quick")
  if model_name == "mlp":  # the MLP (100-100) on the same flattened digits
    config.model.name = "mlp"
  dataset = data_lib.load_dataset(config.dataset)
  model = models.create_model(config.model.name, dataset.num_classes, **dict(config.model.kwargs))
  steps_per_epoch = dataset.num_train // config.batch_size
  tx, _ = make_optimizer(config.optim, steps_per_epoch)
  data = {"x": jnp.asarray(dataset.x_train), "y": jnp.asarray(dataset.y_train)}
  rng = np.random.default_rng(0)
  b = config.batch_size

  # The separate run's epoch loop (loop.train_epoch) over `steps` batches, and the ensemble's.
  single = make_train_step(model.apply, tx, augment=False)
  state, _ = ensemble.init_members([config], model, dataset.input_shape, tx)
  holder = {"s": ensemble.member(state, 0)}
  batches = [rng.choice(dataset.num_train, b, replace=False).astype(np.int32) for _ in range(steps)]
  key = starting_point.augment_key(config)

  def run_single():
    holder["s"], _ = loop.train_epoch(holder["s"], data, batches, step_fn=single, aug_key=key,
                                      first_step=0)
    jax.block_until_ready(holder["s"].params)

  t0 = time.perf_counter()
  run_single()
  compile_single = time.perf_counter() - t0
  single_times = _time(run_single, repeats)
  single_step = statistics.median(single_times) / steps
  rows = []
  for k in members:
    configs = ensemble.member_configs(config, list(range(k)))
    states, _ = ensemble.init_members(configs, model, dataset.input_shape, tx)
    if not vectorize:
      states = ensemble.unstack(states)
    make = ensemble.make_ensemble_step if vectorize else ensemble.make_looped_step
    step = make(model.apply, tx, augment=False)
    ebatches = np.stack([np.stack([rng.choice(dataset.num_train, b, replace=False)
                                   for _ in range(k)]) for _ in range(steps)]).astype(np.int32)
    keys = ensemble.member_keys(configs, vectorize)
    holder["e"] = states

    def run_ensemble():
      holder["e"], _ = ensemble.train_epoch(holder["e"], data, ebatches, step_fn=step,
                                            aug_keys=keys, first_step=0)
      jax.block_until_ready(jax.tree.leaves(holder["e"]))

    t0 = time.perf_counter()
    run_ensemble()
    compile_s = time.perf_counter() - t0
    times = _time(run_ensemble, repeats)
    step_s = statistics.median(times) / steps
    rows.append({"members": k, "vectorize": vectorize, "ensemble_step_s": step_s,
                 "first_epoch_s": compile_s, "per_model_images_per_s": k * b / step_s,
                 "speedup_vs_separate": k * single_step / step_s,
                 "min_step_s": min(times) / steps})
    print(json.dumps(rows[-1]), flush=True)
  return {
      "what": f"one SGD step, configs/dense.py:quick (digits 8x8, model {model_name}, batch 64), "
              f"K members ({'vmapped' if vectorize else 'looped'}) vs one separate run's step",
      "model": model_name, "vectorize": vectorize,
      "date": datetime.date.today().isoformat(), "machine": {
          "cpu": _cpu(), "cores": os.cpu_count(), "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()], "python": platform.python_version(),
          "jax": jax.__version__, "load_avg_1min": os.getloadavg()[0]},
      "steps": steps, "repeats": repeats,
      "separate": {"step_s": single_step, "first_epoch_s": compile_single,
                   "images_per_s": b / single_step},
      "ensemble": rows}


def _cpu() -> str:
  from benchmarks.machine import cpu_model  # pylint: disable=import-outside-toplevel
  return cpu_model()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--members", default="1,4,16")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--models", default="cnn,mlp")
  parser.add_argument("--modes", default="vmap,loop")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  xla_cpu.tune()
  members = tuple(int(k) for k in args.members.split(","))
  result = {"runs": [measure(members, args.steps, args.repeats, model_name=m, vectorize=v == "vmap")
                     for m in args.models.split(",") for v in args.modes.split(",")]}
  text = json.dumps(result, indent=2)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
