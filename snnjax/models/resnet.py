"""CIFAR ResNets (He et al. 2016, section 4.2) and the study's 4x-wide ResNet-32.

``3x3 conv stem -> 3 stages of n basic blocks (16, 32, 64 channels x width, strides 1, 2, 2)
-> global average pool -> head``; depth = 6n + 2 (ResNet-20/32/56: n = 3/5/9). Basic blocks are
post-activation: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

Shortcuts where the shape changes (stride 2 and/or more channels):

* ``"A"`` (parameter-free, as in the paper's CIFAR models): subsample every other pixel
  (``x[:, ::2, ::2]``) and zero-pad the channels, half the new channels on each side;
* ``"B"``: a 1x1 conv with that stride (``shortcut_conv``) followed by BatchNorm
  (``shortcut_bn``).

Elsewhere the shortcut is the identity. ResNet-32 with option A has 464,154 params for 10
classes. Names: ``stem``/``stem_bn``, ``stage{s}_block{b}`` (s = 1..3, b = 0..n-1) holding
``conv1``/``bn1``/``conv2``/``bn2`` (and ``shortcut_conv``/``shortcut_bn``), ``head``.
Convolutions pad 1 on each side (PyTorch ``padding=1``) and have no bias.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from snnjax.models import initializers

SHORTCUTS = ("A", "B")


def materialize(x: jax.Array) -> jax.Array:
  """An exact identity that XLA computes once into a buffer instead of recomputing it in consumers.

  XLA:CPU computes each kernel gradient from a transposed copy of the layer's input and fuses the
  *computation* of that input into the transpose; for the residual stream that recomputes BatchNorm,
  add and relu of every earlier block of the stage (BENCHMARKS.md, section 5). XLA never duplicates
  an expensive producer such as a divide, so dividing by a 1.0 it cannot constant-fold keeps the
  tensor materialized (``optimization_barrier`` does not: XLA:CPU removes barriers before fusion).
  ``0 * x[0]`` is 0 even for inf/nan entries thanks to ``nan_to_num``; the gradient is ``g / 1``.
  """
  one = 1 + jnp.nan_to_num(0 * jax.lax.stop_gradient(x.reshape(-1)[0]))
  return x / one


def _maybe_materialize(x: jax.Array, enabled: bool | None) -> jax.Array:
  if enabled is None:
    enabled = jax.default_backend() == "cpu"
  return materialize(x) if enabled else x
STAGE_CHANNELS = (16, 32, 64)


def _conv(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), strides=stride, padding=kernel // 2,
                 use_bias=False, kernel_init=initializers.kaiming_normal_fan_out, name=name)


def _bn(train: bool, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=initializers.BN_MOMENTUM,
                      epsilon=initializers.BN_EPSILON, name=name)


class BasicBlock(nn.Module):
  """Post-activation basic block: two 3x3 convs with BatchNorm and a shortcut."""

  features: int
  stride: int = 1
  shortcut: str = "A"
  materialize: bool | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """(n, H, W, C_in) -> (n, H / stride, W / stride, features)."""
    y = _conv(self.features, 3, self.stride, "conv1")(x)
    y = _maybe_materialize(nn.relu(_bn(train, "bn1")(y)), self.materialize)
    y = _conv(self.features, 3, 1, "conv2")(y)
    y = _bn(train, "bn2")(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      if self.shortcut == "B":
        x = _bn(train, "shortcut_bn")(_conv(self.features, 1, self.stride, "shortcut_conv")(x))
      else:
        x = x[:, ::self.stride, ::self.stride, :]
        extra = self.features - x.shape[-1]
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return _maybe_materialize(nn.relu(y + x), self.materialize)


class ResNet(nn.Module):
  """CIFAR ResNet of depth ``6 * num_blocks + 2``.

  Attributes:
    num_classes: output width.
    num_blocks: basic blocks per stage (3 -> ResNet-20, 5 -> ResNet-32, 9 -> ResNet-56).
    width: channel multiplier: stage channels are ``round(c * width)`` for c in
      ``stage_channels``; the stem has the first stage's width.
    shortcut: ``"A"`` or ``"B"`` (module doc).
    stage_channels: base channels of the three stages.
    materialize: keep block activations materialized (``materialize``): applied to the stem's
      output, each block's ``relu(bn1(conv1(x)))`` and each block's output (the residual stream).
      None = on for the CPU backend only (where it makes a train step ~1.4x faster; other
      backends were not measured); False switches it off (``registry.create_model(...,
      materialize=False)``): the same function and gradients to float rounding
      (tests/test_resnet.py).
  """

  num_classes: int
  num_blocks: int = 5
  width: float = 1.0
  shortcut: str = "A"
  stage_channels: Sequence[int] = STAGE_CHANNELS
  materialize: bool | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """(n, H, W, C) images -> (n, num_classes) logits."""
    widths = [int(round(c * self.width)) for c in self.stage_channels]
    x = _conv(widths[0], 3, 1, "stem")(x)
    x = _maybe_materialize(nn.relu(_bn(train, "stem_bn")(x)), self.materialize)
    for s, features in enumerate(widths):
      for b in range(self.num_blocks):
        stride = 2 if (s > 0 and b == 0) else 1
        x = BasicBlock(features, stride, self.shortcut, self.materialize,
                       name=f"stage{s + 1}_block{b}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return initializers.head(self.num_classes)(x)
