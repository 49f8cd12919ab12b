"""Sparsity layer: masks over params pytrees (no knowledge of models).

A mask has the params' structure with bool leaves (True = active); see ``ARCHITECTURE.md``.
"""

from snnjax.sparsity import dynamic
from snnjax.sparsity.builders import erk_mask
from snnjax.sparsity.builders import magnitude_mask
from snnjax.sparsity.builders import random_mask
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

__all__ = [
    "apply_mask", "check_mask", "dynamic", "count_params", "dense_mask", "density", "density_table",
    "erk_counts", "erk_densities", "erk_mask", "layer_densities", "magnitude_mask", "path_str",
    "prunable", "random_mask", "sparsity_of",
]
