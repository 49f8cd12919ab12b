"""Tests of snnjax.estimators.diagonals against the dense Hessian and explicit loops."""

import jax
import numpy as np
import pytest

import _tiny as tiny
from snnjax.errors import UserError
from snnjax.estimators import diagonals, fisher


def _within_4se(est, ref):
  value, se = est.flat()
  z = (value - ref) / np.where(se > 0, se, np.inf)
  assert np.all(np.abs(value - ref)[se == 0] < 1e-5)
  assert np.mean(z ** 2) < 2.0 and np.abs(z).max() < 4.0, (np.mean(z ** 2), np.abs(z).max())


@pytest.mark.parametrize("masked", [False, True])
def test_hessian_diagonal_exact_and_hutchinson(masked):
  model, batch = tiny.curvature("mlp")
  h = tiny.hessian("mlp")
  mask = tiny.random_mask(model.params, 0.5, seed=1) if masked else None
  m = np.ones(h.shape[0], bool) if mask is None else tiny.flat_mask(mask)
  ref = np.diag(h) * m
  exact = diagonals.hessian_diagonal(model.loss_fn, model.params, batch, method="exact",
                                     mask=mask)
  assert exact.stderr is None
  np.testing.assert_allclose(exact.flat()[0], ref, rtol=1e-4, atol=1e-6)
  assert jax.tree.structure(exact.value) == jax.tree.structure(model.params)
  est = diagonals.hessian_diagonal(model.loss_fn, model.params, batch, key=jax.random.key(2),
                                   num_probes=40, mask=mask)
  assert est.num_probes == 40 and np.all(est.flat()[0][~m] == 0)
  _within_4se(est, ref)


def test_hessian_xdiag_on_decaying_spectrum():
  model, batch = tiny.curvature("linear")
  ref = np.diag(tiny.hessian("linear"))
  est = diagonals.hessian_diagonal(model.loss_fn, model.params, batch, key=jax.random.key(3),
                                   num_probes=40, method="xdiag")
  _within_4se(est, ref)
  hutch = diagonals.hessian_diagonal(model.loss_fn, model.params, batch, key=jax.random.key(3),
                                     num_probes=40)
  err = lambda e: np.sqrt(np.mean((e.flat()[0] - ref) ** 2))
  assert err(est) < err(hutch)  # the sketch pays on a fast-decaying spectrum


def test_size_guard():
  model, batch = tiny.curvature("mlp")
  with pytest.raises(UserError, match="max_dim"):
    diagonals.hessian_diagonal(model.loss_fn, model.params, batch, method="exact", max_dim=100)


def _loop_fisher_diag(name, weights_of):
  model, batch = tiny.classifier(name)
  grad_fn = tiny.log_prob_grad(name)
  total = 0.0
  for i, x in enumerate(batch["x"]):
    for c, w in weights_of(i):
      total = total + w * np.square(tiny.flat(grad_fn(model.params, x, c)))
  return total / batch["x"].shape[0]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_fisher_diagonal_exact_data_and_sampled(name):
  model, batch = tiny.classifier(name)
  mask = tiny.random_mask(model.params, 0.6, seed=4)
  m = tiny.flat_mask(mask)
  probs = np.asarray(jax.nn.softmax(model.logits_fn(model.params, batch["x"])), np.float64)
  ref_exact = _loop_fisher_diag(name, lambda i: enumerate(probs[i])) * m
  ref_data = _loop_fisher_diag(name, lambda i: [(int(batch["y"][i]), 1.0)]) * m
  exact = diagonals.fisher_diagonal(model.logits_fn, model.params, batch, mask=mask,
                                    chunk_size=3)  # 3 does not divide the batch: padding
  np.testing.assert_allclose(exact.flat()[0], ref_exact, rtol=1e-4, atol=1e-9)
  trace = fisher.fisher_trace(model.logits_fn, model.params, batch, mask=mask)
  np.testing.assert_allclose(exact.flat()[0].sum(), trace.value, rtol=1e-5)
  data = diagonals.fisher_diagonal(model.logits_fn, model.params, batch, labels="data",
                                   mask=mask)
  np.testing.assert_allclose(data.flat()[0], ref_data, rtol=1e-4, atol=1e-9)
  sampled = diagonals.fisher_diagonal(model.logits_fn, model.params, batch, labels="sampled",
                                      key=jax.random.key(0), num_samples=64, mask=mask)
  value, se = sampled.flat()
  active = m & (se > 0)
  z = (value - ref_exact)[active] / se[active]
  assert np.abs(z).max() < 4.0, np.abs(z).max()


def test_sampled_fisher_diagonal_is_exact_with_a_full_block_of_signs():
  """m = 4 stratified sign samples of a 4-class example span its classes: the exact diagonal."""
  model, batch = tiny.classifier("mlp")
  exact = diagonals.fisher_diagonal(model.logits_fn, model.params, batch).flat()[0]
  value = diagonals.fisher_diagonal(model.logits_fn, model.params, batch, labels="sampled",
                                    key=jax.random.key(4), num_samples=4).flat()[0]
  np.testing.assert_allclose(value, exact, rtol=1e-4, atol=1e-9)
  two = diagonals.fisher_diagonal(model.logits_fn, model.params, batch, labels="sampled",
                                  key=jax.random.key(0), num_samples=2).flat()[0]
  assert np.abs(two - exact).max() > 1e-3 * exact.max()  # fewer samples: still random


def test_sampled_fisher_diagonal_stderr_covers_its_error_over_keys():
  """z = (value - exact) / stderr of the sampled diagonal over 24 keys, on a confident 5-class
  CNN (issue 20: labels sampled from (p + uniform) / 2 with importance weights gave max |z|
  10.2 here, 13.8 at num_samples=2, 56 at 1). The stderr holds the examples' spread as well,
  so against the exact diagonal of the same examples mean z^2 < 1 (measured 0.26, max |z| 3.0
  at num_samples=4; 0.58 and 6.1 at 2). Unbiased: the mean over the keys is within a few of
  its standard errors of the exact one."""
  model = tiny.cnn(3, num_classes=5)
  params = dict(model.params, head=dict(model.params["head"],
                                        kernel=model.params["head"]["kernel"] * 4))
  batch = tiny.make_batch(9, model, 48)
  exact = diagonals.fisher_diagonal(model.logits_fn, params, batch).flat()[0]
  zs, values = [], []
  for s in range(24):
    value, se = diagonals.fisher_diagonal(model.logits_fn, params, batch, labels="sampled",
                                          key=jax.random.key(s), num_samples=4).flat()
    assert np.all(np.abs(value - exact)[se == 0] < 1e-6 * exact.max())
    ok = se > 0
    zs.append((value - exact)[ok] / se[ok])
    values.append(value)
  z = np.concatenate(zs)
  assert 0.1 < np.mean(z ** 2) < 1.2, np.mean(z ** 2)
  assert np.abs(z).max() < 6.0, np.abs(z).max()
  assert np.mean(np.abs(z) > 4) <= 0.001, np.mean(np.abs(z) > 4)
  values = np.array(values)
  z_mean = (values.mean(0) - exact) / (values.std(0, ddof=1) / np.sqrt(len(values)))
  assert np.abs(z_mean).max() < 5.0 and np.mean(z_mean ** 2) < 1.5, (np.abs(z_mean).max(),
                                                                     np.mean(z_mean ** 2))
