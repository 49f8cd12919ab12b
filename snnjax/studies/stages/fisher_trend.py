"""The Fisher-trend stage: Tr(F) along training, on a fixed probe subset of the training set.

The trend runs keep a checkpoint every ``every_epochs`` epochs (see
``runs_lib.keeps_trend_checkpoints``) plus their init (epoch 0); this stage measures Tr(F) at each
of them afterwards, on the same seeded subset of training examples each time. Measuring from
checkpoints rather than inside the training loop keeps the two stages apart: a change to the trend
settings (subset, kind, samples) re-measures without retraining. The study's own trend used an
EKFAC approximation; here it is the same Fisher estimator as the table's (by default the true
Fisher, Monte Carlo), on fewer examples.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from snnjax.errors import check
from snnjax.estimators import fisher as fisher_lib
from snnjax.studies import cache as cache_lib
from snnjax.studies import figures
from snnjax.studies import measure as measure_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies.stage import Stage
from snnjax.train import config_io
from snnjax.train.run_dir import RunDir


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True
  s.every_epochs = 10           # the trend runs keep a checkpoint this often
  s.sparsities = (0.90, 0.96)   # Sol-F / Sol-S at these sparsities (and Sol-D) are followed
  s.num_examples = 512          # the fixed probe subset of training examples
  s.kind = "mc"                 # mc | exact | empirical
  s.num_samples = 2             # labels sampled per example (mc)
  s.params = "kernels"          # all | kernels
  s.subset_seed = 1
  return s


def validate(config) -> None:
  t = config.fisher_trend
  check(all(0.0 < float(s) < 1.0 for s in t.sparsities),
        "study fisher_trend.sparsities must lie in (0, 1)")
  config_io.check_int(t.every_epochs, "study fisher_trend.every_epochs", 1, config_io.MAX_EPOCHS)
  config_io.check_int(t.num_examples, "study fisher_trend.num_examples", 1, config_io.MAX_COUNT)
  config_io.check_int(t.num_samples, "study fisher_trend.num_samples", 1, config_io.MAX_PROBES)
  check(t.kind in ("mc", "exact", "empirical"),
        "study fisher_trend.kind must be mc, exact or empirical")
  check(t.params in measure_lib.PARAM_SUBSETS, "study fisher_trend.params must be all or kernels")


def keeps_checkpoints(study: ml_collections.ConfigDict, spec) -> bool:
  """Whether the run keeps a checkpoint every ``fisher_trend.every_epochs`` epochs (Sol-D and the
  trend's sparsities, clean family).

  Independent of ``fisher_trend.enabled``: the cadence is part of the run's config (its hash), and
  turning the trend stage on or off must not retrain the runs it would read.
  """
  if spec.family != "clean":
    return False
  trend = {round(float(x), 6) for x in study.fisher_trend.sparsities}
  return spec.regime == "dense" or round(spec.sparsity, 6) in trend


def adjust_run(study, spec, config) -> None:
  if keeps_checkpoints(study, spec):
    every = int(study.fisher_trend.every_epochs)
    config.checkpoint_every_epochs = every
    config.checkpoint_keep = config.num_epochs // every + 2


def plan(config) -> set:
  return runs_lib.sparse_runs(config.fisher_trend.sparsities, config.seeds)


def fisher_at(solution, dataset, settings: ml_collections.ConfigDict) -> dict:
  """Tr(F) of ``solution`` on the trend's probe subset (``Estimate.as_dict()``)."""
  idx = measure_lib.train_subset(dataset.num_train, int(settings.num_examples),
                                 int(settings.subset_seed))
  logits_fn, _ = solution.functions(bn_mode="eval")
  est = fisher_lib.fisher_trace(
      logits_fn, solution.params, {"x": dataset.x_train[idx], "y": dataset.y_train[idx]},
      labels=fisher_lib.labels_for_kind(settings.kind),
      key=jax.random.key(int(settings.subset_seed)),
      mask=measure_lib.estimator_mask(solution.params, solution.mask, settings.params),
      num_samples=int(settings.num_samples) if settings.kind == "mc" else 1)
  return est.as_dict()


def trend_of_run(run, dataset, settings: ml_collections.ConfigDict, *, log=None) -> list[dict]:
  """``[{"epoch", "step", "tr_f": {...}}]`` for the init and every kept checkpoint of ``run``."""
  log = log or (lambda m: None)
  run_dir = RunDir(run.workdir)
  points = [{"epoch": 0, "step": 0, "tr_f": fisher_at(run_dir.init_solution(), dataset, settings)}]
  for step in run_dir.checkpoint_steps():
    solution = run_dir.solution(step=step)
    log(f"epoch {solution.epoch}")
    points.append({"epoch": solution.epoch, "step": step,
                   "tr_f": fisher_at(solution, dataset, settings)})
  return points


def _measured_settings(settings) -> dict:
  return {k: v for k, v in settings.items() if k not in ("enabled", "every_epochs", "sparsities")}


def compute(ctx) -> dict:
  """``{"points": {run name: points}, "runs": {run name: label, regime, sparsity, seed}}`` for
  the runs that keep trend checkpoints."""
  settings = ctx.config.fisher_trend
  points, labels = {}, {}
  for spec, run in sorted(ctx.clean.items()):
    if not keeps_checkpoints(ctx.config, spec):
      continue
    def compute_one(run=run, spec=spec):
      return trend_of_run(run, ctx.dataset(run), settings,
                          log=lambda m: cache_lib.log(f"fisher_trend: {spec.name}: {m}"))
    points[spec.name] = ctx.cache.cached(
        f"trend-{spec.name}", {"run": run.hash, "settings": _measured_settings(settings)},
        compute_one)
    labels[spec.name] = {"label": spec.label, "regime": spec.regime, "sparsity": spec.sparsity,
                         "seed": spec.seed}
  return {"points": points, "runs": labels}


def fisher_trend_figure(trend: dict, labels: dict, path: str) -> str:
  """Tr(F) on the probe subset vs epoch, one line per solution (colour by regime, style by
  sparsity); with several seeds the line is their mean and the band their range (min-max)."""
  fig, ax = figures.plt.subplots(figsize=(6.5, 4.2))
  styles = ["-", "--", ":", "-."]
  sparsities = sorted({labels[n]["sparsity"] for n in trend if labels[n]["regime"] != "dense"})
  groups: dict[tuple, list] = {}
  for name, points in sorted(trend.items()):
    info = labels[name]
    groups.setdefault((info["regime"], info["sparsity"], info["label"]), []).append(points)
  order = {"dense": 0, "finetune": 1, "scratch": 2, "rigl": 3}
  for (regime, sparsity, label), runs in sorted(groups.items(),
                                                key=lambda kv: (order[kv[0][0]], kv[0][1])):
    ls = "-" if regime == "dense" else styles[sparsities.index(sparsity) % 4]
    epochs = sorted(set.intersection(*[{p["epoch"] for p in pts} for pts in runs]))
    values = np.array([[next(p["tr_f"]["value"] for p in pts if p["epoch"] == e)
                        for e in epochs] for pts in runs], np.float64)
    text = label + (f" (mean of {len(runs)} seeds, band: range)" if len(runs) > 1 else "")
    ax.plot(epochs, values.mean(0), ls=ls, marker="o", ms=3, color=figures.COLORS[regime], label=text)
    if len(runs) > 1:
      ax.fill_between(epochs, values.min(0), values.max(0), color=figures.COLORS[regime], alpha=0.15)
  ax.set_yscale("log")
  ax.set_xlabel("epoch")
  ax.set_ylabel("Tr(F) on the probe subset (per-example mean)")
  ax.set_title("Fisher trace during training")
  ax.grid(alpha=0.3)
  ax.legend(loc="best")
  return figures.save(fig, path)


def report(rc, result) -> list[str]:
  if not result["points"]:
    return []
  path = fisher_trend_figure(result["points"], result["runs"],
                             os.path.join(rc.outdir, "fisher_trend.png"))
  ft = rc.config.fisher_trend
  return ["## Fisher trend", "",
          f"Tr(F) ({ft.kind}, {ft.params}, {ft.num_examples} fixed train examples) at the init "
          f"and every {ft.every_epochs} epochs, measured from the kept checkpoints.", "",
          f"![fisher trend]({os.path.basename(path)})", ""]


def estimate(costs) -> float:
  tr = costs.config.fisher_trend
  seconds = 0.0
  for spec, run in costs.clean.items():
    if keeps_checkpoints(costs.config, spec) and not costs.has(f"trend-{spec.name}", run.hash):
      d, g, _ = costs.unit(spec.name)
      points = int(run.config.num_epochs) // int(tr.every_epochs) + 2
      seconds += (points * min(int(tr.num_examples), d.num_train) * g
                  * costs.fisher_g(tr.kind, int(tr.num_samples), d.num_classes))
  return seconds


STAGE = Stage(name="fisher_trend", default_settings=default_settings, validate=validate,
              plan=plan, compute=compute, report=report, estimate=estimate,
              adjust_run=adjust_run)
