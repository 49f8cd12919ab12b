"""Tiny models for estimator tests: plain ``logits_fn(params, x)`` / ``loss_fn(params, batch)``.

* :func:`mlp`: a 2-hidden-layer MLP (tanh or relu), a few hundred params;
* :func:`cnn`: two 3x3 convs with BatchNorm in eval mode (random running statistics, so the
  normalization is not the identity), global average pooling and a dense head.

Both are flax.linen modules wrapped into closures over the module (and the CNN's
``batch_stats``); ``params`` is the plain ``"params"`` collection dict. The loss is the mean
cross-entropy over the batch's examples.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": nn.relu}


class TinyModel(NamedTuple):
  params: Any
  logits_fn: Callable[[Any, jax.Array], jax.Array]
  loss_fn: Callable[[Any, dict], jax.Array]
  input_shape: tuple[int, ...]
  num_classes: int


class _MLP(nn.Module):
  hidden: Sequence[int]
  num_classes: int
  activation: str

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x = _ACTIVATIONS[self.activation](nn.Dense(width, name="stem" if i == 0 else f"dense{i}")(x))
    return nn.Dense(self.num_classes, name="head")(x)


class _CNN(nn.Module):
  channels: int
  num_classes: int
  activation: str

  @nn.compact
  def __call__(self, x, train: bool = False):
    act = _ACTIVATIONS[self.activation]
    x = nn.Conv(self.channels, (3, 3), name="stem")(x)
    x = act(nn.BatchNorm(use_running_average=not train, name="bn0")(x))
    x = nn.Conv(self.channels, (3, 3), strides=(2, 2), name="conv1")(x)
    x = act(nn.BatchNorm(use_running_average=not train, name="bn1")(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="head")(x)


def _loss_fn(logits_fn):
  def loss_fn(params, batch):
    logits = logits_fn(params, batch["x"])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))
  return loss_fn


def _numpy_params(module, x, rng):
  """Random params for ``module`` from its shapes (``jax.eval_shape``: nothing is compiled).

  Kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.3^2), BatchNorm scales ~ 1 + N(0, 0.2^2).
  Returns (params, batch_stats) with random running means and variances in [0.5, 2].
  """
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      value = rng.standard_normal(leaf.shape) / np.sqrt(fan_in)
    elif name == "scale":
      value = 1.0 + 0.2 * rng.standard_normal(leaf.shape)
    elif name == "mean":
      value = 0.3 * rng.standard_normal(leaf.shape)
    elif name == "var":
      value = rng.uniform(0.5, 2.0, leaf.shape)
    else:
      value = 0.3 * rng.standard_normal(leaf.shape)
    return jnp.asarray(value, jnp.float32)

  variables = jax.tree_util.tree_map_with_path(draw, shapes)
  return variables["params"], variables.get("batch_stats", {})


def mlp(seed: int = 0, *, in_dim: int = 6, hidden: Sequence[int] = (12, 12),
        num_classes: int = 4, activation: str = "tanh") -> TinyModel:
  """MLP in_dim -> hidden -> num_classes (292 params with the defaults)."""
  module = _MLP(tuple(hidden), num_classes, activation)
  params, _ = _numpy_params(module, jnp.zeros((1, in_dim)), np.random.default_rng(seed))

  def logits_fn(params, x):
    return module.apply({"params": params}, x)

  return TinyModel(params, logits_fn, _loss_fn(logits_fn), (in_dim,), num_classes)


def cnn(seed: int = 0, *, image: tuple[int, int, int] = (6, 6, 2), channels: int = 4,
        num_classes: int = 3, activation: str = "relu") -> TinyModel:
  """Conv-BN-act, strided Conv-BN-act, global average pool, Dense; BN in eval mode.

  The BatchNorm running means/variances and all params are random so that every piece of the
  network matters (255 params with the defaults).
  """
  module = _CNN(channels, num_classes, activation)
  params, stats = _numpy_params(module, jnp.zeros((1,) + tuple(image)),
                                np.random.default_rng(seed))

  def logits_fn(params, x):
    return module.apply({"params": params, "batch_stats": stats}, x, train=False)

  return TinyModel(params, logits_fn, _loss_fn(logits_fn), tuple(image), num_classes)


def make_batch(seed: int, model: TinyModel, n: int) -> dict:
  """A batch {"x": (n, *input_shape), "y": (n,) int32, "index": (n,) int32} of Gaussian inputs."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n,) + model.input_shape).astype(np.float32)
  y = rng.integers(0, model.num_classes, size=(n,)).astype(np.int32)
  return {"x": jnp.asarray(x), "y": jnp.asarray(y), "index": jnp.arange(n, dtype=jnp.int32)}
