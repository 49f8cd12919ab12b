"""The interpolation stage: the line from an init to Sol-F, and how each example's gradient points along it.

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
Settings: ``config.interpolation``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from snnjax.errors import check
from snnjax.estimators import fisher
from snnjax.studies import cache as cache_lib
from snnjax.studies import figures
from snnjax.studies import interpolate as interpolate_lib
from snnjax.studies import findings as findings_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies.markdown import fmt
from snnjax.studies.stage import Stage
from snnjax.train import config_io
from snnjax.train.run_dir import RunDir
from snnjax.train.step import forward

PyTree = Any

# The segment's one home is snnjax.studies.interpolate (also ``snnjax.interpolate``).
interpolate = interpolate_lib.interpolate_params
tree_sub = interpolate_lib.tree_sub


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True
  s.sparsity = 0.90
  s.alphas = (-0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)
  s.cosine_alphas = (0.3, 0.9)
  s.num_examples = 2000         # train examples whose gradient cosines are measured
  s.eval_examples = 0           # train examples for loss/acc along alpha (0 = all)
  s.bn_examples = 0             # train examples for BN statistics (0 = all)
  s.bn_batch_size = 500
  s.top_fraction = 0.05         # the top cosines whose classes are counted
  s.subset_seed = 2
  s.chunk_size = 32             # examples per per-example-gradient call
  s.seeds = ()                  # () = every study seed
  return s


def validate(config) -> None:
  it = config.interpolation
  check(0.0 < float(it.sparsity) < 1.0, "study interpolation.sparsity must lie in (0, 1)")
  check(len(it.alphas) >= 2, "study interpolation.alphas needs >= 2 values")
  check(all(0.0 < float(a) < 1.0 for a in it.cosine_alphas),
        "study interpolation.cosine_alphas must lie in (0, 1) (the direction flips beyond 1)")
  check(0.0 < float(it.top_fraction) <= 1.0, "study interpolation.top_fraction must lie in (0, 1]")
  config_io.check_int(it.num_examples, "study interpolation.num_examples", 1, config_io.MAX_COUNT)
  for name in ("eval_examples", "bn_examples"):
    config_io.check_int(it[name], f"study interpolation.{name}", 0, config_io.MAX_COUNT)
  for name in ("bn_batch_size", "chunk_size"):
    config_io.check_int(it[name], f"study interpolation.{name}", 1, config_io.MAX_COUNT)


def plan(config) -> set:
  return runs_lib.sparse_runs([config.interpolation.sparsity], config.seeds)


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
  bn_x = dataset.x_train[interpolate_lib.subset(dataset.num_train, int(settings.bn_examples),
                                 int(settings.subset_seed))]
  eval_idx = interpolate_lib.subset(dataset.num_train, int(settings.eval_examples), int(settings.subset_seed) + 1)
  cos_idx = interpolate_lib.subset(dataset.num_train, int(settings.num_examples), int(settings.subset_seed) + 2)
  x_eval, y_eval = dataset.x_train[eval_idx], dataset.y_train_true[eval_idx]
  direction = tree_sub(end.params, start.params)
  cosine_fn = make_cosine_fn(apply_fn)
  cos_alphas = [float(a) for a in settings.cosine_alphas]
  alphas = sorted({float(a) for a in settings.alphas} | set(cos_alphas))
  out = {"cosines": {}}

  def metrics(params, stats):
    tr = end.evaluate(x_eval, y_eval, params=params, batch_stats=stats)
    te = end.evaluate(dataset.x_test, dataset.y_test, params=params, batch_stats=stats)
    return tr, te

  def cosines_at(alpha, params, stats):
    if alpha not in cos_alphas:
      return
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

  path = interpolate_lib.Path(
      model=end, start=start.params, end=end.params, mask=mask,
      stats_at=interpolate_lib.stats_function("recompute", end, start.batch_stats,
                                              end.batch_stats, bn_x=bn_x,
                                              bn_batch_size=int(settings.bn_batch_size)))
  line, _ = interpolate_lib.evaluate_path(path, alphas, train=(x_eval, y_eval),
                                          test=(dataset.x_test, dataset.y_test),
                                          on_point=cosines_at, log=log)
  out.update(line)
  # The endpoints with the statistics stored in their checkpoints, for comparison.
  for name, sol in (("start", start), ("end", end)):
    tr, te = metrics(sol.params, sol.batch_stats)
    out[f"{name}_stored_stats"] = {"train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
                                   "test_loss": te["loss"], "test_accuracy": te["accuracy"]}
  same = interpolate_lib.trees_equal
  out["endpoints_exact"] = bool(
      same(interpolate(start.params, end.params, 0.0, mask), start.params)
      and same(interpolate(start.params, end.params, 1.0, mask), end.params))
  out["same_mask"] = same(start.mask, end.mask)
  out["direction_norm"] = interpolate_lib.l2_norm(direction)
  out["monotone_train_loss_01"] = _monotone_decreasing(alphas, out["train_loss"])
  return out


def _monotone_decreasing(alphas, losses) -> bool:
  inside = [l for a, l in zip(alphas, losses) if 0.0 <= a <= 1.0]
  return bool(all(b <= a + 1e-12 for a, b in zip(inside, inside[1:])))


def _lines(ctx_runs, config) -> list:
  """``[(seed, Sol-S run, Sol-F run)]`` of the clean runs at the stage's sparsity and seeds."""
  sp = round(float(config.interpolation.sparsity), 6)
  seeds = set(runs_lib.stage_seeds(config, "interpolation"))
  by = {(s.regime, round(s.sparsity, 6), s.seed): r for s, r in ctx_runs.items()
        if s.family == "clean"}
  return [(seed, by[("scratch", s, seed)], by[("finetune", s, seed)])
          for (regime, s, seed) in sorted(by) if regime == "scratch" and s == sp
          and seed in seeds and ("finetune", s, seed) in by]


def _key(seed: int, config) -> str:
  return f"interpolation-seed{seed}-{float(config.interpolation.sparsity):.2f}"


def compute(ctx) -> dict:
  """``{"seedS": {"init_s": line, "init_f": line}}`` at ``interpolation.sparsity``."""
  settings = ctx.config.interpolation
  inputs = {k: v for k, v in settings.items() if k not in ("enabled", "seeds")}
  out = {}
  for seed, scratch, finetune in _lines(ctx.runs, ctx.config):
    def compute_one(scratch=scratch, finetune=finetune, seed=seed):
      dataset = ctx.dataset(finetune)
      sol_f = RunDir(finetune.workdir).solution()
      lines = {}
      for name, run in (("init_s", scratch), ("init_f", finetune)):
        lines[name] = evaluate_line(
            RunDir(run.workdir).init_solution(), sol_f, dataset, settings,
            log=lambda m, n=name: cache_lib.log(f"interpolation: seed{seed} {n}: {m}"))
      return lines
    out[f"seed{seed}"] = ctx.cache.cached(
        _key(seed, ctx.config),
        {"scratch": scratch.hash, "finetune": finetune.hash, "settings": inputs}, compute_one)
  return out


def interpolation_figure(lines: dict, path: str) -> str:
  """Loss and accuracy (train: true labels; test) along alpha for each line."""
  fig, axes = figures.plt.subplots(1, 2, figsize=(12, 4))
  styles = {"init_s": ("Init-S -> Sol-F", "-"), "init_f": ("Init-F -> Sol-F", "--")}
  for name, line in sorted(lines.items()):
    label, ls = styles[name]
    a = line["alphas"]
    axes[0].plot(a, line["train_loss"], ls=ls, marker="o", ms=3, color="#1f77b4",
                 label=f"{label}, train")
    axes[0].plot(a, line["test_loss"], ls=ls, marker="o", ms=3, color="#ff7f0e",
                 label=f"{label}, test")
    axes[1].plot(a, line["train_accuracy"], ls=ls, marker="o", ms=3, color="#1f77b4",
                 label=f"{label}, train")
    axes[1].plot(a, line["test_accuracy"], ls=ls, marker="o", ms=3, color="#ff7f0e",
                 label=f"{label}, test")
  axes[0].set_ylabel("cross-entropy (nats per example)")
  axes[0].set_yscale("log")
  axes[1].set_ylabel("accuracy (fraction)")
  for ax in axes:
    ax.set_xlabel("alpha (0 = init, 1 = Sol-F)")
    ax.axvline(0, color="k", lw=0.5)
    ax.axvline(1, color="k", lw=0.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
  axes[0].set_title("loss along theta(alpha), BN statistics recomputed")
  axes[1].set_title("accuracy along theta(alpha)")
  return figures.save(fig, path)


def cosine_figure(lines: dict, num_classes: int, path: str) -> str:
  """Violins of cos(-g_i, Sol-F - init) per alpha (one panel per line) and the class distribution
  of the top cosines at each alpha."""
  names = sorted(lines)
  fig, axes = figures.plt.subplots(2, len(names), figsize=(6.5 * len(names), 7.5), squeeze=False)
  titles = {"init_s": "Init-S -> Sol-F", "init_f": "Init-F -> Sol-F"}
  for col, name in enumerate(names):
    cos = lines[name]["cosines"]
    alphas = sorted(cos, key=float)
    data = [[v for v in cos[a]["values"] if v is not None] for a in alphas]
    ax = axes[0][col]
    if data and all(data):
      ax.violinplot(data, showmedians=True)
    ax.set_xticks(np.arange(1, len(alphas) + 1))
    ax.set_xticklabels([f"alpha={a}" for a in alphas])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("cos(-grad_i, Sol-F - init) (dimensionless)")
    ax.set_title(f"{titles.get(name, name)}: per-example gradient alignment")
    ax.grid(alpha=0.3)
    ax = axes[1][col]
    width = 0.8 / max(1, len(alphas))
    for j, a in enumerate(alphas):
      top = cos[a]["top"]
      counts = np.asarray(top["class_counts"], float)
      share = counts / counts.sum() if counts.sum() else counts
      ax.bar(np.arange(num_classes) + (j - (len(alphas) - 1) / 2) * width, share, width,
             label=f"alpha={a} (top {top['k']})")
    sizes = np.asarray(cos[alphas[0]]["top"]["class_sizes"], float) if alphas else None
    if sizes is not None and sizes.sum():
      ax.plot(np.arange(num_classes), sizes / sizes.sum(), "k.--", label="all measured examples")
    ax.set_xlabel("class (true label)")
    ax.set_ylabel("share of the top-cosine examples")
    ax.set_title("class distribution of the top cosines")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
  return figures.save(fig, path)


def report(rc, result) -> list[str]:
  if not result:
    return []
  seed_key = sorted(result)[0]
  lines = result[seed_key]
  p1 = interpolation_figure(lines, os.path.join(rc.outdir, "interpolation.png"))
  p2 = cosine_figure(lines, rc.results.get("num_classes", 10),
                     os.path.join(rc.outdir, "interpolation_cosines.png"))
  it = rc.config.interpolation
  md = ["## Interpolation", "",
        f"theta(alpha) = (1 - alpha) start + alpha Sol-F within the mask, sparsity "
        f"{it.sparsity:.2f} ({seed_key}); BatchNorm statistics recomputed on the training "
        "inputs at every alpha (endpoints included). Cosines: per-example negative gradient "
        "(cross-entropy, true labels, active coordinates) against Sol-F - start, on "
        f"{it.num_examples} train examples. The study's direction Sol-F - theta(alpha) equals "
        "(1 - alpha)(Sol-F - start): the same cosines for alpha < 1.", "",
        f"![interpolation]({os.path.basename(p1)})", "",
        f"![cosines]({os.path.basename(p2)})", "",
        "| line | endpoints exact | same mask | train loss monotone on [0, 1] | Sol-F test acc "
        "(recomputed / stored BN stats) | cosine mean (median) per alpha |",
        "|---|---|---|---|---|---|"]
  for name, line in sorted(lines.items()):
    end_acc = line["test_accuracy"][line["alphas"].index(1.0)] if 1.0 in line["alphas"] else None
    cos = ", ".join(f"{a}: {c['summary'].get('mean', float('nan')):.3f} "
                    f"({c['summary'].get('median', float('nan')):.3f})"
                    for a, c in sorted(line["cosines"].items(), key=lambda kv: float(kv[0])))
    md.append(f"| {name} | {line['endpoints_exact']} | {line['same_mask']} | "
              f"{line['monotone_train_loss_01']} | {fmt(end_acc)} / "
              f"{fmt(line['end_stored_stats']['test_accuracy'])} | {cos} |")
  return md + [""]


def findings(rc, result) -> list[dict]:
  """The train loss along Init-S -> Sol-F is not monotone (first seed)."""
  if not result:
    return []
  line = result[sorted(result)[0]]["init_s"]
  non_monotone = not line["monotone_train_loss_01"]
  return [findings_lib.finding(
      "interpolation_not_monotone",
      "the train loss along Init-S -> Sol-F is not monotone (it first rises)",
      "not monotone: first rose", "not monotone" if non_monotone else "monotone decreasing",
      findings_lib.verdict(non_monotone))]


def estimate(costs) -> float:
  it = costs.config.interpolation
  seconds = 0.0
  for seed, scratch, finetune in _lines(costs.runs, costs.config):
    if not costs.has(_key(seed, costs.config), scratch.hash):
      d, g, f = costs.unit(scratch.spec.name)
      bn = int(it.bn_examples) or d.num_train
      ev = int(it.eval_examples) or d.num_train
      seconds += (2 * len(it.alphas) * (costs.TRAIN_MODE_F * bn + ev) * f
                  + 2 * len(it.cosine_alphas) * int(it.num_examples) * costs.SAMPLED_FISHER_G * g)
  return seconds


STAGE = Stage(name="interpolation", default_settings=default_settings, validate=validate,
              plan=plan, compute=compute, report=report, findings=findings, estimate=estimate)
