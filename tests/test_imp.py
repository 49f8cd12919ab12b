"""Iterative magnitude pruning with rewinding (lottery rounds chained by dense_workdir, rewound to
the root Sol-D's saved step), reproduced by hand on a tiny MLP."""

import os

import jax
import numpy as np
import pytest

from snnjax import sparsity
from snnjax.errors import UserError
from snnjax.train import config_io, load_solution, starting_point, train_and_evaluate
from snnjax.train.run_dir import RunDir
from tests._train_configs import tiny

K = 3  # the rewind step (inside the first epoch)


def _round(parent: str, sparsity_: float, rewind: int = K):
  config = tiny("lottery", dataset="digits", model="mlp", epochs=1, sparsity=sparsity_,
                hidden_sizes=(32, 32))
  config.dense_workdir = parent
  config.mask.rewind_step = rewind
  return config


def _flat_prunable(params, mask=None):
  tree = sparsity.prunable(params)
  leaves = [np.asarray(p) for p, f in zip(jax.tree.leaves(params), jax.tree.leaves(tree)) if f]
  return np.concatenate([np.abs(x).ravel() for x in leaves])


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
  root = tmp_path_factory.mktemp("imp")
  dense = tiny("dense", dataset="digits", model="mlp", epochs=1, hidden_sizes=(32, 32))
  dense.save_steps = (K,)
  paths = {"dense": str(root / "dense"), "r1": str(root / "r1"), "r2": str(root / "r2")}
  train_and_evaluate(dense, paths["dense"])
  train_and_evaluate(_round(paths["dense"], 0.5), paths["r1"])
  train_and_evaluate(_round(paths["r1"], 0.75), paths["r2"])
  return paths, dense


def test_rewind_checkpoint_is_the_state_after_k_steps(chain):
  paths, dense = chain
  rewind = load_solution(os.path.join(paths["dense"], starting_point.REWIND_DIR), step=K)
  init = RunDir(paths["dense"]).init_solution()
  assert rewind.step == K and init.step == 0
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(rewind.params),
                                                       jax.tree.leaves(init.params)))
  # save_steps is not part of the identity
  plain = tiny("dense", dataset="digits", model="mlp", epochs=1, hidden_sizes=(32, 32))
  assert config_io.identity_hash(dense) == config_io.identity_hash(plain)


def test_masks_nested_and_weights_rewound_bit_for_bit(chain):
  paths, _ = chain
  rewind = load_solution(os.path.join(paths["dense"], starting_point.REWIND_DIR), step=K)
  previous_solution = RunDir(paths["dense"]).solution()
  previous_mask = None
  for name, target in (("r1", 0.5), ("r2", 0.75)):
    start = RunDir(paths[name]).init_solution()
    tree = sparsity.prunable(start.params)
    # by hand: global magnitude pruning of the previous round's solution, its pruned weights first
    scores = _flat_prunable(previous_solution.params)
    if previous_mask is not None:
      scores = np.where(_flat_prunable(previous_mask) > 0, scores, -np.inf)
    keep = np.ones(scores.size, bool)
    keep[np.argsort(scores, kind="stable")[:int(np.floor(target * scores.size + 0.5))]] = False
    got = _flat_prunable(jax.tree.map(lambda m: np.asarray(m, np.float32), start.mask)) > 0
    np.testing.assert_array_equal(got, keep)
    if previous_mask is not None:  # nested
      assert np.all(_flat_prunable(previous_mask)[got] > 0)
    # the kept weights are the root Sol-D's step-K weights, bit for bit; pruned exactly 0
    for w, r, m, f in zip(jax.tree.leaves(start.params), jax.tree.leaves(rewind.params),
                          jax.tree.leaves(start.mask), jax.tree.leaves(tree)):
      expected = np.where(np.asarray(m), np.asarray(r), 0.0).astype(np.float32)
      assert np.array_equal(np.asarray(w), expected)
      assert f or np.all(np.asarray(m))
    previous_solution = RunDir(paths[name]).solution()
    previous_mask = jax.tree.map(lambda m: np.asarray(m, np.float32), start.mask)
  # every round is its own run (identity), and a finished round is not retrained
  ids = {RunDir(p).identity for p in paths.values()}
  assert len(ids) == 3
  before = os.path.getmtime(os.path.join(paths["r2"], "metrics.jsonl"))
  train_and_evaluate(_round(paths["r1"], 0.75), paths["r2"])
  assert os.path.getmtime(os.path.join(paths["r2"], "metrics.jsonl")) == before


def test_missing_rewind_point_and_lower_sparsity_are_errors(chain, tmp_path):
  paths, _ = chain
  with pytest.raises(UserError, match="no rewind checkpoint at step 7"):
    train_and_evaluate(_round(paths["dense"], 0.5, rewind=7), str(tmp_path / "a"))
  with pytest.raises(UserError, match="below the previous lottery round"):
    train_and_evaluate(_round(paths["r1"], 0.3), str(tmp_path / "b"))
  assert not os.path.exists(tmp_path / "a" / "config.json")
