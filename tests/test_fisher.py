"""Tests of snnjax.estimators.fisher against explicit loops over examples and classes."""

import functools

import chex
import jax
import numpy as np
import pytest

import _tiny_models as tm
from snnjax.errors import MaskMismatchError, UserError
from snnjax.estimators import fisher
from snnjax.estimators.param_subsets import combine_masks, param_subset_mask

RTOL = 2e-5


@functools.lru_cache(maxsize=None)
def _setup(name):
  model = tm.mlp(0) if name == "mlp" else tm.cnn(1)
  batch = tm.make_batch(2, model, 7)
  return model, batch


_GRAD_FNS = {}


def _log_prob_grad_fn(model):
  """jitted grad_params log softmax(logits(x))[c] for one example x and class c (cached)."""
  if id(model.logits_fn) in _GRAD_FNS:
    return _GRAD_FNS[id(model.logits_fn)]

  def log_prob(params, x, c):
    return jax.nn.log_softmax(model.logits_fn(params, x[None])[0])[c]
  _GRAD_FNS[id(model.logits_fn)] = jax.jit(jax.grad(log_prob))
  return _GRAD_FNS[id(model.logits_fn)]


def _sqnorm(tree, mask=None):
  if mask is not None:
    tree = jax.tree.map(lambda g, m: g * m, tree, mask)
  return float(sum(np.sum(np.square(np.asarray(g, np.float64))) for g in jax.tree.leaves(tree)))


def _loop_exact_fisher(model, batch, mask=None):
  grad_fn = _log_prob_grad_fn(model)
  probs = np.asarray(jax.nn.softmax(jax.jit(model.logits_fn)(model.params, batch["x"])),
                     np.float64)
  values = []
  for x, p in zip(batch["x"], probs):
    values.append(sum(p[c] * _sqnorm(grad_fn(model.params, x, c), mask)
                      for c in range(model.num_classes)))
  return np.array(values)


def _loop_label_fisher(model, batch, labels, mask=None):
  grad_fn = _log_prob_grad_fn(model)
  return np.array([_sqnorm(grad_fn(model.params, x, int(y)), mask)
                   for x, y in zip(batch["x"], labels)])


def _random_mask(params, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: rng.random(p.shape) < 0.6, params)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_exact_fisher_equals_loop_over_examples_and_classes(name):
  model, batch = _setup(name)
  expected = _loop_exact_fisher(model, batch)
  est = fisher.fisher_trace(model.logits_fn, model.params, batch, kind="exact",
                            chunk_size=3, return_per_example=True)
  np.testing.assert_allclose(est.extra["per_example"], expected, rtol=RTOL)
  np.testing.assert_allclose(est.value, expected.mean(), rtol=RTOL)
  assert est.stderr is None and est.num_examples == 7 and est.num_probes == 0
  assert est.extra["num_classes"] == model.num_classes
  assert est.extra["num_active_params"] == sum(p.size for p in jax.tree.leaves(model.params))


def test_exact_fisher_class_chunks_and_example_chunks_do_not_change_it():
  model, batch = _setup("mlp")
  ref = fisher.fisher_trace(model.logits_fn, model.params, batch, return_per_example=True)
  for chunk_size, class_chunk_size in [(1, 1), (4, 3), (100, None)]:
    est = fisher.fisher_trace(model.logits_fn, model.params, batch, chunk_size=chunk_size,
                              class_chunk_size=class_chunk_size, return_per_example=True)
    chex.assert_trees_all_close(est.extra["per_example"], ref.extra["per_example"], rtol=RTOL)


def test_ggn_trace_equals_exact_fisher():
  for name in ["mlp", "cnn"]:
    model, batch = _setup(name)
    exact = fisher.fisher_trace(model.logits_fn, model.params, batch, return_per_example=True)
    ggn = fisher.ggn_trace(model.logits_fn, model.params, batch, chunk_size=4,
                           return_per_example=True)
    chex.assert_trees_all_close(ggn.extra["per_example"], exact.extra["per_example"], rtol=1e-4)


def test_empirical_fisher_equals_loop_with_dataset_labels():
  model, batch = _setup("cnn")
  expected = _loop_label_fisher(model, batch, batch["y"])
  est = fisher.fisher_trace(model.logits_fn, model.params, batch, kind="empirical",
                            return_per_example=True)
  np.testing.assert_allclose(est.extra["per_example"], expected, rtol=RTOL)
  assert est.stderr is None and "empirical" in est.extra["labels"]
  # another label entry of the batch
  batch2 = dict(batch, y_true=(batch["y"] + 1) % model.num_classes)
  est2 = fisher.fisher_trace(model.logits_fn, model.params, batch2, kind="empirical",
                             label_key="y_true", return_per_example=True)
  np.testing.assert_allclose(est2.extra["per_example"],
                             _loop_label_fisher(model, batch, batch2["y_true"]), rtol=RTOL)


def test_mc_fisher_is_unbiased_within_sampling_stderr():
  model, batch = _setup("mlp")
  exact = fisher.fisher_trace(model.logits_fn, model.params, batch)
  mc = fisher.fisher_trace(model.logits_fn, model.params, batch, kind="mc",
                           key=jax.random.key(3), num_samples=400)
  assert mc.num_probes == 400 and mc.stderr > 0
  assert abs(mc.value - exact.value) < 4 * mc.extra["sampling_stderr"]
  assert mc.extra["sampling_stderr"] < 0.1 * exact.value
  assert mc.stderr >= mc.extra["sampling_stderr"] * 0.5


def test_mc_fisher_samples_match_a_loop_and_ignore_chunking():
  model, batch = _setup("mlp")
  key = jax.random.key(4)
  est = fisher.fisher_trace(model.logits_fn, model.params, batch, kind="mc", key=key,
                            num_samples=3, chunk_size=2, return_per_example=True)
  # the labels: 3 per example from softmax with fold_in(key, i)
  logits = jax.jit(model.logits_fn)(model.params, batch["x"])
  loop = []
  sample = jax.jit(lambda i, z: jax.random.categorical(jax.random.fold_in(key, i), z, shape=(3,)))
  for i in range(7):
    labels = sample(i, logits[i])
    loop.append(np.mean(_loop_label_fisher(model, {"x": batch["x"][i:i + 1].repeat(3, 0)},
                                           labels)))
  np.testing.assert_allclose(est.extra["per_example"], loop, rtol=RTOL)
  # the same examples as two batches: same keys, same result
  halves = [{k: v[:3] for k, v in batch.items()}, {k: v[3:] for k, v in batch.items()}]
  est2 = fisher.fisher_trace(model.logits_fn, model.params, iter(halves), kind="mc", key=key,
                             num_samples=3, chunk_size=2, return_per_example=True)
  chex.assert_trees_all_close(est2.extra["per_example"], est.extra["per_example"], rtol=RTOL)


def test_masked_fisher_equals_loop_with_masked_gradients():
  model, batch = _setup("cnn")
  mask = _random_mask(model.params)
  expected = _loop_exact_fisher(model, batch, mask)
  est = fisher.fisher_trace(model.logits_fn, model.params, batch, mask=mask,
                            return_per_example=True)
  np.testing.assert_allclose(est.extra["per_example"], expected, rtol=RTOL)
  assert est.extra["num_active_params"] == sum(int(m.sum()) for m in jax.tree.leaves(mask))
  ggn = fisher.ggn_trace(model.logits_fn, model.params, batch, mask=mask)
  np.testing.assert_allclose(ggn.value, est.value, rtol=1e-4)


def test_kernels_only_fisher_sums_kernel_leaves_only():
  model, batch = _setup("cnn")
  sparsity = _random_mask(model.params, seed=1)
  mask = combine_masks(sparsity, param_subset_mask(model.params, "kernels"))
  grad_fn = _log_prob_grad_fn(model)
  expected = []
  for x, y in zip(batch["x"], batch["y"]):
    g = grad_fn(model.params, x, int(y))
    expected.append(sum(
        float(np.sum(np.square(np.asarray(g[layer]["kernel"]) * sparsity[layer]["kernel"])))
        for layer in ("stem", "conv1", "head")))
  est = fisher.fisher_trace(model.logits_fn, model.params, batch, kind="empirical", mask=mask,
                            return_per_example=True)
  np.testing.assert_allclose(est.extra["per_example"], expected, rtol=RTOL)
  assert est.extra["num_active_params"] == sum(
      int(sparsity[layer]["kernel"].sum()) for layer in ("stem", "conv1", "head"))


def test_per_example_grads_equal_loop_and_ignore_chunk_size():
  model, batch = _setup("cnn")
  mask = _random_mask(model.params, seed=2)
  grads = fisher.per_example_grads(model.logits_fn, model.params, batch, mask=mask,
                                   chunk_size=3)
  grad_fn = _log_prob_grad_fn(model)
  for i in range(7):
    expected = jax.tree.map(lambda g, m: -g * m,
                            grad_fn(model.params, batch["x"][i], int(batch["y"][i])), mask)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], grads), expected,
                                rtol=RTOL, atol=1e-7)
  grads7 = fisher.per_example_grads(model.logits_fn, model.params, batch, mask=mask,
                                    chunk_size=7)
  chex.assert_trees_all_close(grads7, grads, rtol=RTOL, atol=1e-7)
  # labels given as an array, and as another entry of the batch
  other = (batch["y"] + 1) % model.num_classes
  g_arr = fisher.per_example_grads(model.logits_fn, model.params, batch, labels=other)
  g_key = fisher.per_example_grads(model.logits_fn, model.params, dict(batch, y_true=other),
                                   labels="y_true")
  chex.assert_trees_all_close(g_arr, g_key)
  expected0 = jax.tree.map(lambda g: -g, grad_fn(model.params, batch["x"][0], int(other[0])))
  chex.assert_trees_all_close(jax.tree.map(lambda a: a[0], g_arr), expected0,
                              rtol=RTOL, atol=1e-7)


def test_per_example_grad_norms():
  model, batch = _setup("mlp")
  sq = fisher.per_example_grad_norms(model.logits_fn, model.params, batch, chunk_size=2)
  np.testing.assert_allclose(sq, _loop_label_fisher(model, batch, batch["y"]), rtol=RTOL)
  norms = fisher.per_example_grad_norms(model.logits_fn, model.params, batch, squared=False)
  np.testing.assert_allclose(norms, np.sqrt(sq), rtol=RTOL)
  key = jax.random.key(5)
  sampled = fisher.per_example_grad_norms(model.logits_fn, model.params, batch,
                                          labels="sampled", key=key)
  mc = fisher.fisher_trace(model.logits_fn, model.params, batch, kind="mc", key=key,
                           return_per_example=True)
  np.testing.assert_allclose(sampled, mc.extra["per_example"], rtol=RTOL)


def test_bad_input_raises():
  model, batch = _setup("mlp")
  f = functools.partial(fisher.fisher_trace, model.logits_fn, model.params, batch)
  bad_structure = {"stem": model.params["stem"]}
  with pytest.raises(MaskMismatchError):
    f(mask=bad_structure)
  bad_shape = jax.tree.map(lambda p: np.ones(p.shape + (1,), bool), model.params)
  with pytest.raises(MaskMismatchError):
    fisher.per_example_grads(model.logits_fn, model.params, batch, mask=bad_shape)
  with pytest.raises(UserError):
    f(kind="true")
  with pytest.raises(UserError):
    f(kind="mc")  # no key
  with pytest.raises(UserError):
    f(kind="exact", num_samples=5)
  with pytest.raises(UserError):
    f(chunk_size=0)
  with pytest.raises(UserError):
    fisher.fisher_trace(model.logits_fn, model.params, dict(batch, y=batch["y"] + 10),
                        kind="empirical")
  with pytest.raises(UserError):
    fisher.per_example_grad_norms(model.logits_fn, model.params, batch, labels="true")
  with pytest.raises(UserError):
    fisher.fisher_trace(model.logits_fn, model.params, [])


def _scaled_logits(scale, params, x):
  """A logits function whose bound argument ``scale`` is a leaf of its Partial."""
  model, _ = _setup("mlp")
  return scale * model.logits_fn(params, x)


def test_partial_logits_share_compilations_and_use_their_leaves():
  # Functions that differ only in a Partial's bound arrays (a solution's BatchNorm statistics)
  # are the same jit argument structure: one compilation, each with its own values.
  model, batch = _setup("mlp")
  before = fisher._label_sqnorms_chunk._cache_size()
  values = [fisher.fisher_trace(jax.tree_util.Partial(_scaled_logits, np.float32(s)), model.params,
                                batch, kind="empirical").value for s in (1.0, 2.0, 3.0)]
  assert fisher._label_sqnorms_chunk._cache_size() == before + 1
  plain = fisher.fisher_trace(model.logits_fn, model.params, batch, kind="empirical").value
  np.testing.assert_allclose(values[0], plain, rtol=RTOL)
  assert len(set(values)) == 3  # each call used its own scale
