"""Masks found at initialization: SNIP, GraSP and SynFlow scores and the masks they give.

The scores take plain functions (no model here): ``loss_fn(params) -> scalar`` (the mean loss on
a minibatch, for SNIP and GraSP) or ``output_fn(params) -> array`` (the network on an all-ones
input, for SynFlow). Every score has the params' structure; a mask keeps the highest-scored
prunable weights (:func:`snnjax.sparsity.builders.score_mask`, global or layerwise).

* **SNIP** (Lee et al. 2019): ``|g * w|``, g the gradient of the loss at the init ``w``.
* **GraSP** (Wang et al. 2020): ``-w * (H g)``, H the Hessian of the loss at ``w`` (a
  Hessian-vector product, forward over reverse); GraSP prunes the *highest* scores, so its mask
  keeps the lowest (:func:`grasp_mask` ranks by ``-score``). One batch, no logit temperature (the
  paper's code divides the logits by T = 200; not done here).
* **SynFlow** (Tanaka et al. 2020): data-free. Every param replaced by ``|w|`` (BatchNorm in eval
  mode is the caller's ``output_fn``), ``R = sum(output_fn(|w|))``, score ``|w * dR/dw|``. Pruned
  iteratively: round k = 1..K keeps density ``d ** (k / K)`` (d the final density, an
  exponential schedule; K = 100 in the paper), each round scoring the params masked by the
  previous round's mask, which the new one is nested in. Computed in float32.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import UserError
from snnjax.sparsity.builders import score_mask
from snnjax.sparsity.masks import apply_mask, dense_mask, validate_sparsity

PyTree = Any
SOURCES = ("snip", "grasp", "synflow")


def snip_scores(loss_fn: Callable[[PyTree], jax.Array], params: PyTree) -> PyTree:
  """``|dL/dw * w|`` at ``params``."""
  grads = jax.grad(loss_fn)(params)
  return jax.tree.map(lambda g, w: jnp.abs(g * w), grads, params)


def grasp_scores(loss_fn: Callable[[PyTree], jax.Array], params: PyTree) -> PyTree:
  """``-w * (H g)`` at ``params`` (g = dL/dw, H the Hessian of L); high = prune first."""
  grad_fn = jax.grad(loss_fn)
  g = grad_fn(params)
  _, hg = jax.jvp(grad_fn, (params,), (g,))
  return jax.tree.map(lambda w, v: -w * v, params, hg)


def synflow_scores(output_fn: Callable[[PyTree], jax.Array], params: PyTree) -> PyTree:
  """``|w * dR/dw|`` with ``R = sum(output_fn(|params|))`` (the caller feeds an all-ones input)."""
  positive = jax.tree.map(jnp.abs, params)
  grads = jax.grad(lambda p: jnp.sum(output_fn(p)))(positive)
  return jax.tree.map(lambda g, w: jnp.abs(g * w), grads, positive)


def _finite(scores: PyTree, what: str) -> PyTree:
  host = jax.tree.map(np.asarray, scores)
  if not all(np.all(np.isfinite(s)) for s in jax.tree.leaves(host)):
    raise UserError(f"{what} scores are not finite (float32 overflow in a deep network?)")
  return host


def snip_mask(loss_fn, params: PyTree, sparsity: float, *, scope: str = "global",
              prunable_tree: Optional[PyTree] = None) -> PyTree:
  """Keeps the highest SNIP scores."""
  scores = _finite(jax.jit(lambda p: snip_scores(loss_fn, p))(params), "SNIP")
  return score_mask(scores, sparsity, scope=scope, prunable_tree=prunable_tree)


def grasp_mask(loss_fn, params: PyTree, sparsity: float, *, scope: str = "global",
               prunable_tree: Optional[PyTree] = None) -> PyTree:
  """Prunes the highest GraSP scores (keeps the lowest)."""
  scores = _finite(jax.jit(lambda p: grasp_scores(loss_fn, p))(params), "GraSP")
  return score_mask(jax.tree.map(np.negative, scores), sparsity, scope=scope,
                    prunable_tree=prunable_tree)


def synflow_schedule(sparsity: float, rounds: int) -> list[float]:
  """The sparsity after each round: ``1 - d ** (k / rounds)``, k = 1..rounds (d = 1 - sparsity)."""
  d = 1.0 - validate_sparsity(sparsity)
  return [1.0 - d ** (k / rounds) for k in range(1, rounds)] + [float(sparsity)]


def synflow_mask(output_fn, params: PyTree, sparsity: float, *, rounds: int = 100,
                 scope: str = "global", prunable_tree: Optional[PyTree] = None) -> PyTree:
  """Iterative SynFlow: ``rounds`` rounds on :func:`synflow_schedule`, each nested in the last."""
  if int(rounds) < 1:
    raise UserError(f"SynFlow needs at least 1 round, got {rounds}")
  score_fn = jax.jit(lambda p, m: synflow_scores(output_fn, apply_mask(p, m)))
  mask = dense_mask(params)
  for target in synflow_schedule(sparsity, int(rounds)):
    scores = _finite(score_fn(params, mask), "SynFlow")
    mask = score_mask(scores, target, scope=scope, prunable_tree=prunable_tree, within=mask)
  return mask


def init_mask(source: str, params: PyTree, sparsity: float, *, loss_fn=None, output_fn=None,
              scope: str = "global", prunable_tree: Optional[PyTree] = None,
              synflow_rounds: int = 100) -> PyTree:
  """The mask of ``source`` (one of :data:`SOURCES`) at ``params``."""
  if source == "snip":
    return snip_mask(loss_fn, params, sparsity, scope=scope, prunable_tree=prunable_tree)
  if source == "grasp":
    return grasp_mask(loss_fn, params, sparsity, scope=scope, prunable_tree=prunable_tree)
  if source == "synflow":
    return synflow_mask(output_fn, params, sparsity, rounds=synflow_rounds, scope=scope,
                        prunable_tree=prunable_tree)
  raise UserError(f"unknown mask-at-init source {source!r}; choose one of {SOURCES}")
