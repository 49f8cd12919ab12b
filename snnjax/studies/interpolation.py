"""Stage 7: the line from an init to Sol-F, and how each example's gradient points along it.

theta(alpha) = (1 - alpha) * start + alpha * Sol-F, within the mask (pruned coordinates stay 0),
for ``start`` = Init-S (the scratch run's init: fresh weights, Sol-F's mask) and, for contrast,
Init-F (the pruned Sol-D that Sol-F was finetuned from). Every parameter is interpolated,
BatchNorm scale and bias included. BatchNorm *statistics* belong to neither endpoint's weights, so
at every alpha they are recomputed as population statistics of the training inputs
(``snnjax.train.recompute_batch_stats``) and the network is evaluated in eval mode with them; the
endpoints are treated the same way (the stored running averages of Sol-F are reported beside).

At ``cosine_alphas`` the per-example negative gradient -g_i of the cross-entropy with the *true*
label (eval mode with the recomputed statistics, active coordinates only) is compared with the
direction d = Sol-F - start: cos_i = <-g_i, d> / (||g_i|| ||d||). The study defines the direction
as Sol-F - theta(alpha) = (1 - alpha) * (Sol-F - start): the same direction up to the positive
factor (1 - alpha) for alpha < 1, hence the same cosines (for alpha > 1 the sign would flip).
An example whose gradient is exactly 0 has no cosine (NaN, counted in ``num_zero_grad``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.estimators import fisher
from snnjax.studies import stages
from snnjax.train import evaluate
from snnjax.train.batchnorm import recompute_batch_stats
from snnjax.train.solution import load_solution
from snnjax.train.step import forward, make_predict_fn

PyTree = Any


def interpolate(start: PyTree, end: PyTree, alpha: float, mask: PyTree) -> PyTree:
  """(1 - alpha) * start + alpha * end on the active coordinates, 0 elsewhere.

  At alpha = 0 and alpha = 1 this returns ``start`` and ``end`` bit for bit (on their active
  coordinates): (1 - 1) * a + 1 * b = b and 1 * a + 0 * b = a exactly in floating point.
  """
  return jax.tree.map(
      lambda a, b, m: jnp.where(jnp.asarray(m, bool), (1.0 - alpha) * a + alpha * b,
                                jnp.zeros_like(a)), start, end, mask)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
  return jax.tree.map(jnp.subtract, a, b)


@dataclasses.dataclass(frozen=True)
class _EvalLogits:
  """``f(batch_stats, params, x) -> logits`` in eval mode; equal for equal ``apply_fn``s, so a
  ``jax.tree_util.Partial`` of it over the statistics keys one compilation for every alpha."""

  apply_fn: Callable

  def __call__(self, batch_stats: PyTree, params: PyTree, x: jax.Array) -> jax.Array:
    return forward(self.apply_fn, params, batch_stats, x, train=False)[0]


@dataclasses.dataclass(frozen=True)
class CosineFn:
  """``f(params, batch_stats, direction, mask, x, y) -> (dots, grad_norms)`` per example.

  ``dots[i] = <-g_i, direction>`` and ``grad_norms[i] = ||g_i||`` for g_i the gradient of the
  cross-entropy of example i (label y[i]) in eval mode, restricted to ``mask``; computed by
  ``snnjax.estimators.fisher.per_example_grad_dots`` (float64 numpy, (n,) each).
  """

  logits: _EvalLogits

  def __call__(self, params, batch_stats, direction, mask, x, y, *, chunk_size: int = 32):
    logits_fn = jax.tree_util.Partial(self.logits, batch_stats)
    out = fisher.per_example_grad_dots(logits_fn, params, {"x": x, "y": y}, direction,
                                       mask=mask, chunk_size=chunk_size)
    return -out.dots, out.norms


def make_cosine_fn(apply_fn: Callable) -> CosineFn:
  """The per-example ``(dots, grad_norms)`` function of ``apply_fn`` (see :class:`CosineFn`)."""
  return CosineFn(_EvalLogits(apply_fn))


def gradient_cosines(cosine_fn: Callable, params: PyTree, batch_stats: PyTree,
                     direction: PyTree, mask: PyTree, x: np.ndarray, y: np.ndarray, *,
                     chunk_size: int = 32) -> np.ndarray:
  """cos(-g_i, direction) for the N examples of ``x`` (N, ...), labels ``y`` (N,) -> (N,) float64.

  ``cosine_fn`` from :func:`make_cosine_fn`. The per-example gradients run in the estimators'
  per-example machinery (``fisher.per_example_grad_dots``: chunks of ``chunk_size``, the last one
  padded, one jitted vmapped call each). NaN where g_i = 0.
  """
  direction = jax.tree.map(lambda d, m: d * jnp.asarray(m, d.dtype), direction, mask)
  d_norm = float(np.sqrt(sum(np.vdot(np.asarray(d, np.float64), np.asarray(d, np.float64))
                             for d in jax.tree.leaves(direction))))
  dots, norms = cosine_fn(params, batch_stats, direction, mask, np.asarray(x), np.asarray(y),
                          chunk_size=chunk_size)
  dots, norms = np.asarray(dots, np.float64), np.asarray(norms, np.float64)
  denom = norms * d_norm
  with np.errstate(invalid="ignore", divide="ignore"):
    cos = np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), np.nan)
  return np.clip(cos, -1.0, 1.0)


def _subset(n: int, size: int, seed: int) -> np.ndarray:
  if size <= 0 or size >= n:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def top_fraction_classes(cosines: np.ndarray, labels: np.ndarray, fraction: float,
                         num_classes: int) -> dict:
  """Class counts of the examples with the top ``fraction`` of cosines (NaNs excluded)."""
  ok = ~np.isnan(cosines)
  c, l = cosines[ok], labels[ok]
  k = max(1, int(round(fraction * c.size))) if c.size else 0
  top = np.argsort(-c, kind="stable")[:k]
  return {"k": int(k), "threshold": float(c[top[-1]]) if k else None,
          "class_counts": np.bincount(l[top], minlength=num_classes).tolist(),
          "class_sizes": np.bincount(l, minlength=num_classes).tolist()}


def summarize(cosines: np.ndarray) -> dict:
  ok = cosines[~np.isnan(cosines)]
  if not ok.size:
    return {"count": 0}
  q = np.quantile(ok, [0.05, 0.25, 0.5, 0.75, 0.95])
  return {"count": int(ok.size), "mean": float(ok.mean()), "std": float(ok.std()),
          "min": float(ok.min()), "max": float(ok.max()), "q05": float(q[0]),
          "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]), "q95": float(q[4]),
          "fraction_positive": float(np.mean(ok > 0))}


def evaluate_line(start, end, dataset, settings, *, log=None) -> dict:
  """Loss/accuracy along alpha and the cosine distributions for one line ``start -> end``.

  ``start`` and ``end`` are ``Solution``s sharing the mask of ``end`` (Sol-F). Train metrics use
  the true labels over ``eval_examples`` training examples (0 = all), test metrics the test split.
  """
  log = log or (lambda m: None)
  mask = end.mask
  apply_fn = end.apply_fn
  predict = make_predict_fn(apply_fn)
  bn_x = dataset.x_train[_subset(dataset.num_train, int(settings.bn_examples),
                                 int(settings.subset_seed))]
  eval_idx = _subset(dataset.num_train, int(settings.eval_examples), int(settings.subset_seed) + 1)
  cos_idx = _subset(dataset.num_train, int(settings.num_examples), int(settings.subset_seed) + 2)
  x_eval, y_eval = dataset.x_train[eval_idx], dataset.y_train_true[eval_idx]
  direction = tree_sub(end.params, start.params)
  cosine_fn = make_cosine_fn(apply_fn)
  cos_alphas = [float(a) for a in settings.cosine_alphas]
  alphas = sorted({float(a) for a in settings.alphas} | set(cos_alphas))
  out = {"alphas": alphas, "train_loss": [], "train_accuracy": [], "test_loss": [],
         "test_accuracy": [], "cosines": {}}

  def metrics(params, stats):
    tr = evaluate.loss_and_accuracy(
        evaluate.predict_logits(predict, params, stats, x_eval, 500), y_eval)
    te = evaluate.loss_and_accuracy(
        evaluate.predict_logits(predict, params, stats, dataset.x_test, 500), dataset.y_test)
    return tr, te

  for alpha in alphas:
    params = interpolate(start.params, end.params, alpha, mask)
    stats = recompute_batch_stats(apply_fn, params, end.batch_stats, bn_x,
                                  batch_size=int(settings.bn_batch_size))
    tr, te = metrics(params, stats)
    out["train_loss"].append(tr["loss"])
    out["train_accuracy"].append(tr["accuracy"])
    out["test_loss"].append(te["loss"])
    out["test_accuracy"].append(te["accuracy"])
    log(f"alpha={alpha:+.2f} train loss {tr['loss']:.4f} test acc {te['accuracy']:.4f}")
    if alpha in cos_alphas:
      cos = gradient_cosines(cosine_fn, params, stats, direction, mask,
                             dataset.x_train[cos_idx], dataset.y_train_true[cos_idx],
                             chunk_size=int(settings.chunk_size))
      labels = dataset.y_train_true[cos_idx]
      out["cosines"][f"{alpha:g}"] = {
          "values": [None if np.isnan(c) else float(c) for c in cos],
          "labels": labels.tolist(), "summary": summarize(cos),
          "num_zero_grad": int(np.isnan(cos).sum()),
          "top": top_fraction_classes(cos, labels, float(settings.top_fraction),
                                      dataset.num_classes)}
  # The endpoints with the statistics stored in their checkpoints, for comparison.
  for name, sol in (("start", start), ("end", end)):
    tr, te = metrics(sol.params, sol.batch_stats)
    out[f"{name}_stored_stats"] = {"train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
                                   "test_loss": te["loss"], "test_accuracy": te["accuracy"]}
  same = lambda a, b: all(bool(np.array_equal(np.asarray(x), np.asarray(y)))
                          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  out["endpoints_exact"] = bool(
      same(interpolate(start.params, end.params, 0.0, mask), start.params)
      and same(interpolate(start.params, end.params, 1.0, mask), end.params))
  out["same_mask"] = same(start.mask, end.mask)
  out["direction_norm"] = float(np.sqrt(sum(
      float(np.vdot(np.asarray(d, np.float64), np.asarray(d, np.float64)))
      for d in jax.tree.leaves(direction))))
  out["monotone_train_loss_01"] = _monotone_decreasing(alphas, out["train_loss"])
  return out


def _monotone_decreasing(alphas, losses) -> bool:
  inside = [l for a, l in zip(alphas, losses) if 0.0 <= a <= 1.0]
  return bool(all(b <= a + 1e-12 for a, b in zip(inside, inside[1:])))


def analyze(runs, settings, cache: stages.StageCache, datasets) -> dict:
  """``{"seedS": {"init_s": line, "init_f": line}}`` at ``settings.sparsity``."""
  sp = round(float(settings.sparsity), 6)
  out = {}
  inputs = {k: v for k, v in settings.items() if k not in ("enabled", "seeds")}
  seeds = {int(s) for s in settings.get("seeds", ())}
  for spec, scratch in sorted(runs.items()):
    if spec.family != "clean" or spec.regime != "scratch" or round(spec.sparsity, 6) != sp:
      continue
    if seeds and spec.seed not in seeds:
      continue
    finetune = next(r for s, r in runs.items() if s.family == "clean"
                    and s.regime == "finetune" and round(s.sparsity, 6) == sp
                    and s.seed == spec.seed)
    def compute(scratch=scratch, finetune=finetune, spec=spec):
      dataset = datasets.get(finetune.config.dataset)
      sol_f = load_solution(finetune.workdir)
      lines = {}
      for name, path in (("init_s", os.path.join(scratch.workdir, "init")),
                         ("init_f", os.path.join(finetune.workdir, "init"))):
        start = load_solution(path)
        lines[name] = evaluate_line(
            start, sol_f, dataset, settings,
            log=lambda m, n=name: stages.log(f"interpolation: seed{spec.seed} {n}: {m}"))
      return lines
    out[f"seed{spec.seed}"] = cache.cached(
        f"interpolation-seed{spec.seed}-{sp:.2f}",
        {"scratch": scratch.hash, "finetune": finetune.hash, "settings": inputs}, compute)
  return out
