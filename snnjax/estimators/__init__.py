"""Curvature and sensitivity estimators over plain JAX functions.

All take ``loss_fn(params, batch) -> scalar`` (mean over the batch) or ``logits_fn(params, x) -> (n, C)``,
``data`` as one batch dict (``"x"``, ``"y"``) or an iterable of them, and an optional ``mask`` pytree;
they return :class:`Estimate` (``value``, ``stderr``, ``num_examples``, ``num_probes``, ``extra``).
"""

from snnjax.estimators._base import Estimate
from snnjax.estimators.fisher import fisher_trace, ggn_trace, per_example_grad_norms, per_example_grads
from snnjax.estimators.hessian import hessian_trace, hvp, hvp_over_data
from snnjax.estimators.jacobian import jacobian_norm
from snnjax.estimators.lanczos import power_iteration, spectral_density, top_eigenvalues
from snnjax.estimators.param_subsets import combine_masks, param_subset_mask

__all__ = [
    "Estimate", "combine_masks", "fisher_trace", "ggn_trace", "hessian_trace", "hvp", "hvp_over_data",
    "jacobian_norm", "param_subset_mask", "per_example_grad_norms", "per_example_grads",
    "power_iteration", "spectral_density", "top_eigenvalues",
]
