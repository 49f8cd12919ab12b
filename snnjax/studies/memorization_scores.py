"""Memorization and influence scores (Feldman & Zhang 2020, "What neural networks memorize and why").

K models are trained on random subsets of the training set, each holding a fraction ``fraction``
of the N examples (every subset the same size, drawn independently per model from ``seed``). With
``M`` (K, N) bool (M[k, i]: example i is in model k's subset) and ``C`` (K, N) bool (C[k, i]: model
k predicts example i's training label), the memorization score of example i is

  mem(i) = P[correct on i | i in the subset] - P[correct on i | i not in the subset]
         = mean_{k: M[k,i]} C[k, i] - mean_{k: not M[k,i]} C[k, i],

each probability estimated over the models that hold (resp. leave out) example i. Its standard
error treats the two groups of models as independent Bernoulli samples:

  se(i) = sqrt(s_in^2 / n_in + s_out^2 / n_out),  s^2 = p (1 - p) n / (n - 1)

(the sample variance, ddof = 1, of the 0/1 correctness over the n models of the group; NaN where a
group has fewer than 2 models, mem NaN where it has none). The influence of training example i on
test example j is the same difference for the test example's correctness ``T`` (K, J):

  infl(i, j) = mean_{k: M[k,i]} T[k, j] - mean_{k: not M[k,i]} T[k, j].

The K models train as one vmapped program (:mod:`snnjax.train.ensemble`), model k with seed
``config.seed + k`` (its own init and shuffle) on row k of ``M``.
"""

from __future__ import annotations

import time

import ml_collections
import numpy as np

from snnjax import models
from snnjax.errors import UserError
from snnjax.studies import runs as runs_lib
from snnjax.train import ensemble


def draw_membership(num_models: int, num_train: int, fraction: float, seed: int) -> np.ndarray:
  """(K, N) bool: row k holds ``round(fraction * N)`` examples drawn without replacement, a
  function of ``(seed, k)`` only (adding models keeps the first rows)."""
  if not 0.0 < fraction < 1.0:
    raise UserError(f"the subset fraction must lie in (0, 1), got {fraction}")
  size = int(round(fraction * num_train))
  if not 0 < size < num_train:
    raise UserError(f"a subset fraction of {fraction} of {num_train} examples leaves no example "
                    "in or none out")
  out = np.zeros((num_models, num_train), bool)
  for k in range(num_models):
    out[k, np.random.default_rng((seed, k)).choice(num_train, size, replace=False)] = True
  return out


def _bernoulli_groups(m: np.ndarray, v: np.ndarray):
  """``m`` (K, N) 0/1 float, ``v`` (K, J) values: for each (i, j) the mean and the sample variance
  (ddof 1) of v[:, j] over the models with m[:, i] = 1 (``in``) and = 0 (``out``). Returns (p_in, p_out),
  (var_in, var_out), each (N, J), and (n_in, n_out), each (N,)."""
  n_in, n_out = m.sum(0), (1.0 - m).sum(0)
  with np.errstate(invalid="ignore", divide="ignore"):
    p_in = (m.T @ v) / n_in[:, None]
    p_out = ((1.0 - m).T @ v) / n_out[:, None]
    var_in = ((m.T @ (v * v)) - n_in[:, None] * p_in ** 2) / (n_in[:, None] - 1.0)
    var_out = (((1.0 - m).T @ (v * v)) - n_out[:, None] * p_out ** 2) / (n_out[:, None] - 1.0)
  var_in = np.where(n_in[:, None] > 1, np.maximum(var_in, 0.0), np.nan)
  var_out = np.where(n_out[:, None] > 1, np.maximum(var_out, 0.0), np.nan)
  return (p_in, p_out), (var_in, var_out), (n_in, n_out)


def _sample_var(sum_v, sum_vv, n):
  with np.errstate(invalid="ignore", divide="ignore"):
    var = (sum_vv - sum_v ** 2 / n) / (n - 1.0)
  return np.where(n > 1, np.maximum(var, 0.0), np.nan)


def _check(membership, correct, what):
  membership, correct = np.asarray(membership, bool), np.asarray(correct)
  if membership.ndim != 2 or correct.ndim != 2 or correct.shape[0] != membership.shape[0]:
    raise UserError(f"membership (K, N) and {what} (K, ...) disagree: {membership.shape} vs "
                    f"{correct.shape}")
  return membership, correct.astype(np.float64)


def memorization(membership: np.ndarray, correct: np.ndarray) -> dict:
  """Per training example (N,): ``mem``, ``se``, ``p_in``, ``p_out``, ``n_in``, ``n_out``.

  ``membership`` (K, N) bool; ``correct`` (K, N) bool or float, model k's correctness on example i.
  """
  membership, correct = _check(membership, correct, "correct")
  if correct.shape != membership.shape:
    raise UserError(f"correct must be (K, N) = {membership.shape}, got {correct.shape}")
  m = membership.astype(np.float64)
  n_in, n_out = m.sum(0), (1.0 - m).sum(0)
  c_in, c_out = m * correct, (1.0 - m) * correct
  with np.errstate(invalid="ignore", divide="ignore"):
    p_in, p_out = c_in.sum(0) / n_in, c_out.sum(0) / n_out
  var_in = _sample_var(c_in.sum(0), (c_in * correct).sum(0), n_in)
  var_out = _sample_var(c_out.sum(0), (c_out * correct).sum(0), n_out)
  with np.errstate(invalid="ignore", divide="ignore"):
    se = np.sqrt(var_in / n_in + var_out / n_out)
  return {"mem": p_in - p_out, "se": se, "p_in": p_in, "p_out": p_out, "n_in": n_in,
          "n_out": n_out}


def influence(membership: np.ndarray, correct_test: np.ndarray) -> dict:
  """``infl`` (N, J) and its ``se`` (N, J): the influence of each training example on each of J
  test examples; ``correct_test`` (K, J), model k's correctness on test example j."""
  membership, correct_test = _check(membership, correct_test, "correct_test")
  (p_in, p_out), (var_in, var_out), (n_in, n_out) = _bernoulli_groups(
      membership.astype(np.float64), correct_test)
  with np.errstate(invalid="ignore", divide="ignore"):
    se = np.sqrt(var_in / n_in[:, None] + var_out / n_out[:, None])
  return {"infl": p_in - p_out, "se": se}


def default_settings() -> ml_collections.ConfigDict:
  """The subset ensemble: K models, the subset fraction, the membership seed."""
  s = ml_collections.ConfigDict()
  s.num_models = 64             # K
  s.fraction = 0.7              # of the training set in each model's subset
  s.seed = 0                    # membership draws: row k from (seed, k)
  s.num_epochs = 0              # 0 = the training config's own (else its schedule rescaled)
  s.test_examples = 0           # J: infl(i, j) for the first J test examples (0 = off)
  return s


def validate_settings(s: ml_collections.ConfigDict, where: str = "memorization") -> None:
  if int(s.num_models) < 4:
    raise UserError(f"{where}.num_models must be >= 4, got {s.num_models}")
  if not 0.0 < float(s.fraction) < 1.0:
    raise UserError(f"{where}.fraction must lie in (0, 1), got {s.fraction}")
  if int(s.num_epochs) < 0:
    raise UserError(f"{where}.num_epochs must be >= 0, got {s.num_epochs}")
  if int(s.test_examples) < 0:
    raise UserError(f"{where}.test_examples must be >= 0, got {s.test_examples}")


def train_and_score(config: ml_collections.ConfigDict, dataset, settings: ml_collections.ConfigDict,
                    *, log: bool = False) -> dict:
  """Trains the subset ensemble of ``config`` on ``dataset`` and scores every training example.

  Returns the :func:`memorization` fields (lists), ``membership`` and ``correct`` (K, N) as
  uint8 lists, with ``test_examples`` J > 0 the ``infl`` / ``infl_se`` (N, J) and the test
  examples' ``test_correct`` (K, J), the ensemble's mean ``test_accuracy`` and ``train_seconds``.
  Correctness is on the labels trained on (``dataset.y_train``), eval-mode BatchNorm.
  """
  validate_settings(settings)
  config = config.copy_and_resolve_references()
  if int(settings.num_epochs):  # the lr schedule moved to the same fractions of the shorter run
    runs_lib.rescale_epochs(config, int(settings.num_epochs))
  k = int(settings.num_models)
  membership = draw_membership(k, dataset.num_train, float(settings.fraction), int(settings.seed))
  t0 = time.time()
  states = ensemble.train_members(config, dataset, seeds=[int(config.seed) + i for i in range(k)],
                                  membership=membership, log=log)
  seconds = time.time() - t0
  model = models.create_model(config.model.name, dataset.num_classes, **dict(config.model.kwargs))
  predict = ensemble.make_ensemble_predict(model.apply,
                                          vectorize=ensemble.default_vectorize(config))
  batch = int(config.eval_batch_size)
  train_pred = ensemble.predict_members(predict, states, dataset.x_train, batch).argmax(-1)
  test_pred = ensemble.predict_members(predict, states, dataset.x_test, batch).argmax(-1)
  correct = train_pred == dataset.y_train[None]
  test_correct = test_pred == dataset.y_test[None]
  out = {key: np.asarray(v).tolist() for key, v in memorization(membership, correct).items()}
  out.update(membership=membership.astype(np.uint8).tolist(), correct=correct.astype(np.uint8).tolist(),
             test_accuracy=float(test_correct.mean()),
             in_subset_accuracy=float(correct[membership].mean()),
             held_out_accuracy=float(correct[~membership].mean()), train_seconds=seconds,
             num_models=k, fraction=float(settings.fraction))
  j = min(int(settings.test_examples), len(dataset.y_test))
  if j:
    infl = influence(membership, test_correct[:, :j])
    out.update(infl=infl["infl"].tolist(), infl_se=infl["se"].tolist(),
               test_correct=test_correct[:, :j].astype(np.uint8).tolist())
  return out
