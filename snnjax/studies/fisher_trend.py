"""Stage 4: Tr(F) along training, on a fixed probe subset of the training set.

The trend runs keep a checkpoint every ``every_epochs`` epochs (see
``solutions.keeps_trend_checkpoints``) plus their init (epoch 0); this stage measures Tr(F) at each
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

from snnjax.estimators import fisher as fisher_lib
from snnjax.studies import measure as measure_lib
from snnjax.studies import stages
from snnjax.train.checkpoint import CheckpointStore
from snnjax.train.solution import load_solution


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the checkpoints kept in ``workdir/checkpoints``."""
  return CheckpointStore(os.path.join(workdir, "checkpoints"), read_only=True).steps()


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
  points = []
  init = load_solution(os.path.join(run.workdir, "init"))
  points.append({"epoch": 0, "step": 0, "tr_f": fisher_at(init, dataset, settings)})
  steps = checkpoint_steps(run.workdir)
  for step in steps:
    solution = load_solution(os.path.join(run.workdir, "checkpoints"), step=step)
    log(f"epoch {solution.epoch}")
    points.append({"epoch": solution.epoch, "step": step,
                   "tr_f": fisher_at(solution, dataset, settings)})
  return points


def run_trend(runs, settings: ml_collections.ConfigDict, cache: stages.StageCache, datasets,
              keep) -> dict:
  """``{run name: points}`` for the runs that keep trend checkpoints (``keep(spec)`` true)."""
  measured = {k: v for k, v in settings.items() if k not in ("enabled", "every_epochs",
                                                              "sparsities")}
  out = {}
  for spec, run in sorted(runs.items()):
    if not keep(spec):
      continue
    def compute(run=run, spec=spec):
      return trend_of_run(run, datasets.get(run.config.dataset), settings,
                          log=lambda m: stages.log(f"fisher_trend: {spec.name}: {m}"))
    out[spec.name] = cache.cached(f"trend-{spec.name}", {"run": run.hash, "settings": measured},
                                  compute)
  return out
