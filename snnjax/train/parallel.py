"""Data parallelism with JAX's own machinery: a 1-D device mesh, replicated state, sharded batches.

The train state and the device-resident dataset are replicated over the mesh; each gathered batch is
constrained to be split along its first axis (``P("data")``). Under ``jit`` XLA then runs each shard on
its device and turns batch means (the loss, BatchNorm's batch statistics) into cross-device
reductions, so a run on N devices computes the same function of the global batch as one device.
Multi-process: with ``config.distributed.enabled`` each process calls :func:`initialize_distributed`
(``jax.distributed.initialize``) before anything else; the mesh then spans every process's devices
and each process keeps the whole, small, dataset. On CPU the collectives go through gloo. Every
process computes the same replicated state; process 0 alone writes the work dir's files (orbax
writes host numpy arrays from process 0 only), so N processes give the numbers of one.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from snnjax.errors import UserError

def initialize_distributed(cfg) -> None:
  """Joins the process to its JAX cluster as ``cfg`` (a ``config.distributed`` block) says.

  Without ``coordinator_address`` JAX detects the cluster from its environment (SLURM, Open MPI,
  ...); with it, ``num_processes`` and ``process_id`` say who this process is. A peer silent for
  ``heartbeat_timeout_s`` is declared dead and the survivors are stopped by JAX's distributed
  service (no hang). A no-op when not enabled or already initialized (a study's later runs).
  """
  if not cfg.enabled or jax.distributed.is_initialized():
    return
  kwargs = {"heartbeat_timeout_seconds": int(cfg.heartbeat_timeout_s),
            "shutdown_timeout_seconds": int(cfg.heartbeat_timeout_s),
            "initialization_timeout": int(cfg.initialization_timeout_s)}
  if cfg.coordinator_address:
    kwargs.update(coordinator_address=str(cfg.coordinator_address),
                  num_processes=int(cfg.num_processes), process_id=int(cfg.process_id))
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, RuntimeError) as e:
    hint = ("" if cfg.coordinator_address else
            "; outside a detected cluster (SLURM, Open MPI, ...) set --config.distributed."
            "coordinator_address=HOST:PORT, .num_processes=N and .process_id=I")
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise UserError(f"config.distributed: could not join the JAX cluster ({first}){hint}") from e


def is_primary() -> bool:
  """Whether this process writes shared files (process 0; always True in a single process)."""
  return jax.process_index() == 0


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
