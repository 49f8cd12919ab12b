"""Multi-layer perceptron: flatten, hidden Dense layers, classifier ``head``."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from snnjax.models import initializers

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}


class MLP(nn.Module):
  """``x -> flatten -> [Dense -> activation] * len(hidden_sizes) -> head``.

  The first hidden layer is named ``stem``, the others ``hidden_1``, ``hidden_2``, ...; the
  classifier is ``head`` (with no hidden layers, ``head`` is the only layer). No BatchNorm, so
  the model has no ``batch_stats`` and ``train`` changes nothing.

  Attributes:
    num_classes: output width.
    hidden_sizes: widths of the hidden layers.
    activation: ``"relu"`` or ``"tanh"``.
  """

  num_classes: int
  hidden_sizes: Sequence[int] = (100, 100)
  activation: str = "relu"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """(n, ...) inputs -> (n, num_classes) logits."""
    del train  # No dropout or BatchNorm.
    act = ACTIVATIONS[self.activation]
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden_sizes):
      x = nn.Dense(width, kernel_init=initializers.kaiming_normal_fan_out,
                   bias_init=initializers.zeros, name="stem" if i == 0 else f"hidden_{i}")(x)
      x = act(x)
    return initializers.head(self.num_classes)(x)
