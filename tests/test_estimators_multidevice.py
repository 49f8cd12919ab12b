"""Every estimator that loops over data, sharded over 4 CPU devices, gives the single-device results.

The device count is fixed when jax starts, so the check runs in a subprocess
(tests/_multidevice_estimators.py) with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

import os
import pathlib
import subprocess
import sys

import pytest

from snnjax.errors import UserError
from snnjax.estimators import _sharding

SCRIPT = pathlib.Path(__file__).with_name("_multidevice_estimators.py")


def test_four_devices_match_one_device():
  env = dict(os.environ)
  flag = "--xla_force_host_platform_device_count=4"
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True,
                        timeout=300, cwd=SCRIPT.parent.parent)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  checks = proc.stdout.split()
  assert checks[0] == "ok"
  for name in ["placement", "fisher_exact", "fisher_sampled", "fisher_data", "ggn",
               "grad_norms_data", "grad_norms_sampled", "per_example_grads", "grad_dots",
               "jacobian_logits_exact", "jacobian_probs_proj", "hessian_trace", "hvp_over_data",
               "top_eigenvalues", "power_iteration", "spectral_density", "hessian_blocks",
               "fisher_diagonal"]:
    assert name in checks, (name, checks)


def test_resolve_devices_and_shard_batch_errors():
  import jax
  assert _sharding.resolve_devices(None) is None
  assert _sharding.resolve_devices("all") == tuple(jax.local_devices())
  for bad in ("gpu", [], [0, 1], 3):
    with pytest.raises(UserError):
      _sharding.resolve_devices(bad)
  with pytest.raises(UserError):
    _sharding.check_chunk_size(0)
  # single device: a batch of any size shards; the leading axes must agree
  batch = {"x": jax.numpy.zeros((3, 2)), "y": jax.numpy.zeros((3,), jax.numpy.int32)}
  assert _sharding.shard_batch(batch, "all")["x"].shape == (3, 2)
  with pytest.raises(UserError):
    _sharding.shard_batch({"x": batch["x"], "y": batch["y"][:2]}, "all")


def test_example_chunks_pad_and_map_examples_drops_padding():
  import numpy as np
  x = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
  chunks = list(_sharding.example_chunks({"x": x}, 4))
  assert [(s, v, c["x"].shape) for s, v, c in chunks] == [(0, 4, (4, 3)), (4, 4, (4, 3)),
                                                          (8, 2, (4, 3))]
  np.testing.assert_array_equal(np.asarray(chunks[-1][2]["x"])[:, 0], [8, 9, 9, 9])
  fn = _sharding.chunk_fn(lambda rep, chunk, *, scale: chunk["x"].sum(1) * scale + rep, scale=2.0)
  out = _sharding.map_examples(fn, 1.0, {"x": x}, chunk_size=4)
  np.testing.assert_allclose(out, 6 * np.arange(10) + 1)
  assert _sharding.chunk_fn(_sharding.pad_examples, a=1) == _sharding.chunk_fn(
      _sharding.pad_examples, a=1)  # hashable by value: a jit cache key
