"""Tests for snnjax.sparsity.dynamic: the drop schedule, RigL / SET drop-grow and the state reset."""

import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from snnjax import sparsity
from snnjax.errors import UserError
from snnjax.sparsity import dynamic


def _params(seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return {"stem": {"kernel": jax.random.normal(k1, (3, 3, 1, 4))},
          "dense": {"kernel": jax.random.normal(k2, (16, 8)), "bias": jnp.zeros(8)},
          "head": {"kernel": jax.random.normal(k3, (8, 2)), "bias": jnp.zeros(2)}}


def _setup(seed=0, sparsity_level=0.7):
  params = _params(seed)
  prunable = sparsity.prunable(params)
  mask = sparsity.random_mask(jax.random.key(seed + 1), params, sparsity_level,
                              prunable_tree=prunable)
  return sparsity.apply_mask(params, mask), mask, prunable


def test_schedule_matches_the_cosine_formula():
  sched = dynamic.DropSchedule(end_step=750, update_every=100, initial_fraction=0.3)
  assert sched.update_steps() == [100, 200, 300, 400, 500, 600, 700]
  for t in (0, 1, 100, 375, 600, 750):
    assert sched.fraction(t) == pytest.approx(0.3 / 2 * (1 + math.cos(math.pi * t / 750)), abs=1e-12)
  assert sched.fraction(375) == pytest.approx(0.15)
  assert sched.fraction(751) == 0.0
  assert [t for t in range(1001) if sched.is_update_step(t)] == sched.update_steps()
  const = dynamic.DropSchedule(end_step=10, update_every=5, initial_fraction=0.2, decay="constant")
  assert const.fraction(7) == 0.2 and const.fraction(11) == 0.0


def test_make_schedule_from_a_config_block_and_bad_values():
  cfg = ml_collections.ConfigDict(dict(update_every=100, end_fraction=0.75, drop_fraction=0.3,
                                       decay="cosine"))
  sched = dynamic.make_schedule(cfg, 1001)
  assert (sched.end_step, sched.update_every, sched.initial_fraction) == (750, 100, 0.3)
  with pytest.raises(UserError, match="update_every"):
    dynamic.DropSchedule(end_step=10, update_every=0)
  with pytest.raises(UserError, match="decay"):
    dynamic.DropSchedule(end_step=10, decay="linear")
  with pytest.raises(UserError, match="unknown dynamic-sparsity"):
    dynamic.get_updater("snip")


def test_num_to_update_rounds_half_up():
  assert [int(dynamic.num_to_update(f, 10)) for f in (0.0, 0.04, 0.05, 0.149, 0.15, 0.3)] == [
      0, 0, 1, 1, 2, 3]


def test_rigl_grows_exactly_the_top_gradient_inactive_coordinates():
  w = jnp.array([[0.0, 5.0, 0.0, -0.1], [2.0, 0.0, -3.0, 0.0]])
  m = w != 0  # 4 active: |w| = 5, 0.1, 2, 3
  g = jnp.array([[9.0, 100.0, 0.5, 1.0], [0.0, -7.0, 0.0, 8.0]])
  # f = 0.5 -> k = 2: drop |w| = 0.1 (0,3) and 2 (1,0); grow the largest |g| among the rest of
  # the kept-complement: (0,3)=1, (1,0)=0, (0,0)=9, (0,2)=0.5, (1,1)=7, (1,3)=8 -> (0,0), (1,3).
  new, kept = dynamic.drop_grow(w, m, jnp.abs(g), 0.5)
  expected_kept = np.array([[0, 1, 0, 0], [0, 0, 1, 0]], bool)
  expected_new = expected_kept | np.array([[1, 0, 0, 0], [0, 0, 0, 1]], bool)
  np.testing.assert_array_equal(kept, expected_kept)
  np.testing.assert_array_equal(new, expected_new)


def test_rigl_may_regrow_a_dropped_weight_at_zero():
  w = jnp.array([1.0, 2.0, 0.0, 0.0])
  m = w != 0
  g = jnp.array([50.0, 0.0, 1.0, 0.0])  # the dropped weight 0 has the largest gradient
  new, kept = dynamic.drop_grow(w, m, g, 0.5)
  np.testing.assert_array_equal(kept, [False, True, False, False])
  np.testing.assert_array_equal(new, [True, True, False, False])
  params, _ = dynamic.apply_update({"w": w}, {}, {"w": kept})
  np.testing.assert_array_equal(params["w"], [0.0, 2.0, 0.0, 0.0])  # regrown at 0


@pytest.mark.parametrize("name", ["rigl", "set"])
def test_counts_exact_and_pruned_weights_and_momentum_zero_at_every_update(name):
  params, mask, prunable = _setup()
  tx = optax.sgd(0.1, momentum=0.9)
  opt_state = tx.init(params)
  before = sparsity.layer_densities(mask, prunable)
  update = jax.jit(lambda key, p, m, s, g, f: dynamic.dst_update(
      dynamic.UPDATERS[name], key, p, m, s, g, f, prunable))
  sched = dynamic.DropSchedule(end_step=200, update_every=50)
  targets = _params(seed=5)
  grad = jax.jit(jax.grad(lambda p: sum(jnp.sum((x - c) ** 2) for x, c in zip(
      jax.tree.leaves(p), jax.tree.leaves(targets)))))
  for t in sched.update_steps():
    grads = grad(params)
    updates, opt_state = tx.update(jax.tree.map(lambda g, m: g * m, grads, mask), opt_state, params)
    params = optax.apply_updates(params, updates)
    params, new_mask, opt_state = update(jax.random.key(t), params, mask, opt_state,
                                         grad(params), sched.fraction(t))
    assert sparsity.layer_densities(new_mask, prunable) == before
    changed = sum(int(np.sum(np.asarray(a) != np.asarray(b)))
                  for a, b in zip(jax.tree.leaves(new_mask), jax.tree.leaves(mask)))
    assert (changed > 0) == (sched.fraction(t) > 0.01)  # f(end_step) = 0: nothing changes
    mask = new_mask
    for p, mom, m in zip(jax.tree.leaves(params), jax.tree.leaves(opt_state[0].trace),
                         jax.tree.leaves(mask)):
      assert not np.any(np.asarray(p)[~np.asarray(m)])
      assert not np.any(np.asarray(mom)[~np.asarray(m)])
  # The head (not prunable) is never masked.
  assert bool(jnp.all(mask["head"]["kernel"]))


def test_set_is_reproducible_with_a_fixed_key_and_differs_with_another():
  params, mask, prunable = _setup()
  run = jax.jit(lambda key: dynamic.update_mask(
      params, mask, dynamic.set_scores(key, params, None), prunable, 0.3)[0])
  chex.assert_trees_all_equal(run(jax.random.key(7)), run(jax.random.key(7)))
  assert not all(bool(jnp.all(a == b)) for a, b in
                 zip(jax.tree.leaves(run(jax.random.key(7))), jax.tree.leaves(run(jax.random.key(8)))))


def test_grown_weights_start_at_zero_with_zero_momentum():
  params, mask, prunable = _setup()
  opt_state = optax.sgd(0.1, momentum=0.9).init(params)
  opt_state = jax.tree.map(lambda x: jnp.ones_like(x) if x.ndim else x, opt_state)
  scores = dynamic.set_scores(jax.random.key(0), params, None)
  new_mask, kept = dynamic.update_mask(params, mask, scores, prunable, 0.3)
  new_params, new_state = dynamic.apply_update(params, opt_state, kept)
  grown = jax.tree.map(lambda n, k: n & ~k, new_mask, kept)
  for p, mom, gr, k in zip(jax.tree.leaves(new_params), jax.tree.leaves(new_state[0].trace),
                           jax.tree.leaves(grown), jax.tree.leaves(kept)):
    gr, k = np.asarray(gr), np.asarray(k)
    assert not np.any(np.asarray(p)[gr]) and not np.any(np.asarray(mom)[gr])
    assert np.all(np.asarray(mom)[k] == 1.0)
  assert any(np.any(np.asarray(g)) for g in jax.tree.leaves(grown))


def test_mask_change_per_layer():
  m0 = {"a": {"kernel": jnp.array([[1, 1, 0, 0]], bool)}, "head": {"kernel": jnp.ones((1, 1), bool)}}
  m1 = {"a": {"kernel": jnp.array([[1, 0, 1, 0]], bool)}, "head": {"kernel": jnp.ones((1, 1), bool)}}
  assert dynamic.mask_change(m1, m0, sparsity.prunable(m0)) == {"a/kernel": 0.5}
