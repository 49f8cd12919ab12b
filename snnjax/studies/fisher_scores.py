"""Per-example scores for data scheduling: the true-Fisher trace of each training example at Init-S.

The study's data-scheduling remedy orders examples by their Fisher information at the sparse
init. Here the score of training example i is the trace of its true Fisher at Init-S,

  s_i = E_{y ~ p(.|x_i)} ||mask * grad_params log p_y(x_i)||^2,

with ``kind="exact"`` the expectation over the C classes computed exactly (C VJPs per example),
with ``kind="mc"`` a mean over ``num_samples`` labels drawn from the model (example i uses the key
``fold_in(key, i)``). As for the table's Tr(F): conv and linear weights only (``params="kernels"``)
restricted to the active (unpruned) coordinates, BatchNorm in eval mode, the example alone in its
forward pass. The mean of the scores is the Tr(F) of the whole training set at Init-S.

The scores are written as an ``.npy`` of shape (N,) (N = training examples, in dataset order)
inside the study's cache, ``DIR/results/closing_gap-scores-<hash>.npy``, ``hash`` a digest of the
Init-S run and these settings; a training config points at it in ``curriculum.scores_path``.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from snnjax.errors import UserError
from snnjax.estimators import fisher as fisher_lib
from snnjax.studies import cache as cache_lib
from snnjax.studies import measure as measure_lib
from snnjax.train import config_io
from snnjax.train.run_dir import RunDir

SCORE_KINDS = ("exact", "mc")


def default_settings() -> ml_collections.ConfigDict:
  """Score settings: exact true-Fisher trace, kernels only (the table's Tr(F) parameters)."""
  s = ml_collections.ConfigDict()
  s.kind = "exact"          # exact (C VJPs per example) | mc (num_samples sampled labels)
  s.num_samples = 1         # labels per example for kind="mc"
  s.params = "kernels"      # kernels | all
  s.key_seed = 0            # labels for kind="mc": fold_in(key(key_seed), i) for example i
  s.chunk_size = 32
  return s


def validate_settings(s: ml_collections.ConfigDict) -> None:
  """Raises ``UserError`` naming the first invalid score setting."""
  if s.kind not in SCORE_KINDS:
    raise UserError(f"closing_gap.scores.kind must be one of {SCORE_KINDS}, got {s.kind!r}")
  config_io.check_int(s.num_samples, "closing_gap.scores.num_samples", 1, config_io.MAX_PROBES)
  config_io.check_int(s.key_seed, "closing_gap.scores.key_seed", 0, config_io.MAX_SEED)
  if s.params not in measure_lib.PARAM_SUBSETS:
    raise UserError(f"closing_gap.scores.params must be one of {measure_lib.PARAM_SUBSETS}, "
                    f"got {s.params!r}")
  config_io.check_int(s.chunk_size, "closing_gap.scores.chunk_size", 1, config_io.MAX_COUNT)


def fisher_scores(solution, x: np.ndarray, settings: ml_collections.ConfigDict) -> np.ndarray:
  """Per-example true-Fisher traces (n,) float64 of ``solution`` on the inputs ``x`` (n, ...).

  Args:
    solution: a ``snnjax.train.Solution`` (e.g. ``load_solution(SCRATCH_WORKDIR + "/init")``).
    x: inputs in dataset order; example i of ``x`` is score i (and, for ``kind="mc"``, uses the
      key ``fold_in(key(settings.key_seed), i)``).
    settings: :func:`default_settings` or a variant.
  """
  validate_settings(settings)
  logits_fn, _ = solution.functions(bn_mode="eval")
  params = solution.params
  mc = settings.kind == "mc"
  # Labels are never read (exact / mc): zeros keep the batch in the estimators' contract.
  batch = {"x": x, "y": np.zeros((len(x),), np.int32)}
  est = fisher_lib.fisher_trace(
      logits_fn, params, batch, labels=fisher_lib.labels_for_kind(settings.kind),
      key=jax.random.key(int(settings.key_seed)) if mc else None,
      mask=measure_lib.estimator_mask(params, solution.mask, settings.params),
      num_samples=int(settings.num_samples) if mc else 1, chunk_size=int(settings.chunk_size),
      return_per_example=True)
  return np.asarray(est.extra["per_example"], np.float64)


def scores_path(cache: cache_lib.StageCache, init_hash: str,
                settings: ml_collections.ConfigDict) -> str:
  """Where the scores of the Init-S of run ``init_hash`` with ``settings`` live in the cache."""
  inputs = {"init_of_run": init_hash, "settings": settings}
  return os.path.join(cache.results_dir, f"closing_gap-scores-{cache_lib.digest(inputs)}.npy")


def _readable(path: str, num_train: int) -> bool:
  try:
    scores = np.load(path)
  except (OSError, ValueError):
    return False
  return scores.shape == (num_train,) and bool(np.all(np.isfinite(scores)))


def cached_scores(cache: cache_lib.StageCache, init_workdir: str, init_hash: str, dataset,
                  settings: ml_collections.ConfigDict, *, log=cache_lib.log) -> str:
  """The path of the (N,) score file of the Init-S in ``init_workdir``, computed once.

  ``init_workdir`` is a scratch run's work dir (its ``init`` checkpoint is Init-S); ``init_hash``
  that run's hash (it names the file together with ``settings``). A readable file of the right
  shape is reused; otherwise the scores of every training example of ``dataset`` are computed
  and written atomically (temporary file, then rename), so an interruption leaves no partial file.
  """
  path = scores_path(cache, init_hash, settings)
  name = os.path.basename(path)
  if os.path.exists(path) and _readable(path, dataset.num_train):
    cache.reused.append(path)
    cache.compute_times.setdefault(name, 0.0)
    log(f"closing_gap: reusing {os.path.relpath(path, cache.directory)}")
    return path
  log(f"closing_gap: scoring {dataset.num_train} examples at Init-S ({settings.kind} Fisher)")
  t0 = time.time()
  init = RunDir(init_workdir).init_solution()
  scores = fisher_scores(init, dataset.x_train, settings)
  os.makedirs(cache.results_dir, exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}.npy"
  np.save(tmp, scores)
  os.replace(tmp, path)
  cache.compute_times[name] = time.time() - t0
  cache.computed.append(path)
  return path


def summarize(scores: np.ndarray) -> dict:
  """Mean (the Init-S Tr(F) of the train set), spread and quantiles of the scores."""
  scores = np.asarray(scores, np.float64)
  q = np.quantile(scores, [0.0, 0.1, 0.5, 0.9, 1.0])
  return {"num_examples": int(scores.size), "mean": float(scores.mean()),
          "std": float(scores.std()), "min": float(q[0]), "q10": float(q[1]),
          "median": float(q[2]), "q90": float(q[3]), "max": float(q[4])}
