"""Run in a subprocess with 4 forced CPU devices: trains the same tiny run on 1 and on 4 devices."""

import json
import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  pylint: disable=wrong-import-position
import numpy as np  # noqa: E402  pylint: disable=wrong-import-position

from snnjax.train import load_solution, train_and_evaluate  # noqa: E402  pylint: disable=wrong-import-position
from tests._train_configs import tiny  # noqa: E402  pylint: disable=wrong-import-position


def one_step_difference():
  """Max |params after 1 step on 4 devices - on 1 device| / max |params| for the same batch."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from snnjax import models  # pylint: disable=import-outside-toplevel
  from snnjax.train import TrainState, make_optimizer, make_train_step, parallel  # pylint: disable=import-outside-toplevel
  config = tiny(model="cnn", dataset="digits")
  model = models.create_model("cnn", 10)
  params, stats = jax.device_get(models.init_variables(model, jax.random.key(0), (8, 8, 1)))
  mask = jax.tree.map(lambda p: np.asarray(np.random.default_rng(0).random(p.shape) < 0.5), params)
  tx, _ = make_optimizer(config.optim, 10)
  x = np.random.default_rng(1).normal(size=(128, 8, 8, 1)).astype(np.float32)
  data = {"x": jnp.asarray(x), "y": jnp.asarray(np.arange(128) % 10, jnp.int32)}
  idx = jnp.arange(64, dtype=jnp.int32)
  results = []
  for n in (1, 4):
    mesh = parallel.make_mesh(n)
    state = parallel.replicate(TrainState.create(params, stats, mask, tx), mesh)
    step = make_train_step(model.apply, tx, augment=True,
                           batch_sharding=parallel.batch_sharded(mesh) if n > 1 else None)
    for i in range(3):
      state, _ = step(state, parallel.replicate(data, mesh), idx, jax.random.key(i))
    results.append(jax.device_get(state))
  a, b = results
  diff = max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
             for u, v in zip(jax.tree.leaves(a.params) + jax.tree.leaves(a.batch_stats),
                             jax.tree.leaves(b.params) + jax.tree.leaves(b.batch_stats)))
  return diff


def main():
  assert jax.device_count() == 4, jax.devices()
  out = {"three_steps_max_abs_diff": one_step_difference()}
  root = tempfile.mkdtemp()
  for n in (1, 4):
    config = tiny(model="cnn", dataset="digits", epochs=2)
    # lr 0.02: at tiny()'s 0.05 early SGD on this CNN amplifies the float rounding of a different
    # reduction order (1 vs 4 devices) ~1e4-fold within an epoch (see tests/_distributed_worker.py)
    config.num_devices = n
    config.precision = sys.argv[1] if len(sys.argv) > 1 else "float32"
    if config.precision == "float32":
      config.optim.lr = 0.02
    record = train_and_evaluate(config, os.path.join(root, f"d{n}"))
    sol = load_solution(os.path.join(root, f"d{n}"))
    out[n] = {"record": record,
              "params": [np.asarray(p).ravel()[:50].tolist() for p in jax.tree.leaves(sol.params)],
              "stats": [np.asarray(p).ravel()[:20].tolist() for p in jax.tree.leaves(sol.batch_stats)],
              "dtypes": sorted({str(np.asarray(p).dtype) for p in jax.tree.leaves(sol.params)})}
  print(json.dumps(out))


if __name__ == "__main__":
  main()
