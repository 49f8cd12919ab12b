"""A measured XLA:CPU setting for convolutional networks (see BENCHMARKS.md, section 5).

In jaxlib 0.10 most convolutions go to YNNPACK by default, which ran them on one thread on our
2-core machines; handing them back to XLA's multi-threaded Eigen convolutions made a ResNet-32
train step 15% faster (and 30% faster together with the model's residual materialization).

XLA reads ``XLA_FLAGS`` once, when JAX creates its backend (at the first computation, not at
``import jax``), so :func:`tune` must run before that. The command-line entry points and the test
suite call it; library users may call ``snnjax.xla_cpu.tune()`` first thing. It only touches
jaxlib versions where the flag was verified (an unknown flag aborts the process), never overrides
a value already in ``XLA_FLAGS``, and ``SNNJAX_XLA_TUNING=0`` turns it off.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import MutableMapping

FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
FLAG = f"--{FLAG_NAME}=-individual_convolution"
VERIFIED_JAXLIB = ("0.10.",)


def tune(environ: MutableMapping[str, str] = os.environ) -> bool:
  """Adds the convolution flag to ``environ["XLA_FLAGS"]``; returns whether it did."""
  if environ.get("SNNJAX_XLA_TUNING", "1") == "0":
    return False
  if FLAG_NAME in environ.get("XLA_FLAGS", ""):
    return False
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return False
  if not version.startswith(VERIFIED_JAXLIB):
    return False
  environ["XLA_FLAGS"] = f"{environ.get('XLA_FLAGS', '')} {FLAG}".strip()
  return True


# Environment variables that can change a run's numbers (compilation, precision, device layout).
NUMERICS_ENV = ("SNNJAX_XLA_TUNING", "XLA_FLAGS", "JAX_ENABLE_X64", "JAX_DEFAULT_MATMUL_PRECISION",
                "JAX_NUM_CPU_DEVICES", "JAX_PLATFORMS", "JAX_DEFAULT_DTYPE_BITS")


def numerics_environment(environ: MutableMapping[str, str] = os.environ) -> dict:
  """What of the environment may change a run's numbers, as recorded with the run (its checkpoints'
  meta, ``"environment"``; not part of its identity): whether this module's tuning flag is in
  ``XLA_FLAGS`` (``xla_tuning``), the variables of ``NUMERICS_ENV`` that are set, and the jax and
  jaxlib versions."""
  def version(name):
    try:
      return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      return None
  return {"xla_tuning": FLAG in environ.get("XLA_FLAGS", ""),
          "env": {k: environ[k] for k in NUMERICS_ENV if k in environ},
          "jax": version("jax"), "jaxlib": version("jaxlib")}
