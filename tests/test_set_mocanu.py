"""SET's original rule (Mocanu et al. 2018) as an option: per-sign drop, grown weights at
0.1 * N(0, 1), rewiring once per epoch with a constant zeta; on a hand-made layer."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from snnjax.sparsity import dynamic
from snnjax.train import RunDir, config_io, config_presets, train_and_evaluate
from tests._train_configs import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One layer of 10 weights, 7 active: positives 0.5, 0.1, 0.3, 0.02; negatives -0.4, -0.05, -0.9.
W = np.array([0.5, -0.4, 0.1, -0.05, 0.3, -0.9, 0.02, 0.7, -0.2, 0.0], np.float32)
M = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], bool)


def test_signed_drop_takes_each_sign_separately():
  # zeta 0.5: k_pos = floor(0.5 * 4 + 1/2) = 2 (0.02, 0.1), k_neg = floor(0.5 * 3 + 1/2) = 2
  # (-0.05, -0.4): the negatives closest to 0, not the smallest |w| overall.
  dropped = np.asarray(dynamic.signed_dropped(jnp.asarray(W), jnp.asarray(M), 0.5))
  assert sorted(W[dropped].tolist()) == sorted(np.float32([0.02, 0.1, -0.05, -0.4]).tolist())
  # snnjax's default (magnitude) rule drops the k = 4 smallest |w| overall instead.
  _, kept = dynamic.drop_grow(jnp.asarray(W), jnp.asarray(M), jnp.zeros(10), 0.5)
  assert sorted(W[M & ~np.asarray(kept)].tolist()) == sorted(
      np.float32([0.02, -0.05, 0.1, 0.3]).tolist())
  # An active weight that is exactly 0 is dropped too.
  w0 = W.copy()
  w0[0] = 0.0
  assert np.asarray(dynamic.signed_dropped(jnp.asarray(w0), jnp.asarray(M), 0.0))[0]


def test_mocanu_update_grows_as_many_at_small_random_values_with_zero_momentum():
  params, mask = {"w": jnp.asarray(W)}, {"w": jnp.asarray(M)}
  momentum = {"w": jnp.ones(10)}
  rule = dynamic.Rule(signed_drop=True, grow_std=0.1)
  key = jax.random.key(3)
  new_params, new_mask, new_mom = jax.jit(lambda k, p, m, s: dynamic.dst_update(
      dynamic.UPDATERS["set"], k, p, m, s, None, 0.5, {"w": True}, rule))(
          key, params, mask, momentum)
  new_params, new_mask, new_mom = (np.asarray(t["w"]) for t in (new_params, new_mask, new_mom))
  assert new_mask.sum() == M.sum()  # as many grown as dropped
  kept = M & new_mask & (new_params == W)
  assert sorted(W[kept].tolist()) == sorted(np.float32([0.5, 0.3, -0.9]).tolist())
  grown = new_mask & ~kept
  assert grown.sum() == 4
  want = 0.1 * np.asarray(jax.random.normal(
      jax.random.fold_in(jax.random.fold_in(key, dynamic.GROW_INIT_STREAM), 0), (10,)))
  np.testing.assert_allclose(new_params[grown], want[grown], rtol=1e-6)
  assert np.all(new_params[grown] != 0) and np.all(np.abs(new_params[grown]) < 0.5)
  assert np.all(new_params[~new_mask] == 0)
  assert np.all(new_mom[grown] == 0) and np.all(new_mom[kept] == 1)


def test_once_per_epoch_with_a_constant_zeta_never_after_the_last_epoch():
  block = ml_collections.ConfigDict({"update_every": 100, "end_fraction": 1.0,
                                     "drop_fraction": 0.3, "decay": "constant", "seed": 0,
                                     "update_every_epochs": 1})
  sched = dynamic.make_schedule(block, total_steps=50, steps_per_epoch=10)
  assert sched.update_steps() == [10, 20, 30, 40]
  assert {sched.fraction(t) for t in sched.update_steps()} == {0.3}


def test_mocanu_preset_and_identities():
  plain = config_io.load_config_spec(os.path.join(ROOT, "configs", "set95.py") + ":quick")
  mocanu = config_io.load_config_spec(os.path.join(ROOT, "configs", "set95.py") + ":quick_mocanu")
  config_io.validate_config(mocanu)
  assert (mocanu.dst.drop_rule, mocanu.dst.grow_init, mocanu.dst.update_every_epochs,
          mocanu.dst.decay) == ("signed", "normal", 1, "constant")
  assert mocanu.dense_workdir == plain.dense_workdir  # the same quick Sol-D
  d = config_io.config_to_dict(plain)
  old = {**d, "dst": {k: v for k, v in d["dst"].items()
                      if k not in ("drop_rule", "grow_init", "grow_std", "update_every_epochs")}}
  assert config_io.identity_hash(d) == config_io.identity_hash(old)  # the options at default
  assert config_io.identity_hash(mocanu) != config_io.identity_hash(plain)


def test_a_mocanu_run_rewires_after_every_epoch_but_the_last(tmp_path):
  config = tiny("set", dataset="digits", model="mlp", epochs=3, sparsity=0.9)
  config.mask.source = "random"
  config.dataset.train_size = 240
  config.batch_size = 40
  config_presets.dst_block(config)
  config_presets.mocanu_set(config)
  train_and_evaluate(config, str(tmp_path / "run"))
  records = RunDir(tmp_path / "run").epoch_records()
  assert [r["mask_updates"] for r in records] == [1, 2, 2]
  assert records[0]["mask_change_all"] > 0
