"""Tiny models whose Hessian is cheap to form densely (``jax.hessian`` of the raveled params).

Each loss function is a module-level object, so the estimators' jit caches (keyed on ``loss_fn``)
are shared across tests.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree


class TanhMLP(nn.Module):
  """8 -> 16 (tanh) -> 5: 229 params."""

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(16, name="stem")(x))
    return nn.Dense(5, name="head")(x)


class TinyCNN(nn.Module):
  """(6, 6, 1) -> conv 3x3 x4 -> BatchNorm -> tanh -> spatial mean -> 3 classes: 63 params."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3), name="stem")(x)
    x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
    x = jnp.tanh(x).mean(axis=(1, 2))
    return nn.Dense(3, name="head")(x)


class Linear(nn.Module):
  """20 -> 3 linear softmax regression without bias: 60 params (convex loss: PSD Hessian)."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3, use_bias=False, name="head")(x)


def _xent(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


MLP = TanhMLP()
CNN = TinyCNN()
LINEAR = Linear()


def mlp_loss(params, batch):
  return _xent(MLP.apply({"params": params}, batch["x"]), batch["y"])


def linear_loss(params, batch):
  return _xent(LINEAR.apply({"params": params}, batch["x"]), batch["y"])


def make_mlp(seed: int = 0, n: int = 64):
  """(params, batch) for the MLP: n examples of 8 features, 5 classes."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, 8)).astype(np.float32)
  y = rng.integers(0, 5, n).astype(np.int32)
  params = MLP.init(jax.random.key(seed), x[:1])["params"]
  return params, {"x": x, "y": y, "index": np.arange(n, dtype=np.int32)}


def make_linear(seed: int = 0, n: int = 64):
  """(params, batch) for the linear model; features with decaying scales (fast-decaying
  Hessian spectrum)."""
  rng = np.random.default_rng(seed)
  scales = 0.7 ** np.arange(20)
  x = (rng.standard_normal((n, 20)) * scales).astype(np.float32)
  y = rng.integers(0, 3, n).astype(np.int32)
  params = LINEAR.init(jax.random.key(seed), x[:1])["params"]
  return params, {"x": x, "y": y}


def make_cnn(seed: int = 0, n: int = 32):
  """(params, batch_stats, batch, loss_fn) for the CNN in eval mode; the BatchNorm running
  statistics are set to non-trivial values."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, 6, 6, 1)).astype(np.float32)
  y = rng.integers(0, 3, n).astype(np.int32)
  variables = CNN.init(jax.random.key(seed), x[:1])
  params = variables["params"]
  batch_stats = {"bn": {"mean": jnp.asarray(rng.normal(0, 0.2, 4), jnp.float32),
                        "var": jnp.asarray(rng.uniform(0.5, 2.0, 4), jnp.float32)}}
  return params, batch_stats, {"x": x, "y": y}


def cnn_loss(params, batch, batch_stats):
  logits = CNN.apply({"params": params, "batch_stats": batch_stats}, batch["x"], train=False)
  return _xent(logits, batch["y"])


def concat(batches):
  """The batches' examples as one batch."""
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def split(batch, sizes):
  """One batch as consecutive batches of the given sizes."""
  edges = np.cumsum([0] + list(sizes))
  return [{k: v[a:b] for k, v in batch.items()} for a, b in zip(edges[:-1], edges[1:])]


def dense_hessian(loss_fn, params, data):
  """The Hessian (D, D) of the mean loss over all examples of ``data`` (a batch or a list),
  in ``ravel_pytree`` order, as float64 numpy."""
  batch = concat(data) if isinstance(data, list) else data
  flat, unravel = ravel_pytree(params)
  h = jax.hessian(lambda f: loss_fn(unravel(f), batch))(flat)
  return np.asarray(h, np.float64)


def flat_mask(mask):
  return np.asarray(ravel_pytree(mask)[0]).astype(bool)


def random_mask(params, density: float, seed: int = 0):
  """A bool mask with about ``density`` of each leaf active (at least one active per leaf)."""
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree.flatten(params)
  masks = []
  for leaf in leaves:
    m = rng.random(np.shape(leaf)) < density
    m.flat[0] = True
    masks.append(m)
  return jax.tree.unflatten(treedef, masks)
