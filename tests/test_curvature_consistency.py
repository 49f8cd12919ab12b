"""Built-in sanity check at real scale: Tr(H) = Tr(GGN) = Tr(F) for ReLU networks, not for tanh ones.

A ReLU network with eval-mode BatchNorm is piecewise linear in every single parameter, so the diagonal
of the Hessian's second-order term (sum_k dL/dz_k * d^2 z_k / d theta_i^2) vanishes and the Hessian trace
equals the trace of the Gauss-Newton matrix, which for softmax cross-entropy is the exact true Fisher.
"""

import jax
import numpy as np
import pytest

from snnjax import estimators as est
from snnjax.train import load_solution, train_and_evaluate
from tests._train_configs import tiny


def _batch(dataset_x, dataset_y, n):
  return {"x": np.asarray(dataset_x[:n]), "y": np.asarray(dataset_y[:n])}


def _traces(sol, n, probes, key=0):
  from snnjax.data import load_dataset  # pylint: disable=import-outside-toplevel
  data = load_dataset(sol.config.dataset)
  batch = _batch(data.x_train, data.y_train, n)
  logits_fn, loss_fn = sol.functions()
  tr_h = est.hessian_trace(loss_fn, sol.params, batch, key=jax.random.key(key), num_probes=probes,
                           mask=sol.mask)
  tr_f = est.fisher_trace(logits_fn, sol.params, batch, labels="exact", mask=sol.mask)
  return tr_h, tr_f


@pytest.mark.slow
def test_trained_sparse_resnet20_hessian_trace_equals_exact_fisher(tmp_path):
  dense = tiny(model="resnet20", dataset="digits", epochs=2, shortcut="A")
  train_and_evaluate(dense, str(tmp_path / "dense"))
  sparse = tiny("finetune", model="resnet20", dataset="digits", epochs=1, sparsity=0.8, shortcut="A")
  sparse.dense_workdir = str(tmp_path / "dense")
  train_and_evaluate(sparse, str(tmp_path / "sparse"))
  sol = load_solution(str(tmp_path / "sparse"))
  tr_h, tr_f = _traces(sol, n=128, probes=40)
  assert tr_f.value > 0 and tr_h.stderr > 0
  assert abs(tr_h.value - tr_f.value) < 3 * tr_h.stderr, (tr_h.value, tr_h.stderr, tr_f.value)


def test_tanh_mlp_hessian_trace_differs_from_fisher(tmp_path):
  config = tiny(model="mlp", dataset="mnist1d", epochs=1, activation="tanh")
  config.optim.lr = 0.01
  train_and_evaluate(config, str(tmp_path / "tanh"))
  sol = load_solution(str(tmp_path / "tanh"))
  tr_h, tr_f = _traces(sol, n=512, probes=200)
  assert abs(tr_h.value - tr_f.value) > 4 * tr_h.stderr, (tr_h.value, tr_h.stderr, tr_f.value)
