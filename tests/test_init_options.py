"""Scratch starts with masks found at init (snip / grasp / synflow), the layerwise shuffle, the
sparse-aware init (snnjax.train.starting_point), and the masked gradient-norm record of a run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from snnjax import models, sparsity
from snnjax.data import load_dataset, pipeline
from snnjax.errors import UserError
from snnjax.train import config_io, load_solution, starting_point, train_and_evaluate
from snnjax.train.run_dir import RunDir
from tests._train_configs import tiny


def _scratch(source="snip", **mask):
  config = tiny("scratch", dataset="digits", model="mlp", epochs=1, sparsity=0.9)
  config.mask.source = source
  config.mask.score_examples = 128
  config.mask.synflow_rounds = 10
  config.mask.update(mask)
  return config


def _start(config):
  dataset = load_dataset(config.dataset)
  model = models.create_model("mlp", dataset.num_classes)
  return starting_point.initial_variables(config, model, dataset.input_shape, load_solution,
                                          dataset=dataset)


def _counts(mask):
  return {k: v[0] for k, v in sparsity.layer_densities(mask).items()}


@pytest.mark.parametrize("source", ["snip", "grasp", "synflow"])
def test_masks_found_at_init_have_the_exact_count(source):
  params, _, mask, info = _start(_scratch(source))
  assert sparsity.sparsity_of(mask) == pytest.approx(0.9, abs=1e-4)
  assert info["mask_source"].startswith(source)
  assert all(np.all(np.asarray(p)[~np.asarray(m)] == 0) for p, m in zip(
      jax.tree.leaves(params), jax.tree.leaves(mask)))


def test_snip_mask_is_scored_on_the_first_examples_of_epoch_zero():
  config = _scratch("snip")
  dataset = load_dataset(config.dataset)
  model = models.create_model("mlp", dataset.num_classes)
  init, stats = models.init_variables(model, starting_point.init_key(config), dataset.input_shape)
  idx = np.sort(pipeline.epoch_permutation(config.seed, 0, dataset.num_train)[:128])

  def loss(p):
    logits, _ = model.apply({"params": p, "batch_stats": stats}, jnp.asarray(dataset.x_train[idx]),
                            train=True, mutable=["batch_stats"])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, dataset.y_train[idx]))
  expected = sparsity.init_scores.snip_mask(loss, init, 0.9,
                                            prunable_tree=starting_point.prunable_tree(config, init))
  _, _, mask, _ = _start(config)
  for a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)


def test_shuffle_keeps_each_layers_count_for_every_source():
  for source in ("erk", "synflow"):
    _, _, plain, _ = _start(_scratch(source))
    params, _, shuffled, info = _start(_scratch(source, shuffle=True))
    assert _counts(plain) == _counts(shuffled)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(plain),
                                                        jax.tree.leaves(shuffled)))
    assert "shuffled" in info["mask_source"]


def test_sparse_aware_init_keeps_the_mask_and_rescales_per_unit():
  _, _, mask, _ = _start(_scratch("random"))
  params, _, mask2, info = _start(_scratch("random", init="sparse_aware"))
  for a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(mask2)):
    np.testing.assert_array_equal(a, b)
  assert "sparse-aware" in info["init"]
  stem = np.asarray(params["stem"]["kernel"])
  m = np.asarray(mask["stem"]["kernel"])
  assert np.all(stem[~m] == 0)
  n = sparsity.active_fan_in(m)
  # over the whole layer: mean of w^2 * n_j over the active weights is about 2 (He)
  ratio = np.mean((stem ** 2 * n[None, :])[m])
  assert 1.6 < ratio < 2.4


def test_validation_of_the_new_fields():
  config_io.validate_config(_scratch("snip", shuffle=True, init="sparse_aware"))
  for field, value, words in (("init", "zeros", "mask.init"), ("shuffle", 1, "mask.shuffle"),
                              ("synflow_rounds", 0, "mask.synflow_rounds"),
                              ("rewind_step", 3, "rewind_step")):
    config = _scratch("snip")
    with config.mask.ignore_type():
      config.mask[field] = value
    with pytest.raises(UserError, match=words):
      config_io.validate_config(config)
  finetune = tiny("finetune", dataset="digits", model="mlp", sparsity=0.9)
  finetune.dense_workdir = "/tmp/x"
  finetune.mask.init = "sparse_aware"
  with pytest.raises(UserError, match="mask.init"):
    config_io.validate_config(finetune)


def test_grad_norm_record_starts_with_the_init_gradient(tmp_path):
  config = _scratch("random")
  config.grad_norm_every = 5
  train_and_evaluate(config, str(tmp_path / "run"))
  (record,) = RunDir(str(tmp_path / "run")).epoch_records()
  steps = record["grad_norm"]["step"]
  assert steps == list(range(0, record["step"], 5))
  # step 0: ||mask * g|| at Init-S on the first batch (train-mode forward), by hand
  init = load_solution(str(tmp_path / "run" / "init"))
  dataset = load_dataset(config.dataset)
  idx = pipeline.batch_indices(pipeline.epoch_permutation(config.seed, 0, dataset.num_train),
                               config.batch_size)[0]

  def loss(p):
    logits = init.model.apply({"params": p}, jnp.asarray(dataset.x_train[idx]), train=True)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, dataset.y_train[idx]))
  g = jax.grad(loss)(init.params)
  norm = np.sqrt(sum(float(jnp.sum((x * m) ** 2)) for x, m in zip(jax.tree.leaves(g),
                                                                 jax.tree.leaves(init.mask))))
  np.testing.assert_allclose(record["grad_norm"]["value"][0], norm, rtol=1e-4)
  # not in the identity
  assert config_io.identity_hash(config) == config_io.identity_hash(_scratch("random"))


def test_order_seed_changes_the_data_order_only():
  from snnjax.train import loop  # pylint: disable=import-outside-toplevel
  a, b = _scratch("random"), _scratch("random")
  b.order_seed = 7
  same = _scratch("random")
  same.order_seed = a.seed
  assert config_io.identity_hash(a) != config_io.identity_hash(b)
  for x, y in zip(jax.tree.leaves(_start(a)[:3]), jax.tree.leaves(_start(b)[:3])):
    np.testing.assert_array_equal(x, y)        # one init, one mask
  batches = [loop.epoch_batches(c, 0, 1000, 10, None) for c in (a, b, same)]
  assert not np.array_equal(batches[0][0], batches[1][0])
  assert np.array_equal(batches[0][0], batches[2][0])
  assert not np.array_equal(jax.random.key_data(starting_point.augment_key(a)),
                            jax.random.key_data(starting_point.augment_key(b)))
