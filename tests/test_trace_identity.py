"""Tr(H) = Tr(F) for networks that are piecewise linear in each parameter; not for tanh.

The Hessian of the mean cross-entropy is the Gauss-Newton part J^T H_ce J plus
sum_c dL/dz_c * d^2 z_c / d theta^2. When the logits z are piecewise linear in every single
parameter (ReLU MLP, ReLU CNN with eval-mode BatchNorm and average pooling: each parameter enters
through one affine map followed by piecewise-linear maps), the diagonal of each d^2 z_c is zero
almost everywhere, so Tr(H) = Tr(J^T H_ce J) = Tr(true Fisher, exact over classes), per example
and hence for the mean. A tanh network has curvature in each parameter and the two differ.
"""

import numpy as np
import pytest

import _tiny as tiny
from snnjax.estimators.fisher import fisher_trace


def _hessian_trace_exact(name):
  return float(np.trace(tiny.hessian(name, fixture="classifier")))


@pytest.mark.parametrize("name", ["relu_mlp", "relu_cnn"])
def test_piecewise_linear_networks_have_tr_h_equal_tr_f(name):
  model, batch = tiny.classifier(name)
  tr_h = _hessian_trace_exact(name)
  tr_f = fisher_trace(model.logits_fn, model.params, batch, labels="exact").value
  np.testing.assert_allclose(tr_h, tr_f, rtol=1e-4)


def test_tanh_network_has_tr_h_different_from_tr_f():
  model, batch = tiny.classifier("tanh_mlp")
  tr_h = _hessian_trace_exact("tanh_mlp")
  tr_f = fisher_trace(model.logits_fn, model.params, batch, labels="exact").value
  assert abs(tr_h - tr_f) > 0.02 * abs(tr_f), (tr_h, tr_f)
