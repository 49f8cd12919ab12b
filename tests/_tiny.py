"""Tiny models and exact references shared by every estimator test.

Models (plain ``logits_fn(params, x)`` / ``loss_fn(params, batch)`` closures over flax modules;
``params`` is the plain ``"params"`` collection; the loss is the mean cross-entropy over the
batch's examples):

* :func:`mlp`: a 2-hidden-layer MLP (tanh or relu), a few hundred params;
* :func:`cnn`: two 3x3 convs with BatchNorm in eval mode (random running statistics, so the
  normalization is not the identity), global average pooling and a dense head;
* :func:`linear`: 20 -> 3 softmax regression without bias (convex loss, PSD Hessian, fast-decaying
  spectrum).

Fixtures, built on first use and cached for the test process (``functools.cache``), never at
import time:

* :func:`classifier` (name -> ``(TinyModel, batch)``) for the Fisher / Jacobian tests;
* :func:`curvature` (name -> ``(TinyModel, batch)``) for the Hessian / Lanczos tests, and
  :func:`hessian` (name -> the dense Hessian of the mean loss over that batch, float64);
* exact per-example references by explicit loops over examples and classes:
  :func:`loop_label_sqnorms`, :func:`loop_exact_fisher`, :func:`log_prob_grad`.

Each model's functions are created once per process, so the estimators' jit caches (keyed on
``logits_fn`` / ``loss_fn``) are shared across test files.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": nn.relu}


class TinyModel(NamedTuple):
  params: Any
  logits_fn: Callable[[Any, jax.Array], jax.Array]
  loss_fn: Callable[[Any, dict], jax.Array]
  input_shape: tuple[int, ...]
  num_classes: int


# ------------------------------------------------------------------------------------------------
# Modules and their functions.


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
  strided: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    act = _ACTIVATIONS[self.activation]
    x = nn.Conv(self.channels, (3, 3), name="stem")(x)
    x = act(nn.BatchNorm(use_running_average=not train, name="bn0")(x))
    if self.strided:
      x = nn.Conv(self.channels, (3, 3), strides=(2, 2), name="conv1")(x)
      x = act(nn.BatchNorm(use_running_average=not train, name="bn1")(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="head")(x)


class _Linear(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_classes, use_bias=False, name="head")(x)


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
        num_classes: int = 3, activation: str = "relu", strided: bool = True) -> TinyModel:
  """Conv-BN-act, (strided Conv-BN-act,) global average pool, Dense; BN in eval mode.

  The BatchNorm running means/variances and all params are random so that every piece of the
  network matters (255 params with the defaults).
  """
  module = _CNN(channels, num_classes, activation, strided)
  params, stats = _numpy_params(module, jnp.zeros((1,) + tuple(image)),
                                np.random.default_rng(seed))

  def logits_fn(params, x):
    return module.apply({"params": params, "batch_stats": stats}, x, train=False)

  return TinyModel(params, logits_fn, _loss_fn(logits_fn), tuple(image), num_classes)


def linear(seed: int = 0, *, in_dim: int = 20, num_classes: int = 3) -> TinyModel:
  """Linear softmax regression without bias (60 params with the defaults)."""
  module = _Linear(num_classes)
  params, _ = _numpy_params(module, jnp.zeros((1, in_dim)), np.random.default_rng(seed))

  def logits_fn(params, x):
    return module.apply({"params": params}, x)

  return TinyModel(params, logits_fn, _loss_fn(logits_fn), (in_dim,), num_classes)


def make_batch(seed: int, model: TinyModel, n: int, *, scales: np.ndarray | None = None) -> dict:
  """{"x": (n, *input_shape), "y": (n,) int32, "index": (n,) int32} of Gaussian inputs (numpy).

  ``scales`` multiplies the features (broadcast over the input shape).
  """
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n,) + model.input_shape)
  if scales is not None:
    x = x * scales
  y = rng.integers(0, model.num_classes, size=(n,)).astype(np.int32)
  return {"x": x.astype(np.float32), "y": y, "index": np.arange(n, dtype=np.int32)}


# ------------------------------------------------------------------------------------------------
# Cached fixtures.

_CLASSIFIERS = {
    "mlp": lambda: mlp(0),
    "cnn": lambda: cnn(1),
    "relu_mlp": lambda: mlp(4, activation="relu"),
    "relu_cnn": lambda: cnn(5, activation="relu"),
    "tanh_mlp": lambda: mlp(4, activation="tanh"),
}
_CLASSIFIER_BATCHES = {"mlp": (2, 7), "cnn": (2, 7), "relu_mlp": (6, 8), "relu_cnn": (6, 8),
                       "tanh_mlp": (6, 8)}

# Curvature fixtures: bigger batches (the Hessian of a mean over many examples), small models.
_CURVATURE = {
    "mlp": (lambda: mlp(10, in_dim=8, hidden=(16,), num_classes=5), 64, None),  # 229 params
    "cnn": (lambda: cnn(11, image=(6, 6, 1), num_classes=3, activation="tanh", strided=False),
            32, None),  # 63 params
    "linear": (lambda: linear(12), 64, 0.7 ** np.arange(20)),  # 60 params
}


@functools.cache
def classifier(name: str) -> tuple[TinyModel, dict]:
  """(model, batch) for the Fisher and Jacobian tests: ``"mlp"``, ``"cnn"`` (7 examples), and
  ``"relu_mlp"``, ``"relu_cnn"``, ``"tanh_mlp"`` (8 examples) for the trace identity."""
  model = _CLASSIFIERS[name]()
  seed, n = _CLASSIFIER_BATCHES[name]
  return model, make_batch(seed, model, n)


@functools.cache
def curvature(name: str) -> tuple[TinyModel, dict]:
  """(model, batch) for the Hessian and Lanczos tests: ``"mlp"`` (229 params, 64 examples),
  ``"cnn"`` (63 params, 32 examples, eval-mode BatchNorm), ``"linear"`` (60 params, 64
  examples with decaying feature scales: a fast-decaying PSD spectrum)."""
  make, n, scales = _CURVATURE[name]
  model = make()
  return model, make_batch(100 + len(name), model, n, scales=scales)


def dense_hessian(loss_fn, params, data) -> np.ndarray:
  """The Hessian (D, D) of the mean loss over all examples of ``data`` (a batch or a list),
  in ``ravel_pytree`` order, as float64 numpy."""
  batch = concat(data) if isinstance(data, list) else data
  flat, unravel = ravel_pytree(params)
  h = jax.jit(jax.hessian(lambda f: loss_fn(unravel(f), batch)))(flat)
  return np.asarray(h, np.float64)


@functools.cache
def hessian(name: str, fixture: str = "curvature") -> np.ndarray:
  """Dense Hessian of the mean loss of ``curvature(name)`` (or ``classifier(name)``)."""
  model, batch = (curvature if fixture == "curvature" else classifier)(name)
  return dense_hessian(model.loss_fn, model.params, batch)


@functools.cache
def eigvalsh(name: str) -> np.ndarray:
  """Eigenvalues of :func:`hessian` (name), descending."""
  return np.linalg.eigvalsh(hessian(name))[::-1]


# ------------------------------------------------------------------------------------------------
# Exact per-example references (explicit loops).


@functools.cache
def log_prob_grad(name: str) -> Callable:
  """jitted grad_params log softmax(logits(x))[c] for one example x and class c."""
  model, _ = classifier(name)

  def log_prob(params, x, c):
    return jax.nn.log_softmax(model.logits_fn(params, x[None])[0])[c]
  return jax.jit(jax.grad(log_prob))


def sqnorm(tree, mask=None) -> float:
  if mask is not None:
    tree = jax.tree.map(lambda g, m: g * m, tree, mask)
  return float(sum(np.sum(np.square(np.asarray(g, np.float64))) for g in jax.tree.leaves(tree)))


def loop_label_sqnorms(name: str, x, labels, mask=None) -> np.ndarray:
  """||mask * grad log p_{labels[i]}(x[i])||^2 per example, one gradient call each."""
  model, _ = classifier(name)
  grad_fn = log_prob_grad(name)
  return np.array([sqnorm(grad_fn(model.params, xi, int(y)), mask) for xi, y in zip(x, labels)])


def _loop_exact_fisher(name, mask=None) -> np.ndarray:
  model, batch = classifier(name)
  grad_fn = log_prob_grad(name)
  probs = np.asarray(jax.nn.softmax(jax.jit(model.logits_fn)(model.params, batch["x"])),
                     np.float64)
  return np.array([sum(p[c] * sqnorm(grad_fn(model.params, x, c), mask)
                       for c in range(model.num_classes))
                   for x, p in zip(batch["x"], probs)])


@functools.cache
def loop_exact_fisher(name: str, mask_seed: int | None = None) -> np.ndarray:
  """sum_c p_c ||mask * grad log p_c||^2 per example of ``classifier(name)``, mask
  ``random_mask(params, 0.6, mask_seed)`` (None: dense)."""
  model, _ = classifier(name)
  mask = None if mask_seed is None else random_mask(model.params, 0.6, mask_seed)
  return _loop_exact_fisher(name, mask)


# ------------------------------------------------------------------------------------------------
# Small helpers.


def concat(batches):
  """The batches' examples as one batch."""
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def split(batch, sizes):
  """One batch as consecutive batches of the given sizes."""
  edges = np.cumsum([0] + list(sizes))
  return [{k: v[a:b] for k, v in batch.items()} for a, b in zip(edges[:-1], edges[1:])]


def flat(tree) -> np.ndarray:
  return np.asarray(ravel_pytree(tree)[0], np.float64)


def flat_mask(mask) -> np.ndarray:
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
