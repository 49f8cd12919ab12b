"""The CPU's model name, shared by the JAX and the PyTorch benchmarks (stdlib only: the PyTorch
side runs in its own venv without snnjax)."""

import platform


def cpu_model() -> str:
  """``model name`` from /proc/cpuinfo, else ``platform.processor()`` (or "unknown")."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"
