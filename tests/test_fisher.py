"""Tests of snnjax.estimators.fisher against explicit loops over examples and classes."""

import functools

import chex
import jax
import numpy as np
import pytest

import _tiny as tiny
from snnjax.errors import MaskMismatchError, UserError
from snnjax.estimators import fisher
from snnjax.estimators.param_subsets import combine_masks, param_subset_mask

RTOL = 2e-5


def _sampled_labels(key, logits, num_samples):
  """The labels the estimators draw: ``num_samples`` from softmax(logits[i]), key fold_in(key, i)."""
  sample = jax.jit(lambda i, z: jax.random.categorical(jax.random.fold_in(key, i), z,
                                                       shape=(num_samples,)))
  return np.stack([np.asarray(sample(i, logits[i])) for i in range(logits.shape[0])])


def _logits(name):
  model, batch = tiny.classifier(name)
  return jax.jit(model.logits_fn)(model.params, batch["x"])


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_exact_fisher_equals_loop_over_examples_and_classes(name):
  model, batch = tiny.classifier(name)
  expected = tiny.loop_exact_fisher(name)
  est = fisher.fisher_trace(model.logits_fn, model.params, batch, labels="exact",
                            chunk_size=3, return_per_example=True)
  np.testing.assert_allclose(est.extra["per_example"], expected, rtol=RTOL)
  np.testing.assert_allclose(est.value, expected.mean(), rtol=RTOL)
  assert est.stderr is None and est.num_examples == 7 and est.num_probes == 0
  assert est.extra["labels"] == "exact" and est.extra["num_classes"] == model.num_classes
  assert est.extra["num_active_params"] == sum(p.size for p in jax.tree.leaves(model.params))


def test_exact_fisher_class_chunks_and_example_chunks_do_not_change_it():
  model, batch = tiny.classifier("mlp")
  expected = tiny.loop_exact_fisher("mlp")
  for chunk_size, class_chunk_size in [(1, 1), (4, 3), (100, None)]:
    est = fisher.fisher_trace(model.logits_fn, model.params, batch, chunk_size=chunk_size,
                              class_chunk_size=class_chunk_size, return_per_example=True)
    np.testing.assert_allclose(est.extra["per_example"], expected, rtol=RTOL)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_ggn_trace_equals_loop_exact_fisher(name):
  # Tr(J^T H_ce J) through the Gram matrix, against the loop over classes (no shared formula).
  model, batch = tiny.classifier(name)
  ggn = fisher.ggn_trace(model.logits_fn, model.params, batch, chunk_size=4,
                         return_per_example=True)
  np.testing.assert_allclose(ggn.extra["per_example"], tiny.loop_exact_fisher(name), rtol=1e-4)
  assert ggn.stderr is None and ggn.extra["labels"] == "exact"


def test_data_labels_fisher_equals_loop_with_dataset_labels():
  model, batch = tiny.classifier("cnn")
  expected = tiny.loop_label_sqnorms("cnn", batch["x"], batch["y"])
  est = fisher.fisher_trace(model.logits_fn, model.params, batch, labels="data",
                            return_per_example=True)
  np.testing.assert_allclose(est.extra["per_example"], expected, rtol=RTOL)
  assert est.stderr is None and est.extra["labels"] == "data" and est.extra["label_key"] == "y"
  # another label entry of the batch
  batch2 = dict(batch, y_true=(batch["y"] + 1) % model.num_classes)
  est2 = fisher.fisher_trace(model.logits_fn, model.params, batch2, labels="data",
                             label_key="y_true", return_per_example=True)
  np.testing.assert_allclose(est2.extra["per_example"],
                             tiny.loop_label_sqnorms("cnn", batch["x"], batch2["y_true"]),
                             rtol=RTOL)
  assert est2.extra["label_key"] == "y_true"


def test_sampled_fisher_is_unbiased_within_sampling_stderr():
  model, batch = tiny.classifier("mlp")
  exact = tiny.loop_exact_fisher("mlp").mean()
  mc = fisher.fisher_trace(model.logits_fn, model.params, batch, labels="sampled",
                           key=jax.random.key(3), num_samples=400)
  assert mc.num_probes == 400 and mc.extra["labels"] == "sampled"
  assert abs(mc.value - exact) < 4 * mc.extra["sampling_stderr"]
  assert mc.extra["sampling_stderr"] < 0.1 * exact
  assert mc.stderr >= mc.extra["sampling_stderr"] * 0.5


def test_sampled_fisher_matches_a_loop_and_ignores_chunking():
  model, batch = tiny.classifier("mlp")
  key = jax.random.key(4)
  est = fisher.fisher_trace(model.logits_fn, model.params, batch, labels="sampled", key=key,
                            num_samples=3, chunk_size=2, return_per_example=True)
  labels = _sampled_labels(key, _logits("mlp"), 3)  # (7, 3)
  loop = [np.mean(tiny.loop_label_sqnorms("mlp", batch["x"][i:i + 1].repeat(3, 0), labels[i]))
          for i in range(7)]
  np.testing.assert_allclose(est.extra["per_example"], loop, rtol=RTOL)
  np.testing.assert_allclose(est.stderr, np.std(loop, ddof=1) / np.sqrt(7), rtol=1e-4)
  # the same examples as two batches: same keys, same result
  est2 = fisher.fisher_trace(model.logits_fn, model.params, iter(tiny.split(batch, (3, 4))),
                             labels="sampled", key=key, num_samples=3, chunk_size=2,
                             return_per_example=True)
  np.testing.assert_allclose(est2.extra["per_example"], loop, rtol=RTOL)


def test_masked_fisher_equals_loop_with_masked_gradients():
  model, batch = tiny.classifier("cnn")
  mask = tiny.random_mask(model.params, 0.6, 0)
  expected = tiny.loop_exact_fisher("cnn", 0)
  est = fisher.fisher_trace(model.logits_fn, model.params, batch, mask=mask,
                            return_per_example=True)
  np.testing.assert_allclose(est.extra["per_example"], expected, rtol=RTOL)
  assert est.extra["num_active_params"] == sum(int(m.sum()) for m in jax.tree.leaves(mask))
  ggn = fisher.ggn_trace(model.logits_fn, model.params, batch, mask=mask)
  np.testing.assert_allclose(ggn.value, expected.mean(), rtol=1e-4)


def test_kernels_only_fisher_sums_kernel_leaves_only():
  model, batch = tiny.classifier("cnn")
  sparsity = tiny.random_mask(model.params, 0.6, 1)
  mask = combine_masks(sparsity, param_subset_mask(model.params, "kernels"))
  grad_fn = tiny.log_prob_grad("cnn")
  expected = []
  for x, y in zip(batch["x"], batch["y"]):
    g = grad_fn(model.params, x, int(y))
    expected.append(sum(
        float(np.sum(np.square(np.asarray(g[layer]["kernel"]) * sparsity[layer]["kernel"])))
        for layer in ("stem", "conv1", "head")))
  est = fisher.fisher_trace(model.logits_fn, model.params, batch, labels="data", mask=mask,
                            return_per_example=True)
  np.testing.assert_allclose(est.extra["per_example"], expected, rtol=RTOL)
  assert est.extra["num_active_params"] == sum(
      int(sparsity[layer]["kernel"].sum()) for layer in ("stem", "conv1", "head"))


def test_per_example_grads_equal_loop_and_ignore_chunk_size():
  model, batch = tiny.classifier("cnn")
  mask = tiny.random_mask(model.params, 0.6, 2)
  grads = fisher.per_example_grads(model.logits_fn, model.params, batch, mask=mask,
                                   chunk_size=3)
  grad_fn = tiny.log_prob_grad("cnn")
  expected = [jax.tree.map(lambda g, m: -g * m,
                           grad_fn(model.params, batch["x"][i], int(batch["y"][i])), mask)
              for i in range(7)]
  chex.assert_trees_all_close(grads, jax.tree.map(lambda *a: np.stack(a), *expected),
                              rtol=RTOL, atol=1e-7)
  grads7 = fisher.per_example_grads(model.logits_fn, model.params, batch, mask=mask,
                                    chunk_size=7)
  chex.assert_trees_all_close(grads7, grads, rtol=RTOL, atol=1e-7)
  # labels under another entry of the batch
  other = (batch["y"] + 1) % model.num_classes
  g_key = fisher.per_example_grads(model.logits_fn, model.params, dict(batch, y_true=other),
                                   label_key="y_true", mask=mask, chunk_size=7)
  expected0 = jax.tree.map(lambda g, m: -g * m,
                           grad_fn(model.params, batch["x"][0], int(other[0])), mask)
  chex.assert_trees_all_close(jax.tree.map(lambda a: a[0], g_key), expected0,
                              rtol=RTOL, atol=1e-7)


def test_per_example_grads_with_sampled_labels_equal_loop():
  model, batch = tiny.classifier("mlp")
  key = jax.random.key(8)
  grads = fisher.per_example_grads(model.logits_fn, model.params, batch, labels="sampled",
                                   key=key, chunk_size=4)
  labels = _sampled_labels(key, _logits("mlp"), 1)[:, 0]
  grad_fn = tiny.log_prob_grad("mlp")
  expected = [jax.tree.map(lambda g: -g, grad_fn(model.params, batch["x"][i], int(labels[i])))
              for i in range(7)]
  chex.assert_trees_all_close(grads, jax.tree.map(lambda *a: np.stack(a), *expected),
                              rtol=RTOL, atol=1e-7)


def test_per_example_grad_norms_equal_loop():
  model, batch = tiny.classifier("mlp")
  expected = tiny.loop_label_sqnorms("mlp", batch["x"], batch["y"])
  sq = fisher.per_example_grad_norms(model.logits_fn, model.params, batch, chunk_size=2)
  np.testing.assert_allclose(sq, expected, rtol=RTOL)
  norms = fisher.per_example_grad_norms(model.logits_fn, model.params, batch, squared=False)
  np.testing.assert_allclose(norms, np.sqrt(expected), rtol=RTOL)
  key = jax.random.key(5)
  sampled = fisher.per_example_grad_norms(model.logits_fn, model.params, batch,
                                          labels="sampled", key=key)
  labels = _sampled_labels(key, _logits("mlp"), 1)[:, 0]
  np.testing.assert_allclose(sampled, tiny.loop_label_sqnorms("mlp", batch["x"], labels),
                             rtol=RTOL)


@pytest.mark.parametrize("name,labels", [("cnn", "data"), ("mlp", "sampled")])
def test_per_example_grad_dots_equal_loop(name, labels):
  model, batch = tiny.classifier(name)
  mask = tiny.random_mask(model.params, 0.6, 3)
  rng = np.random.default_rng(9)
  direction = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32),
                           model.params)
  key = jax.random.key(6)
  out = fisher.per_example_grad_dots(model.logits_fn, model.params, batch, direction,
                                     labels=labels, key=key, mask=mask, chunk_size=3)
  assert isinstance(out, fisher.GradDots) and out.dots.dtype == np.float64
  ys = batch["y"] if labels == "data" else _sampled_labels(key, _logits(name), 1)[:, 0]
  grad_fn = tiny.log_prob_grad(name)
  m, v = tiny.flat(mask), tiny.flat(direction)
  g = np.stack([-tiny.flat(grad_fn(model.params, x, int(y))) * m
                for x, y in zip(batch["x"], ys)])  # cross-entropy gradients, masked
  np.testing.assert_allclose(out.dots, g @ v, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(out.norms, np.linalg.norm(g, axis=1), rtol=RTOL)


def test_cpu_rewrites_off_gives_the_same_numbers():
  # The grouped-convolution rewrite (_convs) on and off on the conv model: same values.
  model, batch = tiny.classifier("cnn")
  mask = tiny.random_mask(model.params, 0.6, 4)
  on, off = (fisher.fisher_trace(model.logits_fn, model.params, batch, mask=mask,
                                 cpu_rewrites=flag, return_per_example=True)
             for flag in (True, False))
  np.testing.assert_allclose(on.extra["per_example"], off.extra["per_example"], rtol=1e-5)
  on, off = (fisher.per_example_grads(model.logits_fn, model.params, batch, mask=mask,
                                      cpu_rewrites=flag) for flag in (True, False))
  chex.assert_trees_all_close(on, off, rtol=1e-5, atol=1e-7)
  with pytest.raises(UserError):
    fisher.fisher_trace(model.logits_fn, model.params, batch, cpu_rewrites="auto")


def test_labels_for_kind_maps_the_config_names():
  assert [fisher.labels_for_kind(k) for k in fisher.FISHER_KINDS] == ["exact", "sampled", "data"]
  with pytest.raises(UserError):
    fisher.labels_for_kind("true")


def test_bad_input_raises():
  model, batch = tiny.classifier("mlp")
  f = functools.partial(fisher.fisher_trace, model.logits_fn, model.params, batch)
  bad_structure = {"stem": model.params["stem"]}
  with pytest.raises(MaskMismatchError):
    f(mask=bad_structure)
  bad_shape = jax.tree.map(lambda p: np.ones(p.shape + (1,), bool), model.params)
  with pytest.raises(MaskMismatchError):
    fisher.per_example_grads(model.logits_fn, model.params, batch, mask=bad_shape)
  with pytest.raises(MaskMismatchError):
    fisher.per_example_grad_dots(model.logits_fn, model.params, batch, bad_structure)
  for bad in ("true", "mc", "empirical"):  # the config names are not labels
    with pytest.raises(UserError):
      f(labels=bad)
  with pytest.raises(UserError):
    f(labels="sampled")  # no key
  with pytest.raises(UserError):
    f(labels="exact", num_samples=5)
  with pytest.raises(UserError):
    f(chunk_size=0)
  with pytest.raises(UserError):
    fisher.fisher_trace(model.logits_fn, model.params, dict(batch, y=batch["y"] + 10),
                        labels="data")
  for per_example in (fisher.per_example_grad_norms, fisher.per_example_grads):
    with pytest.raises(UserError):
      per_example(model.logits_fn, model.params, batch, labels="exact")
  with pytest.raises(UserError):
    fisher.ggn_trace(model.logits_fn, model.params, batch, labels="data")
  with pytest.raises(UserError):
    fisher.fisher_trace(model.logits_fn, model.params, [])


def _scaled_logits(scale, params, x):
  """A logits function whose bound argument ``scale`` is a leaf of its Partial."""
  model, _ = tiny.classifier("mlp")
  return scale * model.logits_fn(params, x)


def test_partial_logits_share_compilations_and_use_their_leaves():
  # Functions that differ only in a Partial's bound arrays (a solution's BatchNorm statistics)
  # are the same jit argument structure: one compilation, each with its own values.
  model, batch = tiny.classifier("mlp")
  before = fisher._label_sqnorms_chunk._cache_size()
  values = [fisher.fisher_trace(jax.tree_util.Partial(_scaled_logits, np.float32(s)),
                                model.params, batch, labels="data").value
            for s in (1.0, 2.0, 3.0)]
  assert fisher._label_sqnorms_chunk._cache_size() == before + 1
  np.testing.assert_allclose(
      values[0], tiny.loop_label_sqnorms("mlp", batch["x"], batch["y"]).mean(), rtol=RTOL)
  assert len(set(values)) == 3  # each call used its own scale
