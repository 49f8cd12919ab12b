"""snnjax: sparse-network generalization studies in JAX/Flax.

Layers (each imports only those before it): ``snnjax.data``, ``snnjax.models``, ``snnjax.sparsity``,
``snnjax.train``, ``snnjax.estimators`` (plain JAX functions only), ``snnjax.studies``.
"""

from snnjax import estimators
from snnjax.errors import MaskMismatchError, UserError
from snnjax.estimators import (Estimate, fisher_trace, hessian_trace, hvp, jacobian_norm,
                               per_example_grad_norms, per_example_grads, spectral_density,
                               top_eigenvalues)


def load_solution(path, **kwargs):
  """Loads a run's solution (see :func:`snnjax.train.load_solution`)."""
  from snnjax.train.solution import load_solution as _load  # pylint: disable=import-outside-toplevel
  return _load(path, **kwargs)


def interpolate(a, b, **kwargs):
  """Loss, accuracy and barrier along the segment between two checkpoints (see
  :func:`snnjax.studies.interpolate.interpolate` for the arguments and the result)."""
  from snnjax.studies.interpolate import interpolate as _interpolate  # pylint: disable=import-outside-toplevel
  return _interpolate(a, b, **kwargs)


__all__ = ["Estimate", "MaskMismatchError", "UserError", "estimators", "fisher_trace",
           "hessian_trace", "hvp", "interpolate", "jacobian_norm", "load_solution",
           "per_example_grad_norms", "per_example_grads", "spectral_density", "top_eigenvalues"]

__version__ = "0.1.0"
