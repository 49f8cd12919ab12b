"""Masked SGD: exact zeros under a mask, torch-style SGD arithmetic, schedules."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax.errors import UserError
from snnjax.train import optim


def _params_and_mask(seed=0):
  rng = np.random.default_rng(seed)
  params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
                      "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}}
  mask = {"dense": {"kernel": jnp.asarray(rng.random((5, 4)) < 0.3),
                    "bias": jnp.ones((4,), bool)}}
  params = jax.tree.map(lambda p, m: p * m, params, mask)
  return params, mask


class MaskedSgdTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_coordinates_stay_exactly_zero(self):
    params, mask = _params_and_mask()
    tx = optim.masked_sgd(0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    state = tx.init(params)
    update = self.variant(lambda g, s, p, m: tx.update(g, s, p, mask=m))
    rng = np.random.default_rng(1)
    for _ in range(5):
      grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
      updates, state = update(grads, state, params, mask)
      params = jax.tree.map(lambda p, u: p + u, params, updates)
    inactive = ~np.asarray(mask["dense"]["kernel"])
    self.assertTrue(np.all(np.asarray(params["dense"]["kernel"])[inactive] == 0.0))
    momentum = [s for s in jax.tree.leaves(state) if np.shape(s) == (5, 4)]
    self.assertTrue(momentum and all(np.all(np.asarray(m)[inactive] == 0.0) for m in momentum))
    self.assertTrue(np.any(np.asarray(params["dense"]["kernel"])[~inactive] != 0.0))

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_torch_style_sgd_reference(self):
    params, mask = _params_and_mask(2)
    lr, mom, wd = 0.05, 0.9, 5e-4
    tx = optim.masked_sgd(lr, momentum=mom, weight_decay=wd)
    state = tx.init(params)
    update = self.variant(lambda g, s, p, m: tx.update(g, s, p, mask=m))
    ref_p = jax.tree.map(np.asarray, params)
    ref_buf = jax.tree.map(np.zeros_like, ref_p)
    rng = np.random.default_rng(3)
    for _ in range(4):
      grads = jax.tree.map(lambda p: np.asarray(rng.normal(size=p.shape), np.float32), ref_p)
      updates, state = update(jax.tree.map(jnp.asarray, grads), state, params, mask)
      params = jax.tree.map(lambda p, u: p + u, params, updates)
      # torch.optim.SGD: d = g + wd p; buf = mom buf + d; p -= lr buf; then masked.
      d = jax.tree.map(lambda g, p, m: (g + wd * p) * m, grads, ref_p, mask)
      ref_buf = jax.tree.map(lambda b, x: mom * b + x, ref_buf, d)
      ref_p = jax.tree.map(lambda p, b, m: (p - lr * b) * m, ref_p, ref_buf, mask)
    chex.assert_trees_all_close(params, jax.tree.map(jnp.asarray, ref_p), rtol=1e-5, atol=1e-6)

  def test_dense_when_mask_is_none(self):
    params, _ = _params_and_mask()
    tx = optim.masked_sgd(0.1, momentum=0.0)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    chex.assert_trees_all_close(updates, jax.tree.map(lambda g: -0.1 * g, grads))


def test_piecewise_schedule_boundaries_and_warmup():
  sched = optim.piecewise_schedule(0.1, 10, boundaries_epochs=(2, 4), decay=0.1)
  np.testing.assert_allclose([sched(0), sched(19), sched(20), sched(39), sched(40)],
                             [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6)
  warm = optim.piecewise_schedule(0.1, 10, boundaries_epochs=(5,), warmup_epochs=1)
  np.testing.assert_allclose([warm(0), warm(4), warm(9), warm(10), warm(50)],
                             [0.01, 0.05, 0.1, 0.1, 0.01], rtol=1e-6)


def test_schedule_rejects_non_positive_lr():
  with pytest.raises(UserError):
    optim.piecewise_schedule(0.0, 10)


def test_linear_and_cosine_decay_to_zero_over_the_run():
  lin = optim.decay_schedule("linear", 0.1, 100)
  np.testing.assert_allclose([lin(0), lin(50), lin(99), lin(100), lin(150)],
                             [0.1, 0.05, 0.001, 0.0, 0.0], rtol=1e-5, atol=1e-9)
  cos = optim.decay_schedule("cosine", 0.1, 100)
  np.testing.assert_allclose([cos(0), cos(50), cos(100)], [0.1, 0.05, 0.0], rtol=1e-5, atol=1e-9)
  warm = optim.decay_schedule("linear", 0.1, 100, warmup_epochs=1, steps_per_epoch=10)
  np.testing.assert_allclose([warm(0), warm(9), warm(10), warm(55), warm(100)],
                             [0.01, 0.1, 0.1, 0.05, 0.0], rtol=1e-5, atol=1e-9)
  with pytest.raises(UserError):
    optim.decay_schedule("exponential", 0.1, 100)


def test_make_optimizer_reads_the_schedule_field():
  import ml_collections  # pylint: disable=import-outside-toplevel
  cfg = ml_collections.ConfigDict({"lr": 0.1, "momentum": 0.9, "nesterov": False,
                                   "weight_decay": 0.0, "boundaries_epochs": (1,), "decay": 0.1,
                                   "warmup_epochs": 0.0, "schedule": "linear"})
  _, sched = optim.make_optimizer(cfg, steps_per_epoch=10, num_epochs=4)
  np.testing.assert_allclose([sched(0), sched(20), sched(40)], [0.1, 0.05, 0.0], atol=1e-7)
  cfg.schedule = "step"  # the boundaries apply again
  _, sched = optim.make_optimizer(cfg, steps_per_epoch=10, num_epochs=4)
  np.testing.assert_allclose([sched(9), sched(10)], [0.1, 0.01], rtol=1e-6)
