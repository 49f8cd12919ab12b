"""Measuring one solution: train error, test accuracy, Tr(H), Tr(F) and the input-Jacobian norm.

The defaults are the study's protocol (``../shared/STUDY-NOTES.md``):

* Tr(H): Hutchinson (Rademacher probes) on one batch of 1024 training examples, the mean
  cross-entropy on the labels trained on, all trainable params restricted to the active (unpruned)
  coordinates, BatchNorm in eval mode, up to 100 probes. The study stopped at a 0.1% relative
  change of the running mean (PyHessian); snnjax stops once the 95% confidence half-width of the
  estimate is below ``rtol`` times its value (``rtol`` = 0.01), a statistical criterion.
* Tr(F): the true Fisher (labels sampled from the model's softmax), Monte Carlo with 1000 training
  examples x 5 labels, a per-example mean, conv and linear weights only (no biases, no BatchNorm),
  active coordinates only, BatchNorm in eval mode.
* Jacobian: E_x ||d logits / d x||_F^2, squared Frobenius norm with respect to the normalized
  input, exact (one VJP per class), averaged over 1000 training examples, BatchNorm in eval mode.

The measured examples are a fixed seeded subset of the train split (the first ``n`` of one
permutation, so the Tr(H) examples include the Tr(F) examples when their sizes agree).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import numpy as np

from snnjax import sparsity
from snnjax.errors import UserError
from snnjax.estimators import fisher as fisher_lib
from snnjax.estimators import hessian as hessian_lib
from snnjax.estimators import jacobian as jacobian_lib
from snnjax.estimators import param_subsets as subsets
from snnjax.train import config_io
from snnjax.train import starting_point
from snnjax.train.loop import nonfinite_leaf

PARAM_SUBSETS = ("all", "kernels")


def default_settings() -> ml_collections.ConfigDict:
  """The study's measurement protocol (see the module doc)."""
  s = ml_collections.ConfigDict()
  s.subset_seed = 0
  s.key_seed = 0
  s.eval_batch_size = 500
  s.hessian = ml_collections.ConfigDict()
  s.hessian.enabled = True
  s.hessian.num_examples = 1024
  s.hessian.batch_size = 1024       # examples per forward pass (the loss is over all of them)
  s.hessian.method = "hutchinson"   # hutchinson | hutchpp
  s.hessian.max_probes = 100
  s.hessian.min_probes = 10
  s.hessian.rtol = 0.01             # 95% half-width / |estimate| stop; 0 = always max_probes
  s.hessian.params = "all"          # all | kernels
  s.hessian.bn_mode = "eval"        # eval | train
  s.fisher = ml_collections.ConfigDict()
  s.fisher.enabled = True
  s.fisher.kind = "mc"              # mc (true Fisher, sampled) | exact | empirical
  s.fisher.num_examples = 1000
  s.fisher.num_samples = 5
  s.fisher.params = "kernels"
  s.fisher.chunk_size = 32
  s.jacobian = ml_collections.ConfigDict()
  s.jacobian.enabled = True
  s.jacobian.num_examples = 1000
  s.jacobian.squared = True
  s.jacobian.num_projections = 0    # 0 = exact (one VJP per class)
  s.jacobian.chunk_size = 32
  return s


def validate_settings(s: ml_collections.ConfigDict) -> None:
  """Raises ``UserError`` naming the first invalid measurement setting."""
  def check(cond, message):
    if not cond:
      raise UserError(message)
  count, probes = config_io.MAX_COUNT, config_io.MAX_PROBES
  for name in ("subset_seed", "key_seed"):
    config_io.check_int(s[name], f"measure.{name}", 0, config_io.MAX_SEED)
  config_io.check_int(s.eval_batch_size, "measure.eval_batch_size", 1, count)
  for name in ("hessian", "fisher", "jacobian"):
    config_io.check_int(s[name].num_examples, f"measure.{name}.num_examples", 1, count)
  check(s.hessian.method in hessian_lib.METHODS,
        f"measure.hessian.method must be one of {hessian_lib.METHODS}, got {s.hessian.method!r}")
  config_io.check_int(s.hessian.max_probes, "measure.hessian.max_probes", 1, probes)
  config_io.check_int(s.hessian.min_probes, "measure.hessian.min_probes", 2, probes)
  check(s.hessian.min_probes <= s.hessian.max_probes,
        f"measure.hessian.min_probes={s.hessian.min_probes} exceeds measure.hessian.max_probes="
        f"{s.hessian.max_probes}: the early stop comes after min_probes, at most max_probes")
  config_io.check_number(s.hessian.rtol, "measure.hessian.rtol (0 = no early stop)", 0.0, 1e6)
  config_io.check_int(s.hessian.batch_size, "measure.hessian.batch_size", 1, count)
  check(s.hessian.bn_mode in ("eval", "train"), "measure.hessian.bn_mode must be eval or train")
  for name in ("hessian", "fisher"):
    check(s[name].params in PARAM_SUBSETS,
          f"measure.{name}.params must be one of {PARAM_SUBSETS}, got {s[name].params!r}")
  check(s.fisher.kind in fisher_lib.FISHER_KINDS,
        f"measure.fisher.kind must be one of {fisher_lib.FISHER_KINDS}, got {s.fisher.kind!r}")
  config_io.check_int(s.fisher.num_samples, "measure.fisher.num_samples", 1, probes)
  config_io.check_int(s.fisher.chunk_size, "measure.fisher.chunk_size", 1, count)
  config_io.check_int(s.jacobian.num_projections, "measure.jacobian.num_projections", 0, probes)
  config_io.check_int(s.jacobian.chunk_size, "measure.jacobian.chunk_size", 1, count)
  check(int(s.jacobian.num_projections) == 0 or bool(s.jacobian.squared),
        "measure.jacobian.num_projections > 0 needs measure.jacobian.squared=True")
  config_io.check_numbers(s, "measure")  # and no NaN, inf or 20-digit integer anywhere else


def describe_settings(s: ml_collections.ConfigDict) -> list[str]:
  """The measurement choices in words, one line each (stated beside every table)."""
  h, f, j = s.hessian, s.fisher, s.jacobian
  stop = (f"stop when the 95% half-width < {h.rtol:g} x |estimate| (after {h.min_probes})"
          if h.rtol > 0 else "no early stop")
  fisher_labels = {"mc": f"true Fisher, {f.num_samples} labels sampled from the model per example",
                   "exact": "true Fisher, exact expectation over the classes",
                   "empirical": "empirical Fisher (dataset labels)"}[f.kind]
  jac = (f"{j.num_projections} Rademacher projections per example" if j.num_projections
         else "exact (one VJP per class)")
  return [
      f"Tr(H): {h.method}, up to {h.max_probes} probes, {stop}; {h.num_examples} train examples "
      f"(seeded subset {s.subset_seed}); mean cross-entropy on the labels trained on; "
      f"{h.params} trainable params, active (unpruned) coordinates only; BatchNorm {h.bn_mode} mode.",
      f"Tr(F): {fisher_labels}; per-example mean over {f.num_examples} train examples; "
      f"{h_params_words(f.params)}, active coordinates only; BatchNorm eval mode.",
      f"Jacobian: {'squared ' if j.squared else ''}Frobenius norm of d logits / d input "
      f"(normalized input), {jac}, mean over {j.num_examples} train examples; BatchNorm eval mode.",
      plus_minus_line(s),
  ]


def plus_minus(s: ml_collections.ConfigDict) -> dict:
  """What the "±" of each estimate covers under settings ``s``: ``{"tr_h", "tr_f", "jacobian":
  {"short": column label, "words": a sentence} or None}`` (None: the value is exact for its
  examples and has no ±). Every ± of a single measurement is one standard error; what varies:

  * Tr(H): the random probes only (the ``hessian.num_examples`` examples are fixed); with
    ``hutchpp`` the residual probes only (the sketch's variation is not in it).
  * Tr(F): ``mc``: the examples (a sample of the training set) and the labels sampled per
    example; ``exact`` / ``empirical``: none (exact for the examples measured).
  * Jacobian: exact (one VJP per class): none; with projections: the examples and projections.
  """
  h, f, j = s.hessian, s.fisher, s.jacobian
  out = {}
  probes = "the residual Hutchinson probes" if h.method == "hutchpp" else "the random probes"
  out["tr_h"] = {"short": "stderr: probes",
                 "words": f"Tr(H) ± one standard error over {probes} only (its "
                          f"{h.num_examples} examples fixed)"}
  out["tr_f"] = ({"short": "stderr: examples + sampled labels",
                  "words": f"Tr(F) ± one standard error over the {f.num_examples} examples (a "
                           "sample of the training set) and the labels sampled for each"}
                 if f.kind == "mc" else None)
  out["jacobian"] = ({"short": "stderr: examples + projections",
                      "words": f"Jacobian ± one standard error over the {j.num_examples} "
                               "examples and the random projections"}
                     if int(j.num_projections) else None)
  return out


def plus_minus_line(s: ml_collections.ConfigDict) -> str:
  """One sentence saying what every ± of a measurement under ``s`` covers."""
  pm = plus_minus(s)
  names = {"tr_h": "Tr(H)", "tr_f": "Tr(F)", "jacobian": "Jacobian"}
  parts = [pm[k]["words"] if pm[k] else f"{names[k]} has no ± (exact for its examples)"
           for k in ("tr_h", "tr_f", "jacobian")]
  return "±: " + "; ".join(parts) + "."


def h_params_words(params: str) -> str:
  return {"all": "all trainable params",
          "kernels": "conv and linear weights only (no biases, no BatchNorm)"}[params]


def train_subset(num_train: int, size: int, seed: int) -> np.ndarray:
  """The first ``size`` indices of a seeded permutation of ``range(num_train)`` (all if larger)."""
  perm = np.random.default_rng(seed).permutation(num_train)
  return perm[:min(size, num_train)]


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> list[dict]:
  return [{"x": x[i:i + batch_size], "y": y[i:i + batch_size]}
          for i in range(0, len(x), batch_size)]


def estimator_mask(params: Any, mask: Any, include: str) -> Any:
  """The sparsity ``mask`` restricted to the parameter subset ``include``."""
  return subsets.combine_masks(mask, subsets.param_subset_mask(params, include))


def subset_traces(solution, dataset, *, num_examples: int, num_probes: int, seed: int = 0,
                  blocks=None) -> tuple:
  """``(Tr(H), exact Tr(F))`` Estimates of ``solution`` on ``num_examples`` seeded training
  examples (eval-mode BatchNorm, every parameter, the mask applied): Hutchinson with exactly
  ``num_probes`` probes (no early stop) and the exact Fisher, each averaged over the examples;
  ``blocks`` (the estimators' ``blocks=``) adds per-block answers from the same probes."""
  idx = train_subset(dataset.num_train, num_examples, seed)
  batch = {"x": dataset.x_train[idx], "y": dataset.y_train[idx]}
  logits_fn, loss_fn = solution.functions(bn_mode="eval")
  mask = estimator_mask(solution.params, solution.mask, "all")
  extra = {} if blocks is None else {"blocks": blocks}
  tr_h = hessian_lib.hessian_trace(loss_fn, solution.params, batch, key=jax.random.key(seed),
                                   num_probes=int(num_probes), mask=mask, rtol=None, **extra)
  tr_f = fisher_lib.fisher_trace(logits_fn, solution.params, batch, labels="exact", mask=mask,
                                 **extra)
  return tr_h, tr_f


def accuracy_metrics(solution, dataset, *, batch_size: int = 500) -> dict:
  """Eval-mode loss/accuracy of ``solution`` on the whole train split (labels trained on; also
  the true labels) and the test split."""
  out = {}
  train = solution.evaluate(dataset.x_train, dataset.y_train, batch_size=batch_size)
  test = solution.evaluate(dataset.x_test, dataset.y_test, batch_size=batch_size)
  out["train_loss"], out["train_accuracy"] = train["loss"], train["accuracy"]
  out["train_error"] = 1.0 - train["accuracy"]
  out["test_loss"], out["test_accuracy"] = test["loss"], test["accuracy"]
  return out


def mask_density(mask: Any, prunable_tree: Any) -> dict:
  """Active / total coordinates of the prunable leaves (``prunable_tree``: True where a leaf may
  be pruned, as the run's config says) and the sparsity they make, dense prunable leaves included."""
  rows = sparsity.layer_densities(mask, prunable_tree).values()
  active, total = sum(r[0] for r in rows), sum(r[1] for r in rows)
  return {"prunable_active": int(active), "prunable_total": int(total),
          "measured_sparsity": sparsity.sparsity_of(mask, prunable_tree)}


def check_finite_solution(solution) -> None:
  """Raises ``UserError`` when the params or BatchNorm statistics of ``solution`` hold NaN or inf
  (a diverged run: every estimate of it would be meaningless)."""
  for name, tree in (("params", solution.params), ("batch stats", solution.batch_stats)):
    bad = nonfinite_leaf(tree)
    if bad is not None:
      raise UserError(f"{name} of {solution.path} are not finite (leaf {bad}); the run diverged: "
                      "retrain it (lower config.optim.lr) instead of measuring it")


def check_solution_dataset(solution, dataset) -> None:
  """Refuses a solution whose checkpoint was trained on inputs or classes other than ``dataset``'s
  (the dataset its config.json names): its numbers would be meaningless, or a JAX shape error."""
  shape, classes = solution.meta.get("input_shape"), solution.meta.get("num_classes")
  if shape is not None and tuple(shape) != tuple(dataset.input_shape):
    raise UserError(f"{solution.path} was trained on inputs of shape {tuple(shape)}, but its "
                    f"config.json names {dataset.name} ({tuple(dataset.input_shape)}): the config "
                    "does not belong to this checkpoint")
  if classes is not None and int(classes) != int(dataset.num_classes):
    raise UserError(f"{solution.path} was trained on {classes} classes, but its config.json names "
                    f"{dataset.name} ({dataset.num_classes} classes): the config does not belong "
                    "to this checkpoint")


def _check_finite_value(solution, what: str, value) -> None:
  if value is not None and not math.isfinite(float(value)):
    raise UserError(f"{what} of {solution.path} came out non-finite ({value}); not reported")


def _checked_estimate(solution, what: str, est) -> dict:
  d = est.as_dict()
  _check_finite_value(solution, what, d.get("value"))
  _check_finite_value(solution, f"{what} (its standard error)", d.get("stderr"))
  return d


def measure_solution(solution, dataset, settings: ml_collections.ConfigDict, *,
                     log=None) -> dict:
  """The table's numbers for one solution (see the module doc for the protocol).

  Args:
    solution: a ``snnjax.train.Solution``.
    dataset: the ``snnjax.data.Dataset`` it was trained on.
    settings: ``default_settings()`` or a variant.
    log: optional ``log(message)`` for progress.

  Returns:
    A JSON-able dict: ``train_error``, ``train_accuracy``, ``train_loss`` (whole train split,
    labels trained on), ``test_accuracy``, ``test_loss`` (whole test split), ``tr_h``, ``tr_f``,
    ``jacobian`` (``Estimate.as_dict()``: ``value``, ``stderr``, ``num_examples``,
    ``num_probes`` and details, and ``plus_minus``: what the stderr covers in words, None when
    exact, see :func:`plus_minus`; None when disabled) and the mask's measured sparsity.

  Raises:
    UserError: params or BatchNorm statistics that are not finite (``check_finite_solution``), or
      a metric or estimate that comes out non-finite.
  """
  validate_settings(settings)
  check_finite_solution(solution)
  log = log or (lambda message: None)
  out = accuracy_metrics(solution, dataset, batch_size=int(settings.eval_batch_size))
  for k in ("train_loss", "test_loss"):
    _check_finite_value(solution, k, out[k])
  out.update(mask_density(solution.mask, starting_point.prunable_tree(solution.config,
                                                            solution.params)))
  params, mask = solution.params, solution.mask
  largest = max(int(settings[k].num_examples) for k in ("hessian", "fisher", "jacobian"))
  idx = train_subset(dataset.num_train, largest, int(settings.subset_seed))
  key = jax.random.key(int(settings.key_seed))
  logits_fn, _ = solution.functions(bn_mode="eval")

  out["tr_h"] = out["tr_f"] = out["jacobian"] = None
  if settings.hessian.enabled:
    h = settings.hessian
    sel = idx[:int(h.num_examples)]
    _, loss_fn = solution.functions(bn_mode=h.bn_mode)
    log(f"Tr(H) on {len(sel)} examples")
    est = hessian_lib.hessian_trace(
        loss_fn, params, _batches(dataset.x_train[sel], dataset.y_train[sel], int(h.batch_size)),
        key=jax.random.fold_in(key, 0), num_probes=int(h.max_probes),
        mask=estimator_mask(params, mask, h.params), method=h.method,
        rtol=float(h.rtol) if h.rtol > 0 else None, min_probes=int(h.min_probes))
    out["tr_h"] = _checked_estimate(solution, "Tr(H)", est)
  if settings.fisher.enabled:
    f = settings.fisher
    sel = idx[:int(f.num_examples)]
    log(f"Tr(F) on {len(sel)} examples")
    est = fisher_lib.fisher_trace(
        logits_fn, params, {"x": dataset.x_train[sel], "y": dataset.y_train[sel]},
        labels=fisher_lib.labels_for_kind(f.kind),
        key=jax.random.fold_in(key, 1), mask=estimator_mask(params, mask, f.params),
        num_samples=int(f.num_samples) if f.kind == "mc" else 1, chunk_size=int(f.chunk_size))
    out["tr_f"] = _checked_estimate(solution, "Tr(F)", est)
  if settings.jacobian.enabled:
    j = settings.jacobian
    sel = idx[:int(j.num_examples)]
    log(f"Jacobian norm on {len(sel)} examples")
    projections = int(j.num_projections) or None
    est = jacobian_lib.jacobian_norm(
        logits_fn, params, {"x": dataset.x_train[sel]}, squared=bool(j.squared),
        num_projections=projections, key=jax.random.fold_in(key, 2) if projections else None,
        chunk_size=int(j.chunk_size))
    out["jacobian"] = _checked_estimate(solution, "the Jacobian norm", est)
  pm = plus_minus(settings)
  for k in ("tr_h", "tr_f", "jacobian"):
    if out[k] is not None:
      out[k]["plus_minus"] = pm[k]["words"] if pm[k] and out[k]["stderr"] is not None else None
  return out
