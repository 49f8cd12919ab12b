"""Data parallelism with JAX's own machinery: a 1-D device mesh, replicated state, sharded batches.

The train state and the device-resident dataset are replicated over the mesh; each gathered batch is
constrained to be split along its first axis (``P("data")``). Under ``jit`` XLA then runs each shard on
its device and turns batch means (the loss, BatchNorm's batch statistics) into cross-device
reductions, so a run on N devices computes the same function of the global batch as one device.
Multi-host: ``config.distributed`` calls ``jax.distributed.initialize()`` first; the mesh then spans
every process's devices (each host keeps the whole, small, dataset).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from snnjax.errors import UserError

_initialized = False


def maybe_initialize_distributed(enabled: bool) -> None:
  global _initialized
  if enabled and not _initialized:
    jax.distributed.initialize()
    _initialized = True


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D mesh named ``data`` over the first ``num_devices`` devices (0 = all)."""
  devices = jax.devices()
  if num_devices > len(devices):
    raise UserError(f"config.num_devices={num_devices} but only {len(devices)} devices are visible")
  n = num_devices or len(devices)
  return Mesh(np.asarray(devices[:n]), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def replicate(tree, mesh: Mesh):
  """Places every leaf of ``tree`` on all devices of ``mesh``."""
  return jax.device_put(tree, replicated(mesh))
