"""A small convolutional network with BatchNorm, for 8x8 digits up to 32x32 CIFAR images."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from snnjax.models import initializers


class CNN(nn.Module):
  """``[conv3x3 -> BN -> relu] * len(channels) -> global average pool -> head``.

  Layers: ``stem`` (+ ``stem_bn``), then ``conv1`` (+ ``bn1``), ``conv2`` (+ ``bn2``), ...
  Convolutions have no bias (BatchNorm follows) and pad 1 on each side, so a stride-2 layer
  halves an even H, W exactly as PyTorch's ``padding=1``.

  Attributes:
    num_classes: output width.
    channels: output channels per conv layer.
    strides: stride per conv layer (same length as ``channels``).
  """

  num_classes: int
  channels: Sequence[int] = (32, 64, 64)
  strides: Sequence[int] = (1, 2, 2)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """(n, H, W, C) images -> (n, num_classes) logits."""
    for i, (width, stride) in enumerate(zip(self.channels, self.strides)):
      conv_name, bn_name = ("stem", "stem_bn") if i == 0 else (f"conv{i}", f"bn{i}")
      x = nn.Conv(width, (3, 3), strides=stride, padding=1, use_bias=False,
                  kernel_init=initializers.kaiming_normal_fan_out, name=conv_name)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=initializers.BN_MOMENTUM,
                       epsilon=initializers.BN_EPSILON, name=bn_name)(x)
      x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))
    return initializers.head(self.num_classes)(x)
