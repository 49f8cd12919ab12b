"""The model's output distribution: what the Fisher, the GGN and the per-example gradients mean.

Every per-example estimator (``fisher``, ``diagonals.fisher_diagonal``, ``jacobian``) takes
``likelihood=``: a name (``"categorical"``, ``"gaussian"``, ``"bernoulli"``) or an instance of
the classes below. It says how the outputs f = ``logits_fn(params, x)[i]`` of one example
(shape ``S``, the output without its example axis) define log p(y | f):

* :class:`Categorical` (the default, softmax cross-entropy): classes on the LAST axis. Outputs
  (n, C) are one label per example; outputs (n, T, V) (tokens) are T independent labels per
  example, y of shape (n, T).
* :class:`Gaussian` (``variance`` fixed, default 1: the MSE loss ||y - f||^2 / (2 variance)):
  outputs of any shape, (n,), (n, k) or (n, T, k); y real, of the outputs' shape.
* :class:`Bernoulli` (sigmoid, multi-label binary cross-entropy): each output entry the logit of
  an independent binary label; y in [0, 1] of the outputs' shape.
* :class:`Custom`: the user's negative log-likelihood ``nll(f, y) -> scalar`` of one example, a
  ``sample(key, f) -> y`` for sampled labels, and ``hessian(f) -> (D, D)`` (D = size of f),
  the Hessian of the NLL in f, for the exact modes (exact Fisher / GGN). Without ``hessian`` the
  exact modes raise a UserError.

**Positions and averaging.** The per-example log-likelihood is the SUM over its independent
labels (positions). ``positions(S)`` is the number of positions a per-example value is divided
by: for Categorical, Gaussian and Bernoulli the product of the output's axes except the last
(1 for (n,), (n, k) outputs; T for (n, T, V) or (n, T, k)); for Custom 1. Fisher and GGN
traces and diagonals are then means over examples AND positions (per-token averages for token
outputs): the GGN of the loss averaged over examples and positions, with the position loss
summed over the last axis (Gaussian, Bernoulli) or the class NLL (Categorical). Per-example
gradients are of the example's summed NLL (not divided).

In output space, the exact Fisher (= the Hessian of the NLL in f, for these exponential
families in their natural parameters) is written as sum_k w_k u_k u_k^T
(:meth:`Likelihood.fisher_factor`): Categorical u = e_c - p per position, w = p_c (K = P x V);
Gaussian u = e_d, w = 1 / variance; Bernoulli u = e_d, w = s (1 - s); Custom: the eigenpairs of
``hessian(f)``. Then Tr(J^T F J) = sum_k w_k ||J^T u_k||^2 and diag(J^T F J) = sum_k w_k (J^T
u_k)^2, one VJP per k. The score d log p(y | f) / df (:meth:`Likelihood.score`) gives the
gradient of a label's log-likelihood, J^T score.

**Precision.** A confidently predicted label makes the score small: 1 - p_y for the categorical
(1 - s for the Bernoulli) is then a difference of two nearly equal float32 numbers, whose rounding
error (~6e-8 absolute) becomes ~6e-8 / (1 - p_y) relative, and all of it goes into the example's
gradient (9e-4 relative on every leaf of a ResNet-20 at 1 - p_y = 5e-5, the same for a plain
float32 ``jax.grad`` of ``log_softmax``). The complements are therefore computed without that
subtraction: 1 - p_c as the sum of the other classes' probabilities where p_c > 1/2
(:func:`softmax_complement`), 1 - s as sigmoid(-f); the per-example gradients then agree with a
float64 reference to the forward pass's own float32 rounding (tests/test_per_example_precision.py).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import UserError

NAMES = ("categorical", "gaussian", "bernoulli")


class Likelihood(abc.ABC):
  """Base class: the per-example output distribution p(y | f) (module doc).

  Methods take ONE example's outputs f (shape S, float32) and are traced inside jit.
  """

  name = "likelihood"

  def check_outputs(self, shape: tuple[int, ...]) -> None:
    """Raises UserError when per-example outputs of ``shape`` do not fit this likelihood."""

  def positions(self, shape: tuple[int, ...]) -> int:
    """Number of independent label positions a per-example value is averaged over."""
    return math.prod(shape[:-1]) if len(shape) >= 1 else 1

  @abc.abstractmethod
  def check_labels(self, y: Any, n: int, shape: tuple[int, ...], what: str) -> np.ndarray:
    """The data labels of n examples, checked and cast for the device (host numpy)."""

  def dummy_labels(self, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Placeholder labels (n, ...) where no data labels are used."""
    return np.zeros((n,), np.int32)

  @abc.abstractmethod
  def score(self, f: jax.Array, y: Any) -> jax.Array:
    """d log p(y | f) / df, shape S (J^T of it is the gradient of log p(y | f))."""

  @abc.abstractmethod
  def sample(self, key: jax.Array, f: jax.Array, num: int) -> Any:
    """``num`` labels drawn from p(. | f), stacked on a leading axis."""

  @abc.abstractmethod
  def fisher_factor(self, f: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(U (K, *S), w (K,)) with sum_k w_k u_k u_k^T the output-space Fisher / NLL Hessian."""

  def hessian(self, f: jax.Array) -> jax.Array:
    """The Hessian (D, D) of the per-example NLL in the flattened outputs f (D = f.size)."""
    u, w = self.fisher_factor(f)
    u = u.reshape(u.shape[0], -1)
    return (u.T * w[None, :]) @ u

  @abc.abstractmethod
  def nll(self, f: jax.Array, y: Any) -> jax.Array:
    """The per-example negative log-likelihood (summed over positions), a scalar."""


def softmax_complement(f: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(p, 1 - p) for p = softmax(f) over the last axis, float32, 1 - p without cancellation.

  Only the largest probability of a row can exceed 1/2; there 1 - p is the sum of the row's other
  probabilities (terms >= 0, so accurate to float32 rounding relative to itself), elsewhere
  1 - p >= 1/2 loses nothing. Ties for the largest are each <= 1/2.
  """
  f = f.astype(jnp.float32)
  p = jax.nn.softmax(f, axis=-1)
  top = jax.nn.one_hot(jnp.argmax(f, axis=-1), f.shape[-1], dtype=jnp.bool_)
  others = jnp.sum(jnp.where(top, 0.0, p), axis=-1, keepdims=True)
  return p, jnp.where(top, others, 1.0 - p)


def _float_labels(y: Any, n: int, shape: tuple[int, ...], what: str, name: str) -> np.ndarray:
  y = np.asarray(y)
  if y.shape != (n,) + tuple(shape):
    raise UserError(f"{what}: {name} labels must have the outputs' shape {(n,) + tuple(shape)}, "
                    f"got {y.shape}")
  if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)
          or y.dtype == bool):
    raise UserError(f"{what}: {name} labels must be numbers, got {y.dtype}")
  return y.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Categorical(Likelihood):
  """Softmax over the last axis of the outputs (cross-entropy); integer labels (module doc)."""

  name = "categorical"

  def check_outputs(self, shape):
    if len(shape) < 1 or shape[-1] < 1:
      raise UserError(f"likelihood='categorical' needs outputs (n, ..., num_classes) with the "
                      f"classes on the last axis, got per-example outputs of shape {shape}")

  def check_labels(self, y, n, shape, what):
    y = np.asarray(y)
    want = (n,) + tuple(shape[:-1])
    if y.shape != want or not np.issubdtype(y.dtype, np.integer):
      raise UserError(f"{what}: categorical labels must be integers of shape {want}, "
                      f"got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= shape[-1]):
      raise UserError(f"{what}: labels must lie in [0, {shape[-1]}), got [{y.min()}, {y.max()}]")
    return y.astype(np.int32)

  def dummy_labels(self, n, shape):
    return np.zeros((n,) + tuple(shape[:-1]), np.int32)

  def score(self, f, y):
    p, q = softmax_complement(f)  # e_y - p with 1 - p_y taken from q (module doc: precision)
    return jnp.where(jax.nn.one_hot(y, f.shape[-1], dtype=jnp.bool_), q, -p)

  def sample(self, key, f, num):
    return jax.random.categorical(key, f.astype(jnp.float32), axis=-1,
                                  shape=(num,) + f.shape[:-1])

  def fisher_factor(self, f):
    v = f.shape[-1]
    p, q = softmax_complement(f.reshape(-1, v))  # (P, V) each
    eye = jnp.eye(v, dtype=jnp.bool_)[None]
    rows = jnp.where(eye, q[:, None, :], -p[:, None, :])  # (P, V, V): e_c - p_p
    num_pos = p.shape[0]
    if num_pos == 1:
      return rows[0].reshape((v,) + f.shape), p[0]
    u = jnp.einsum("pq,pcv->pcqv", jnp.eye(num_pos, dtype=jnp.float32), rows)
    return u.reshape((num_pos * v,) + f.shape), p.reshape(-1)

  def hessian(self, f):
    v = f.shape[-1]
    p, q = softmax_complement(f.reshape(-1, v))
    # diag(p) - p p^T with the diagonal p (1 - p) taken from the complement (module doc).
    blocks = jax.vmap(lambda a, b: jnp.diag(a * b) - jnp.outer(a, a) * (1 - jnp.eye(v)))(p, q)
    return jax.scipy.linalg.block_diag(*[blocks[i] for i in range(p.shape[0])])

  def nll(self, f, y):
    logp = jax.nn.log_softmax(f.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.take_along_axis(logp, jnp.asarray(y)[..., None], axis=-1))


@dataclasses.dataclass(frozen=True)
class Gaussian(Likelihood):
  """y ~ N(f, variance I): the loss ||y - f||^2 / (2 variance) (MSE up to the factor)."""

  variance: float = 1.0
  name = "gaussian"

  def __post_init__(self):
    if isinstance(self.variance, bool) or not (np.isscalar(self.variance)
                                              and float(self.variance) > 0):
      raise UserError(f"Gaussian variance must be a positive number, got {self.variance!r}")

  def check_labels(self, y, n, shape, what):
    return _float_labels(y, n, shape, what, "gaussian")

  def dummy_labels(self, n, shape):
    return np.zeros((n,) + tuple(shape), np.float32)

  def score(self, f, y):
    return (jnp.asarray(y, jnp.float32) - f.astype(jnp.float32)) / self.variance

  def sample(self, key, f, num):
    eps = jax.random.normal(key, (num,) + f.shape, jnp.float32)
    return f.astype(jnp.float32)[None] + math.sqrt(self.variance) * eps

  def fisher_factor(self, f):
    d = max(f.size, 1)
    return (jnp.eye(d, dtype=jnp.float32).reshape((d,) + f.shape),
            jnp.full((d,), 1.0 / self.variance, jnp.float32))

  def nll(self, f, y):
    return jnp.sum(jnp.square(jnp.asarray(y, jnp.float32) - f.astype(jnp.float32))) / (
        2 * self.variance)


@dataclasses.dataclass(frozen=True)
class Bernoulli(Likelihood):
  """Independent binary labels with logits f (sigmoid; multi-label binary cross-entropy)."""

  name = "bernoulli"

  def check_labels(self, y, n, shape, what):
    y = _float_labels(y, n, shape, what, "bernoulli")
    if y.size and (y.min() < 0 or y.max() > 1):
      raise UserError(f"{what}: bernoulli labels must lie in [0, 1], got [{y.min()}, {y.max()}]")
    return y

  def dummy_labels(self, n, shape):
    return np.zeros((n,) + tuple(shape), np.float32)

  def score(self, f, y):
    # y - s = y (1 - s) - (1 - y) s with 1 - s = sigmoid(-f): no cancellation for hard labels.
    f = f.astype(jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    return y * jax.nn.sigmoid(-f) - (1 - y) * jax.nn.sigmoid(f)

  def sample(self, key, f, num):
    s = jax.nn.sigmoid(f.astype(jnp.float32))
    return jax.random.bernoulli(key, s, (num,) + f.shape).astype(jnp.float32)

  def fisher_factor(self, f):
    d = max(f.size, 1)
    f32 = f.astype(jnp.float32).reshape(-1)
    weights = jax.nn.sigmoid(f32) * jax.nn.sigmoid(-f32)  # s (1 - s), module doc: precision
    return jnp.eye(d, dtype=jnp.float32).reshape((d,) + f.shape), weights

  def nll(self, f, y):
    f = f.astype(jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    return jnp.sum(jax.nn.softplus(f) - y * f)


@dataclasses.dataclass(frozen=True, eq=False)
class Custom(Likelihood):
  """A user-supplied likelihood (module doc). Compared by identity: keep one instance.

  Attributes:
    nll: ``nll(f, y) -> scalar``, the negative log-likelihood of ONE example (f its outputs).
    sample: ``sample(key, f) -> y``, one label drawn from p(. | f) (for ``labels="sampled"``).
    hessian: ``hessian(f) -> (D, D)``, the Hessian of ``nll`` in the flattened f (for
      ``labels="exact"`` and the GGN); None: the exact modes are refused.
    label_shape: optional ``label_shape(S) -> shape`` of one example's label, for the checks
      (None: not checked beyond the leading example axis).
  """

  nll_fn: Callable[[jax.Array, Any], jax.Array]
  sample_fn: Callable[[jax.Array, jax.Array], Any] | None = None
  hessian_fn: Callable[[jax.Array], jax.Array] | None = None
  name: str = "custom"

  def positions(self, shape):
    return 1

  def check_labels(self, y, n, shape, what):
    leaves = jax.tree.leaves(y)
    if not leaves or any(np.ndim(a) < 1 or np.shape(a)[0] != n for a in leaves):
      raise UserError(f"{what}: custom labels need a leading example axis of size {n}")
    return y

  def score(self, f, y):
    return -jax.grad(lambda g: jnp.asarray(self.nll_fn(g, y), jnp.float32))(
        f.astype(jnp.float32))

  def sample(self, key, f, num):
    if self.sample_fn is None:
      raise UserError("this Custom likelihood has no sample: pass sample=... for "
                      "labels='sampled'")
    return jax.vmap(lambda k: self.sample_fn(k, f))(jax.random.split(key, num))

  def fisher_factor(self, f):
    h = self.hessian(f)
    w, v = jnp.linalg.eigh(h)
    return v.T.reshape((h.shape[0],) + f.shape), w

  def hessian(self, f):
    if self.hessian_fn is None:
      raise UserError("this Custom likelihood has no hessian: pass hessian=... for the exact "
                      "Fisher / GGN (labels='exact')")
    d = max(f.size, 1)
    return jnp.asarray(self.hessian_fn(f), jnp.float32).reshape(d, d)

  def nll(self, f, y):
    return self.nll_fn(f, y)


def custom(nll: Callable, *, sample: Callable | None = None,
           hessian: Callable | None = None, name: str = "custom") -> Custom:
  """A user-supplied :class:`Custom` likelihood: ``nll(f, y)``, ``sample(key, f)``,
  ``hessian(f) -> (D, D)`` (module doc)."""
  if not callable(nll):
    raise UserError(f"custom likelihood: nll must be a function nll(f, y), got {nll!r}")
  for n, fn in (("sample", sample), ("hessian", hessian)):
    if fn is not None and not callable(fn):
      raise UserError(f"custom likelihood: {n} must be a function or None, got {fn!r}")
  return Custom(nll, sample, hessian, name)


def resolve(likelihood: Any) -> Likelihood:
  """A :class:`Likelihood` from a name or an instance."""
  if isinstance(likelihood, Likelihood):
    return likelihood
  if likelihood == "categorical":
    return Categorical()
  if likelihood == "gaussian":
    return Gaussian()
  if likelihood == "bernoulli":
    return Bernoulli()
  raise UserError(f"likelihood must be one of {NAMES} or a snnjax.estimators.likelihoods "
                  f"instance (Gaussian(variance), custom(nll, ...)), got {likelihood!r}")
