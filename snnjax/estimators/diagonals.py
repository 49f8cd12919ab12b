"""Curvature diagonals as param-shaped pytrees: the Hessian's and the Fisher's.

* :func:`hessian_diagonal`: diag(H) of the mean loss over all examples of ``data`` (the operator
  of ``snnjax.estimators.hessian``): ``"hutchinson"`` (mean of z ⊙ Hz over Rademacher probes, one
  Hessian-vector product each), ``"xdiag"`` (leave-one-out sketch + Hutchinson,
  ``snnjax.estimators.sketch.xdiag``: better per product when the spectrum decays) or ``"exact"``
  (dense columns, ``dim`` products; guarded by ``max_dim``).
* :func:`fisher_diagonal`: diag(F) of a softmax classifier, a per-example mean over the examples of
  ``data``, with ``labels="exact"`` (sum over classes c of p_c (grad log p_c)^2), ``"sampled"``
  (Monte Carlo over the model's labels, with random-sign probes: :func:`fisher_diagonal`) or
  ``"data"`` (the empirical Fisher: (grad log p_{y_i})^2), as in ``snnjax.estimators.fisher``.

Every entry is a diagonal element of the example-MEAN curvature (squared gradients for the
Fisher), zero on coordinates a ``mask`` makes inactive. Results are :class:`DiagonalEstimate`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from snnjax.errors import UserError
from snnjax.estimators import _convs, _examples, _sharding, fisher, sketch
from snnjax.estimators import likelihoods as _likelihoods
from snnjax.estimators._base import (Batch, PyTree, active_count, as_pytree_fn,
                                     check_mask_matches_params)
from snnjax.estimators.hessian import Devices, HessianOperator, LossFn

HESSIAN_METHODS = ("hutchinson", "xdiag", "exact")
_ROUND = 16  # probes per host accumulation round (bounds host memory to 16 x dim doubles)


@dataclasses.dataclass(frozen=True)
class DiagonalEstimate:
  """A curvature diagonal as param-shaped pytrees.

  Attributes:
    value: pytree like params of float64 numpy arrays: the diagonal entries (per-coordinate
      values of the example-mean curvature; zero off the mask).
    stderr: pytree like params of per-coordinate standard errors (float64), or None where the
      result is exact (``"exact"``; for the Fisher also ``"data"``: exact for the given examples).
    num_examples: examples the curvature averages over.
    num_probes: random probes / products used (0 where exact).
    extra: ``method`` or ``labels``, ``dim`` (active coordinates), and method details.
  """

  value: PyTree
  stderr: PyTree | None
  num_examples: int
  num_probes: int = 0
  extra: dict = dataclasses.field(default_factory=dict)

  def flat(self) -> tuple[np.ndarray, np.ndarray | None]:
    """(value, stderr) raveled in ``ravel_pytree`` order (stderr None where exact)."""
    value = np.asarray(ravel_pytree(self.value)[0])
    stderr = None if self.stderr is None else np.asarray(ravel_pytree(self.stderr)[0])
    return value, stderr


def _as_tree(op: HessianOperator, z: np.ndarray) -> PyTree:
  full = np.zeros(op.size)
  full[slice(None) if op.idx is None else op.idx] = z
  leaves, out, start = jax.tree.leaves(op.params), [], 0
  for p in leaves:
    size = int(np.size(p))
    out.append(full[start:start + size].reshape(np.shape(p)))
    start += size
  return jax.tree.unflatten(jax.tree.structure(op.params), out)


def hessian_diagonal(loss_fn: LossFn, params: PyTree, data: Batch | Iterable[Batch], *,
                     key: jax.Array | None = None, num_probes: int | None = None,
                     method: str = "hutchinson", mask: PyTree | None = None,
                     batch_probes: int | None = None, max_dim: int | None = None,
                     devices: Devices = None) -> DiagonalEstimate:
  """diag(H) of the mean loss over all examples of ``data`` (H[active, active] with ``mask``).

  Args:
    loss_fn, params, data, mask, batch_probes, devices: as in ``hessian.hessian_trace``.
    key: PRNG key (stochastic methods); probe i is ``HessianOperator.probe(key, i)``, the same
      probes as ``hessian_trace``'s.
    num_probes: REQUIRED for the stochastic methods (None only with ``"exact"``).
      ``"hutchinson"``: probes (one Hessian-vector product each, >= 2);
      ``"xdiag"``: products in all, s = num_probes // 2 test vectors (>= 2).
    method: ``"hutchinson"``, ``"xdiag"`` or ``"exact"``.
    max_dim: the size guard of ``"exact"`` (default ``hessian.EXACT_MAX_DIM``).

  Returns:
    :class:`DiagonalEstimate`; stderr per coordinate: Hutchinson std(z ⊙ Hz) / sqrt(probes),
    XDiag the std of its leave-one-out estimates / sqrt(s), None for ``"exact"``.
  """
  if method not in HESSIAN_METHODS:
    raise UserError(f"method must be one of {HESSIAN_METHODS}, got {method!r}")
  op = HessianOperator(loss_fn, params, data, mask, batch_probes=batch_probes, devices=devices)
  extra = {"method": method, "dim": op.dim}
  if method == "exact":
    diag = np.diag(op.dense(max_dim))
    return DiagonalEstimate(_as_tree(op, diag), None, op.num_examples, 0, extra)
  if key is None:
    raise UserError(f"hessian_diagonal(method={method!r}) needs a PRNG key")
  if not isinstance(num_probes, (int, np.integer)) or num_probes < (2 if method ==
                                                                     "hutchinson" else 4):
    raise UserError(f"num_probes must be an int >= {2 if method == 'hutchinson' else 4} for "
                    f"method={method!r}, got {num_probes!r}")
  if method == "xdiag":
    s = min(int(num_probes) // 2, op.dim)
    omega = np.stack([op.probe(key, i) for i in range(s)])
    value, stderr, used = sketch.xdiag(op.matmat, omega)
    return DiagonalEstimate(_as_tree(op, value), _as_tree(op, stderr), op.num_examples, used,
                            extra)
  total, total_sq, n = np.zeros(op.dim), np.zeros(op.dim), int(num_probes)
  for start in range(0, n, _ROUND):
    samples = op.probe_products(key, start, min(_ROUND, n - start), "diag")  # (count, dim)
    total += samples.sum(axis=0)
    total_sq += np.square(samples).sum(axis=0)
  mean = total / n
  var = np.maximum(total_sq / n - mean ** 2, 0.0) * n / (n - 1)
  return DiagonalEstimate(_as_tree(op, mean), _as_tree(op, np.sqrt(var / n)), op.num_examples,
                          n, extra)


# ----------------------------------------------------------------------------------------------
# The Fisher diagonal.


def _stratified_signs(k: jax.Array, num: int, shape: tuple[int, ...]) -> jax.Array:
  """``num`` random-sign arrays (num, *shape), each uniform on {-1, +1}^shape.

  For one position (``shape`` (V,)) they are stratified: probe j is eps * H[r_j, c] with eps
  uniform random signs (one per entry, shared by the probes), c V distinct random columns and
  r_j distinct random rows (fresh ones every m probes) of the m x m Sylvester Hadamard matrix
  H[r, c] = (-1)^popcount(r & c), m the power of 2 >= V (entries computed, never stored).
  Each probe alone is uniform random signs (eps is); together, the mean over m of them of
  v_c v_d is delta_cd, so m probes of an example give its exact diagonal, and fewer sample the
  rows without replacement. Several positions (token outputs) get independent signs.
  """
  if len(shape) != 1:
    return jax.random.rademacher(k, (num,) + shape, jnp.float32)
  size = shape[0]
  m = 1 << max(size - 1, 0).bit_length()
  k_rows, k_cols, k_eps = jax.random.split(k, 3)
  blocks = -(-num // m)
  rows = jax.vmap(lambda kb: jax.random.permutation(kb, m))(
      jax.random.split(k_rows, blocks)).reshape(-1)[:num].astype(jnp.uint32)
  cols = jax.random.permutation(k_cols, m)[:size].astype(jnp.uint32)
  parity = jax.lax.population_count(rows[:, None] & cols[None, :]) & 1
  eps = jax.random.rademacher(k_eps, shape, jnp.float32)
  return eps[None] * (1.0 - 2.0 * parity.astype(jnp.float32))


def _sign_probes(lik, out: jax.Array, k: jax.Array, num: int) -> jax.Array | None:
  """``num`` random-sign cotangents u (num, *S) of one example with E[u u^T] = M, the
  likelihood's output-space Fisher (``fisher_factor``); None for a likelihood without one here.

  Categorical (per position): u = r - p sum(r), r = sqrt(p) * v, v uniform random signs per
  class, so E[r r^T] = diag(p) = E[e_y e_y^T] for y ~ p and u replaces the score e_y - p of a
  sampled label by all classes at once, with random signs. Gaussian: u = v / sqrt(variance);
  Bernoulli: u = sqrt(s (1 - s)) v.
  """
  if not isinstance(lik, (_likelihoods.Categorical, _likelihoods.Gaussian,
                          _likelihoods.Bernoulli)):
    return None
  f = jax.lax.stop_gradient(out).astype(jnp.float32)
  v = _stratified_signs(k, num, f.shape)
  if isinstance(lik, _likelihoods.Categorical):
    p = jax.nn.softmax(f, axis=-1)
    r = jnp.sqrt(p) * v
    return r - p * jnp.sum(r, axis=-1, keepdims=True)
  if isinstance(lik, _likelihoods.Gaussian):
    return v / np.sqrt(lik.variance)
  s = jax.nn.sigmoid(f)  # Bernoulli
  return jnp.sqrt(s * (1 - s)) * v


@functools.partial(jax.jit, static_argnames=("lik", "mode", "num_samples", "cpu_rewrites"))
def _fisher_diag_chunk(replicated, chunk, *, lik, mode, num_samples, cpu_rewrites):
  """Sums over the chunk's valid examples of the per-example diagonal and of its square.

  mode ``"exact"``: per example sum_k w_k (J^T u_k)^2 (the likelihood's Fisher factor); else
  mean over its ``num_samples`` random-sign cotangents u of (J^T u)^2 (:func:`_sign_probes`;
  sampled labels for a likelihood without them) or (grad log p_y)^2 for the labels
  ``chunk["y"]`` (``num_samples`` 0). Not divided by positions. Returns (sums, sums of
  squares), pytrees like params with a leading axis 1.
  """
  logits_fn, params, mask, key = replicated

  def one(x, y, k):
    if mode == "exact":
      grads, weights = fisher._cotangent_grads(logits_fn, params, x, lik.fisher_factor)
      return jax.tree.map(lambda g: jnp.tensordot(weights, jnp.square(g), 1), grads)

    def make(out):
      probes = _sign_probes(lik, out, k, num_samples) if num_samples else None
      if probes is not None:
        return probes, None
      labels = fisher._example_labels(lik, out, y, k, num_samples)
      return fisher._label_scores(lik, out, labels), None
    grads, _ = fisher._cotangent_grads(logits_fn, params, x, make)
    return jax.tree.map(lambda g: jnp.mean(jnp.square(g), axis=0), grads)

  keys = fisher._example_keys(key, chunk["index"]) if num_samples else chunk["index"]
  per = fisher._vmap_examples(one, cpu_rewrites)(chunk["x"], chunk["y"], keys)
  if mask is not None:
    per = jax.tree.map(lambda a, m: a * m, per, mask)  # 0/1 mask: (g m)^2 = g^2 m
  w = chunk["valid"]
  sums = jax.tree.map(lambda a: jnp.tensordot(w, a, 1)[None], per)
  sqs = jax.tree.map(lambda a: jnp.tensordot(w, jnp.square(a), 1)[None], per)
  return sums, sqs


def fisher_diagonal(logits_fn, params: PyTree, data: Batch | Iterable[Batch], *,
                    labels: str = "exact", key: jax.Array | None = None,
                    mask: PyTree | None = None, num_samples: int = 1, label_key: Any = None,
                    chunk_size: int | None = None, devices: Devices = None,
                    cpu_rewrites: bool | None = None, likelihood: Any = "categorical",
                    x: Any = None, y: Any = None) -> DiagonalEstimate:
  """diag(F), the per-coordinate Fisher, a per-example (and per-position) MEAN over ``data``.

  Entry j is mean_i E_y (d log p(y | x_i) / d theta_j)^2 / P (squared, averaged; P the
  positions, ``snnjax.estimators.likelihoods``): ``labels="exact"`` the exact expectation
  (the likelihood's Fisher factor: C gradients per example for a C-class softmax),
  ``"sampled"`` a Monte Carlo one over the model's labels with ``num_samples`` gradients per
  example (key ``fold_in(key, i)``), ``"data"`` the batch's labels (the empirical Fisher).
  Summed over the coordinates, ``"exact"`` and ``"data"`` are ``fisher.fisher_trace`` with the
  same arguments (``"sampled"`` estimates the same sum with other random draws). Arguments as
  there; the examples run in chunks of ``chunk_size`` (memory ~ chunk x classes x params floats
  for ``"exact"``), sharded over ``devices``.

  ``"sampled"`` (categorical, Gaussian and Bernoulli likelihoods, token outputs included): each
  of an example's ``num_samples`` gradients is J^T u for a random-sign cotangent u with
  E[u u^T] = the output-space Fisher. Categorical: u = r - p sum(r) with r = sqrt(p) * v, v
  random signs per class: the score e_y - p of a label y ~ p with the one-hot e_y (second
  moment diag(p)) replaced by sqrt(p) * v (the same second moment), i.e. every class at once
  with a random sign. Unbiased, one backward pass per sample as before, and no rare events:
  per coordinate (J^T u)^2 = (sum_c sqrt(p_c) v_c g_c)^2 (g_c = grad log p_c) has mean
  F_j = sum_c p_c g_c^2 and variance 2 (F_j^2 - sum_c p_c^2 g_c^4) <= 2 F_j^2, whatever the
  class probabilities (where one class dominates a coordinate, every sample carries it and is
  nearly constant there). A sampled label instead sees a class c in a fraction p_c of the
  draws only; on the coordinates that rarely drawn classes dominate, the standard error (the
  right unit: per-example means over N examples) then collapsed with the estimate, a heavy
  tail that no count fixes (z = 9 to 70 against the exact diagonal; importance sampling from
  (p + uniform) / 2 left 1.1% of the z beyond 4). The signs of an example's samples are
  stratified over the classes (one position; token outputs get independent signs): rows of a
  Hadamard matrix with random column signs (:func:`_stratified_signs`), each sample alone
  uniform random signs, and m samples (m the power of 2 >= C) give that example's exact
  diagonal. Custom likelihoods sample labels from the model.

  Returns:
    :class:`DiagonalEstimate` (float64 leaves; zero off the mask). stderr: for ``"sampled"``
    the per-coordinate std over examples of the per-example values (each the mean of its
    ``num_samples``) / sqrt(N). It covers the label sampling given the examples, conservatively
    (it also holds the spread of the examples' exact diagonals): z = (value - exact) / stderr
    against ``labels="exact"`` on the same examples (a 5-class CNN, 48 examples, 24 keys):
    mean z^2 0.58, 0.14% of the z beyond 4, max 6.1 with ``num_samples=2``; 0.26, none beyond
    4 (max 3.0) with 4; with 1: 1.2, 1.0%, max 9 (use >= 2, better 4, for per-coordinate
    error bars). Residual: a coordinate that one example carries almost alone (a ReLU unit
    active on a single example of the batch) has one effective example, and its stderr is
    unreliable below m samples (a 10-class CNN: max z 82 with 2 samples, 7 with 4). As an
    error bar for the Fisher of the population the examples come from, it is the usual
    between-example one, unreliable on coordinates that few examples dominate. None for
    ``"exact"`` and ``"data"`` (exact for the given examples).
  """
  labels = fisher._check_labels(labels, fisher.LABELS, "fisher_diagonal")
  lik = _likelihoods.resolve(likelihood)
  num_samples = fisher._check_positive(num_samples, "num_samples")
  if labels != "sampled" and num_samples != 1:
    raise UserError(f"num_samples applies to labels='sampled' only (got labels={labels!r})")
  mask = check_mask_matches_params(params, mask)
  key = fisher._label_setup(labels, key, "fisher_diagonal")
  fn = _sharding.chunk_fn(_fisher_diag_chunk, lik=lik,
                          mode="exact" if labels == "exact" else "labels",
                          num_samples=num_samples if labels == "sampled" else 0,
                          cpu_rewrites=_convs.resolve_cpu_rewrites(cpu_rewrites))
  chunk_size = _sharding.check_chunk_size(chunk_size)
  devs = _sharding.resolve_devices(devices)
  replicated = _sharding.replicate((as_pytree_fn(logits_fn), params, mask, key), devices)
  call = fn if devs is None else functools.partial(_sharding._sharded_call, fn=fn, devices=devs)
  sums = sqs = None
  n_total, pad_to, shape = 0, None, None
  for eb, shape in _examples.example_batches(
      data, logits_fn=logits_fn, params=params, likelihood=lik, x=x,
      y=_examples.label_selector(y, label_key), labels=labels == "data",
      what="fisher_diagonal"):
    pad_to = min(chunk_size, eb.n) if pad_to is None else pad_to
    for _, num_valid, chunk in _sharding.example_chunks(eb.arrays, chunk_size, devs, pad_to):
      valid = (np.arange(chunk["index"].shape[0]) < num_valid).astype(np.float32)
      chunk = dict(chunk, valid=jax.device_put(valid, getattr(chunk["index"], "sharding", None)))
      s1, s2 = call(replicated, chunk)
      s1 = jax.tree.map(lambda a: np.asarray(a, np.float64).sum(axis=0), s1)
      s2 = jax.tree.map(lambda a: np.asarray(a, np.float64).sum(axis=0), s2)
      sums = s1 if sums is None else jax.tree.map(np.add, sums, s1)
      sqs = s2 if sqs is None else jax.tree.map(np.add, sqs, s2)
    n_total = eb.offset + eb.n
  positions = lik.positions(shape)
  mean = jax.tree.map(lambda a: a / n_total / positions, sums)
  stderr = None
  if labels == "sampled" and n_total > 1:
    sqs = jax.tree.map(lambda q: q / positions ** 2, sqs)
    stderr = jax.tree.map(
        lambda m, q: np.sqrt(np.maximum(q / n_total - m ** 2, 0.0) / (n_total - 1)), mean, sqs)
  extra = {"labels": labels, "likelihood": lik.name, "dim": active_count(params, mask),
           "num_classes": shape[-1] if shape else 1, "positions": positions}
  return DiagonalEstimate(mean, stderr, n_total, num_samples if labels == "sampled" else 0,
                          extra)
