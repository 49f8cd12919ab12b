"""Curvature and sensitivity estimators over plain JAX functions.

All take ``loss_fn(params, batch) -> scalar`` (mean over the batch) or ``logits_fn(params, x) ->
(n, C)``, ``data`` as one batch dict (``"x"``, ``"y"``) or an iterable of them, an optional
``mask`` pytree and ``devices`` (None, ``"all"`` or a sequence of devices to shard the examples
over). Fisher-type functions say which labels they use with ``labels="exact" | "sampled" |
"data"``; those with per-example gradients take ``cpu_rewrites`` (grouped convolutions as dots,
None = on CPU only). Results: :class:`Estimate` (``value``, ``stderr``, ``num_examples``,
``num_probes``, ``extra``) for traces and norms, :class:`EigenResult` for eigenvalues and
``lanczos.SpectralDensity`` for spectral densities.
"""

from snnjax.estimators._base import EigenResult, Estimate
from snnjax.estimators.fisher import (GradDots, fisher_trace, ggn_trace, labels_for_kind,
                                      per_example_grad_dots, per_example_grad_norms,
                                      per_example_grads)
from snnjax.estimators.hessian import hessian_trace, hvp, hvp_over_data
from snnjax.estimators.jacobian import jacobian_norm
from snnjax.estimators.lanczos import (SpectralDensity, power_iteration, spectral_density,
                                       top_eigenvalues)
from snnjax.estimators.param_subsets import combine_masks, param_subset_mask

__all__ = [
    "EigenResult", "Estimate", "GradDots", "SpectralDensity", "combine_masks", "fisher_trace",
    "ggn_trace", "hessian_trace", "hvp", "hvp_over_data", "jacobian_norm", "labels_for_kind",
    "param_subset_mask", "per_example_grad_dots", "per_example_grad_norms", "per_example_grads",
    "power_iteration", "spectral_density", "top_eigenvalues",
]
