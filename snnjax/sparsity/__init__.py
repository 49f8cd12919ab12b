"""Sparsity layer: masks over params pytrees (no knowledge of models).

A mask has the params' structure with bool leaves (True = active); see ``ARCHITECTURE.md``.
"""

from snnjax.sparsity import dynamic
from snnjax.sparsity import init_scores
from snnjax.sparsity.builders import erk_mask
from snnjax.sparsity.builders import magnitude_mask
from snnjax.sparsity.builders import random_mask
from snnjax.sparsity.builders import score_mask
from snnjax.sparsity.erk import erk_counts
from snnjax.sparsity.erk import erk_densities
from snnjax.sparsity.masks import apply_mask
from snnjax.sparsity.masks import check_mask
from snnjax.sparsity.masks import count_params
from snnjax.sparsity.masks import dense_mask
from snnjax.sparsity.masks import density
from snnjax.sparsity.masks import density_table
from snnjax.sparsity.masks import layer_densities
from snnjax.sparsity.masks import sparsity_of
from snnjax.sparsity.selection import path_str
from snnjax.sparsity.selection import prunable
from snnjax.sparsity.sparse_init import active_fan_in
from snnjax.sparsity.sparse_init import shuffle_mask
from snnjax.sparsity.sparse_init import sparse_aware_init

__all__ = [
    "active_fan_in", "apply_mask", "check_mask", "dynamic", "count_params", "dense_mask", "density",
    "density_table", "erk_counts", "erk_densities", "erk_mask", "init_scores", "layer_densities",
    "magnitude_mask", "path_str", "prunable", "random_mask", "score_mask", "shuffle_mask",
    "sparse_aware_init", "sparsity_of",
]
