"""Curvature diagonals as param-shaped pytrees: the Hessian's and the Fisher's.

* :func:`hessian_diagonal`: diag(H) of the mean loss over all examples of ``data`` (the operator
  of ``snnjax.estimators.hessian``): ``"hutchinson"`` (mean of z ⊙ Hz over Rademacher probes, one
  Hessian-vector product each), ``"xdiag"`` (leave-one-out sketch + Hutchinson,
  ``snnjax.estimators.sketch.xdiag``: better per product when the spectrum decays) or ``"exact"``
  (dense columns, ``dim`` products; guarded by ``max_dim``).
* :func:`fisher_diagonal`: diag(F) of a softmax classifier, a per-example mean over the examples of
  ``data``, with ``labels="exact"`` (sum over classes c of p_c (grad log p_c)^2), ``"sampled"``
  (Monte Carlo: mean over sampled labels of (grad log p_y)^2) or ``"data"`` (the empirical
  Fisher: (grad log p_{y_i})^2), as in ``snnjax.estimators.fisher``.

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


@functools.partial(jax.jit, static_argnames=("lik", "mode", "num_samples", "cpu_rewrites"))
def _fisher_diag_chunk(replicated, chunk, *, lik, mode, num_samples, cpu_rewrites):
  """Sums over the chunk's valid examples of the per-example diagonal and of its square.

  mode ``"exact"``: per example sum_k w_k (J^T u_k)^2 (the likelihood's Fisher factor); else
  mean over its labels of (grad log p_y)^2 (labels ``chunk["y"]`` or ``num_samples`` sampled,
  as ``fisher._label_sqnorms_chunk``). Not divided by positions. Returns (sums, sums of
  squares), pytrees like params with a leading axis 1.
  """
  logits_fn, params, mask, key = replicated

  def one(x, y, k):
    if mode == "exact":
      grads, weights = fisher._cotangent_grads(logits_fn, params, x, lik.fisher_factor)
      return jax.tree.map(lambda g: jnp.tensordot(weights, jnp.square(g), 1), grads)

    def make(out):
      if num_samples and isinstance(lik, _likelihoods.Categorical) and out.ndim == 1:
        # Defensive importance sampling: y ~ q = (p + uniform) / 2, weight p_y / q_y <= 2.
        p = jax.nn.softmax(out.astype(jnp.float32))
        q = 0.5 * p + 0.5 / out.shape[-1]
        labels = jax.random.categorical(k, jnp.log(q), shape=(num_samples,))
        return fisher._label_scores(lik, out, labels), p[labels] / q[labels]
      labels = fisher._example_labels(lik, out, y, k, num_samples)
      return fisher._label_scores(lik, out, labels), jnp.ones((max(num_samples, 1),))
    grads, weights = fisher._cotangent_grads(logits_fn, params, x, make)
    return jax.tree.map(lambda g: jnp.tensordot(weights, jnp.square(g), 1) / weights.shape[0],
                        grads)

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
  ``"sampled"`` a Monte Carlo one over ``num_samples`` labels per example drawn from the model
  (key ``fold_in(key, i)``), ``"data"`` the batch's labels (the empirical Fisher). Summed over
  the coordinates it is ``fisher.fisher_trace`` with the same arguments. Arguments as there;
  the examples run in chunks of ``chunk_size`` (memory ~ chunk x classes x params floats for
  ``"exact"``), sharded over ``devices``.

  ``"sampled"`` with the categorical likelihood on (n, C) outputs draws each label from the
  defensive mixture q = (p + uniform) / 2 and weights it by p_y / q_y (<= 2): unbiased for the
  same diagonal, and every class is drawn at a rate >= 1 / (2 C), so the per-coordinate stderr
  also sees the coordinates that rarely sampled classes dominate (plain sampling from p made it
  collapse there: z = 9 to 70 against the exact label-sampling error on a small CNN). Other
  likelihoods (and token outputs) sample from the model.

  Returns:
    :class:`DiagonalEstimate` (float64 leaves; zero off the mask). stderr: for ``"sampled"``
    the per-coordinate std over examples of the per-example (weighted) values / sqrt(N): covers
    label and example sampling; None for ``"exact"`` and ``"data"`` (exact for the given
    examples).
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
