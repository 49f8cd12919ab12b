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


def _randomize(tree, key, scale):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
      treedef, [l + scale * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)])


def mlp(key: jax.Array, *, in_dim: int = 6, hidden: Sequence[int] = (12, 12),
        num_classes: int = 4, activation: str = "tanh") -> TinyModel:
  """MLP in_dim -> hidden -> num_classes (292 params with the defaults); biases randomized."""
  module = _MLP(tuple(hidden), num_classes, activation)

  @jax.jit
  def build(key):
    k_init, k_noise = jax.random.split(key)
    params = module.init(k_init, jnp.zeros((1, in_dim)))["params"]
    return _randomize(params, k_noise, 0.3)

  params = build(key)

  def logits_fn(params, x):
    return module.apply({"params": params}, x)

  return TinyModel(params, logits_fn, _loss_fn(logits_fn), (in_dim,), num_classes)


def cnn(key: jax.Array, *, image: tuple[int, int, int] = (6, 6, 2), channels: int = 4,
        num_classes: int = 3, activation: str = "relu") -> TinyModel:
  """Conv-BN-act, strided Conv-BN-act, global average pool, Dense; BN in eval mode.

  The BatchNorm running means/variances and all params are randomized so that every piece of
  the network matters (255 params with the defaults).
  """
  module = _CNN(channels, num_classes, activation)

  @jax.jit
  def build(key):
    k_init, k_noise, k_mean, k_var = jax.random.split(key, 4)
    variables = module.init(k_init, jnp.zeros((1,) + tuple(image)))
    params = _randomize(variables["params"], k_noise, 0.2)
    stats = {
        name: {"mean": 0.3 * jax.random.normal(jax.random.fold_in(k_mean, i), s["mean"].shape),
               "var": jax.random.uniform(jax.random.fold_in(k_var, i), s["var"].shape,
                                         minval=0.5, maxval=2.0)}
        for i, (name, s) in enumerate(sorted(variables["batch_stats"].items()))}
    return params, stats

  params, stats = build(key)

  def logits_fn(params, x):
    return module.apply({"params": params, "batch_stats": stats}, x, train=False)

  return TinyModel(params, logits_fn, _loss_fn(logits_fn), tuple(image), num_classes)


def make_batch(key: jax.Array, model: TinyModel, n: int) -> dict:
  """A batch {"x": (n, *input_shape), "y": (n,) int32, "index": (n,) int32} of Gaussian inputs."""
  seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n,) + model.input_shape).astype(np.float32)
  y = rng.integers(0, model.num_classes, size=(n,)).astype(np.int32)
  return {"x": jnp.asarray(x), "y": jnp.asarray(y), "index": jnp.arange(n, dtype=jnp.int32)}
