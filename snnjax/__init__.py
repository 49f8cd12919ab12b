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


__version__ = "0.1.0"
