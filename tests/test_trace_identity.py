"""Tr(H) = Tr(F) for networks that are piecewise linear in each parameter; not for tanh.

The Hessian of the mean cross-entropy is the Gauss-Newton part J^T H_ce J plus
sum_c dL/dz_c * d^2 z_c / d theta^2. When the logits z are piecewise linear in every single
parameter (ReLU MLP, ReLU CNN with eval-mode BatchNorm and average pooling: each parameter enters
through one affine map followed by piecewise-linear maps), the diagonal of each d^2 z_c is zero
almost everywhere, so Tr(H) = Tr(J^T H_ce J) = Tr(true Fisher, exact over classes), per example
and hence for the mean. A tanh network has curvature in each parameter and the two differ.
"""

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import _tiny_models as tm
from snnjax.estimators.fisher import fisher_trace


def _hessian_trace_exact(model, batch):
  flat, unravel = ravel_pytree(model.params)
  hess = jax.jit(jax.hessian(lambda f: model.loss_fn(unravel(f), batch)))(flat)
  return float(np.trace(np.asarray(hess, np.float64)))


@pytest.mark.parametrize("name", ["relu_mlp", "relu_cnn"])
def test_piecewise_linear_networks_have_tr_h_equal_tr_f(name):
  model = tm.mlp(4, activation="relu") if name == "relu_mlp" else tm.cnn(5, activation="relu")
  batch = tm.make_batch(6, model, 8)
  tr_h = _hessian_trace_exact(model, batch)
  tr_f = fisher_trace(model.logits_fn, model.params, batch, kind="exact").value
  assert tr_f > 0
  np.testing.assert_allclose(tr_h, tr_f, rtol=1e-4)


def test_tanh_network_has_tr_h_different_from_tr_f():
  model = tm.mlp(4, activation="tanh")
  batch = tm.make_batch(6, model, 8)
  tr_h = _hessian_trace_exact(model, batch)
  tr_f = fisher_trace(model.logits_fn, model.params, batch, kind="exact").value
  assert abs(tr_h - tr_f) > 0.02 * abs(tr_f), (tr_h, tr_f)
