"""Curvature and sensitivity estimators over plain JAX functions.

All take ``loss_fn(params, batch) -> scalar`` (mean over the batch) or ``logits_fn(params, x) ->
(n, C)``, ``data`` as one batch dict (``"x"``, ``"y"``) or an iterable of them, an optional
``mask`` pytree and ``devices`` (None, ``"all"`` or a sequence of devices to shard the examples
over). Fisher-type functions say which labels they use with ``labels="exact" | "sampled" |
"data"``; those with per-example gradients take ``cpu_rewrites`` (grouped convolutions as dots,
None = on CPU only). Results: :class:`Estimate` (``value``, ``stderr``, ``num_examples``,
``num_probes``, ``extra``, ``blocks``) for traces and norms, :class:`DiagonalEstimate` for
diagonals (param-shaped pytrees), :class:`EigenResult` for eigenvalues and
``lanczos.SpectralDensity`` for spectral densities. Per-block (leaf / layer / user grouping)
answers: ``blocks=`` (``snnjax.estimators.blocks``). Compilations and the persistent cache
(``$SNNJAX_COMPILATION_CACHE``): ``snnjax.estimators.compilation``.
"""

from snnjax.estimators import compilation as _compilation
from snnjax.estimators import likelihoods
from snnjax.estimators._base import EigenResult, Estimate
from snnjax.estimators.blocks import leaf_paths, make_blocks
from snnjax.estimators.compilation import count_compilations, enable_persistent_cache
from snnjax.estimators.diagonals import DiagonalEstimate, fisher_diagonal, hessian_diagonal
from snnjax.estimators.fisher import (BlockSqNorms, GradDots, fisher_trace, ggn_trace,
                                      labels_for_kind, per_example_grad_dots,
                                      per_example_grad_norms, per_example_grads,
                                      per_example_sqnorms_by_block)
from snnjax.estimators.hessian import hessian_trace, hvp, hvp_over_data
from snnjax.estimators.jacobian import jacobian_norm
from snnjax.estimators.lanczos import (SpectralDensity, power_iteration, spectral_density,
                                       top_eigenvalues)
from snnjax.estimators.likelihoods import Bernoulli, Categorical, Custom, Gaussian, Likelihood
from snnjax.estimators.operators import (LinearOperator, diagonal, fisher_operator, ggn_operator,
                                         hessian_operator, trace)
from snnjax.estimators.param_subsets import combine_masks, param_subset_mask
from snnjax.estimators.sketch import xdiag, xtrace

_compilation.enable_from_env()  # opt-in: $SNNJAX_COMPILATION_CACHE=/dir

__all__ = [
    "Bernoulli", "BlockSqNorms", "Categorical", "Custom", "DiagonalEstimate", "EigenResult",
    "Estimate", "Gaussian", "GradDots", "Likelihood", "LinearOperator", "SpectralDensity",
    "combine_masks", "count_compilations", "diagonal", "enable_persistent_cache",
    "fisher_diagonal", "fisher_operator", "fisher_trace", "ggn_operator", "ggn_trace",
    "hessian_diagonal", "hessian_operator", "hessian_trace", "hvp", "hvp_over_data",
    "jacobian_norm", "labels_for_kind", "leaf_paths", "likelihoods", "make_blocks",
    "param_subset_mask", "per_example_grad_dots", "per_example_grad_norms", "per_example_grads",
    "per_example_sqnorms_by_block", "power_iteration", "spectral_density", "top_eigenvalues",
    "trace", "xdiag", "xtrace",
]
