"""SNIP, GraSP and SynFlow scores against a hand-computed two-layer network, and the masks they
give (snnjax.sparsity.init_scores; score_mask's counts and nesting)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax import sparsity
from snnjax.sparsity import init_scores

# f(x) = sum_j W2[j] * h_j, h = W1^T x (two linear layers, no bias); L = (f(x) - y)^2 / 2.
W1 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]])      # (in 2, hidden 3)
W2 = np.array([[1.0], [-2.0], [0.5]])                      # (hidden 3, out 1)
X = np.array([2.0, -1.0])
Y = 0.5
PARAMS = {"l1": {"kernel": jnp.asarray(W1, jnp.float32)}, "l2": {"kernel": jnp.asarray(W2, jnp.float32)}}


def _forward(p, x):
  return (x @ p["l1"]["kernel"]) @ p["l2"]["kernel"]


def loss_fn(p):
  return 0.5 * jnp.sum((_forward(p, jnp.asarray(X, jnp.float32)) - Y) ** 2)


def output_fn(p):
  return _forward(p, jnp.ones(2, jnp.float32))


def _hand():
  """The gradient and the Hessian-gradient product of L, by hand (r = f - y)."""
  h = X @ W1
  r = float(h @ W2[:, 0]) - Y
  dr1 = np.outer(X, W2[:, 0])            # dr / dW1[i, j] = x_i W2[j]
  dr2 = h[:, None]                       # dr / dW2[j] = h_j
  g1, g2 = r * dr1, r * dr2
  # H = grad r grad r^T + r * d2r; d2r / dW1[i, j] dW2[k] = x_i delta_jk (the only nonzero block)
  dot = np.sum(dr1 * g1) + np.sum(dr2 * g2)
  hg1 = dr1 * dot + r * np.outer(X, g2[:, 0])
  hg2 = dr2 * dot + r * (X @ g1)[:, None]
  return (g1, g2), (hg1, hg2)


def test_snip_scores_by_hand():
  (g1, g2), _ = _hand()
  s = init_scores.snip_scores(loss_fn, PARAMS)
  np.testing.assert_allclose(s["l1"]["kernel"], np.abs(g1 * W1), rtol=1e-5)
  np.testing.assert_allclose(s["l2"]["kernel"], np.abs(g2 * W2), rtol=1e-5)


def test_grasp_scores_by_hand():
  _, (hg1, hg2) = _hand()
  s = init_scores.grasp_scores(loss_fn, PARAMS)
  np.testing.assert_allclose(s["l1"]["kernel"], -W1 * hg1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s["l2"]["kernel"], -W2 * hg2, rtol=1e-5, atol=1e-6)


def test_synflow_scores_by_hand():
  # R = sum_j (sum_i |W1[i, j]|) |W2[j]|: dR/dW1[i, j] = |W2[j]|, dR/dW2[j] = sum_i |W1[i, j]|
  s = init_scores.synflow_scores(output_fn, PARAMS)
  np.testing.assert_allclose(s["l1"]["kernel"], np.abs(W1) * np.abs(W2[:, 0])[None], rtol=1e-6)
  np.testing.assert_allclose(s["l2"]["kernel"], np.abs(W2) * np.abs(W1).sum(0)[:, None],
                             rtol=1e-6)


def _all_prunable(p):
  return jax.tree.map(lambda _: True, p)


def test_masks_keep_the_right_weights():
  tree = _all_prunable(PARAMS)
  (g1, g2), (hg1, hg2) = _hand()
  snip = np.concatenate([np.abs(g1 * W1).ravel(), np.abs(g2 * W2).ravel()])
  grasp = np.concatenate([(-W1 * hg1).ravel(), (-W2 * hg2).ravel()])
  for source, scores, keep_high in (("snip", snip, True), ("grasp", grasp, False)):
    m = init_scores.init_mask(source, PARAMS, 5 / 9, loss_fn=loss_fn, prunable_tree=tree)
    kept = np.concatenate([np.asarray(m["l1"]["kernel"]).ravel(), np.asarray(m["l2"]["kernel"]).ravel()])
    assert kept.sum() == 4
    order = np.argsort(-scores if keep_high else scores, kind="stable")
    assert set(np.flatnonzero(kept)) == set(order[:4])


def test_synflow_iterative_is_nested_and_reaches_the_sparsity():
  assert init_scores.synflow_schedule(0.75, 2) == [0.5, 0.75]
  sched = init_scores.synflow_schedule(0.99, 100)
  assert len(sched) == 100 and sched[-1] == 0.99 and np.all(np.diff(sched) > 0)
  np.testing.assert_allclose(sched[49], 1 - 0.01 ** 0.5)
  tree = _all_prunable(PARAMS)
  one = init_scores.synflow_mask(output_fn, PARAMS, 4 / 9, rounds=1, prunable_tree=tree)
  # one round: the 4 lowest |w| * dR/dw pruned
  scores = np.concatenate([(np.abs(W1) * np.abs(W2[:, 0])[None]).ravel(),
                           (np.abs(W2) * np.abs(W1).sum(0)[:, None]).ravel()])
  kept = np.concatenate([np.asarray(one["l1"]["kernel"]).ravel(), np.asarray(one["l2"]["kernel"]).ravel()])
  assert set(np.flatnonzero(~kept)) == set(np.argsort(scores, kind="stable")[:4])
  many = init_scores.synflow_mask(output_fn, PARAMS, 6 / 9, rounds=5, prunable_tree=tree)
  assert sparsity.sparsity_of(many, tree) == pytest.approx(6 / 9)
  # each layer keeps a path (SynFlow's point): no layer is emptied
  assert all(np.any(np.asarray(m)) for m in jax.tree.leaves(many))


def test_score_mask_within_prunes_outside_first_and_layerwise_counts():
  scores = {"a": np.array([[5.0, 4.0], [3.0, 2.0]]), "b": np.array([[1.0, 0.5]])}
  tree = {"a": True, "b": True}
  within = {"a": np.array([[False, True], [True, True]]), "b": np.array([[True, True]])}
  m = sparsity.score_mask(scores, 0.5, prunable_tree=tree, within=within)
  np.testing.assert_array_equal(m["a"], [[False, True], [True, True]])   # 5.0 is outside: pruned
  np.testing.assert_array_equal(m["b"], [[False, False]])
  m = sparsity.score_mask(scores, 0.5, scope="layerwise", prunable_tree=tree)
  assert [int(np.sum(m["a"])), int(np.sum(m["b"]))] == [2, 1]
