"""snnjax: sparse-network generalization studies in JAX/Flax."""

__version__ = "0.1.0"
