"""Per-block curvature (snnjax.estimators.blocks): one pass, blocks sum to the total, each block
matches the dense Hessian's / the explicit per-example loop's block."""

import jax
import numpy as np
import pytest

import _tiny as tiny
from snnjax.errors import UserError
from snnjax.estimators import blocks, fisher, hessian


def _leaf_of_flat(params):
  return np.repeat(np.arange(len(jax.tree.leaves(params))),
                   [int(np.size(p)) for p in jax.tree.leaves(params)])


def test_block_specs():
  model, _ = tiny.curvature("mlp")
  paths = blocks.leaf_paths(model.params)
  assert "stem/kernel" in paths and "head/bias" in paths
  layer = blocks.make_blocks(model.params, "layer")
  assert set(layer.names) == {p.rsplit("/", 1)[0] for p in paths} and len(layer.names) >= 2
  grouped = blocks.make_blocks(model.params, {"body": ["stem"]})
  assert set(grouped.names) == {"body", blocks.OTHER}
  by_kind = blocks.make_blocks(model.params, lambda path: path.rsplit("/", 1)[-1])
  assert set(by_kind.names) == {"kernel", "bias"}
  np.testing.assert_allclose(layer.sum_leaves(np.ones(len(paths))).sum(), len(paths))
  resnet_like = {"stem": {"kernel": np.ones(2)}, "stem_bn": {"scale": np.ones(2)},
                 "stage1_block0": {"conv1": {"kernel": np.ones(3)}}, "head": {"bias": np.ones(1)}}
  parts = blocks.make_blocks(resnet_like, {"stem": ["stem/"], "stage1": ["stage1"]})
  names = dict(zip(blocks.leaf_paths(resnet_like), (parts.names[b] for b in parts.of_leaf)))
  assert names == {"stem/kernel": "stem", "stem_bn/scale": blocks.OTHER,
                   "stage1_block0/conv1/kernel": "stage1", "head/bias": blocks.OTHER}
  with pytest.raises(UserError):
    blocks.make_blocks(model.params, 3)


@pytest.mark.parametrize("masked", [False, True])
def test_hessian_block_traces_sum_to_total_and_match_dense_blocks(masked):
  model, batch = tiny.curvature("mlp")
  h = tiny.hessian("mlp")
  mask = tiny.random_mask(model.params, 0.5, seed=7) if masked else None
  m = np.ones(h.shape[0], bool) if mask is None else tiny.flat_mask(mask)
  leaf = _leaf_of_flat(model.params)
  key = jax.random.key(3)
  est = hessian.hessian_trace(model.loss_fn, model.params, batch, key=key, num_probes=40,
                              mask=mask, blocks="leaf")
  names = blocks.leaf_paths(model.params)
  assert list(est.blocks) == names
  # Blocks sum to the total exactly (same probes), per probe and on average.
  per_probe = np.stack([b.extra["samples"] for b in est.blocks.values()], axis=1)
  np.testing.assert_allclose(per_probe.sum(axis=1), est.extra["samples"], rtol=1e-12)
  np.testing.assert_allclose(sum(b.value for b in est.blocks.values()), est.value, rtol=1e-12)
  # Each probe's block value is z_l^T (H z)_l for the dense H: exact per probe.
  op = hessian.HessianOperator(model.loss_fn, model.params, batch, mask)
  hr = h[m][:, m]
  zs = np.stack([op.probe(key, i) for i in range(40)]).astype(np.float64)
  hz = zs @ hr
  for l, name in enumerate(names):
    sel = leaf[m] == l
    np.testing.assert_allclose(est.blocks[name].extra["samples"],
                               np.sum(zs[:, sel] * hz[:, sel], axis=1), rtol=2e-4, atol=1e-6)
    dense_block = np.trace(hr[sel][:, sel])
    assert abs(est.blocks[name].value - dense_block) < 4 * est.blocks[name].stderr + 1e-6
  # The exact method: block traces equal the dense block traces to float tolerance.
  exact = hessian.hessian_trace(model.loss_fn, model.params, batch, method="exact", mask=mask,
                                blocks="layer")
  np.testing.assert_allclose(exact.value, np.trace(hr), rtol=1e-5)
  layers = blocks.make_blocks(model.params, "layer")
  for b, name in enumerate(layers.names):
    sel = layers.of_leaf[leaf[m]] == b
    np.testing.assert_allclose(exact.blocks[name].value, np.trace(hr[sel][:, sel]), rtol=1e-5,
                               atol=1e-7)
  np.testing.assert_allclose(sum(b.value for b in exact.blocks.values()), exact.value,
                             rtol=1e-12)


def test_hessian_blocks_over_several_batches_match_one_batch():
  model, batch = tiny.curvature("mlp")
  kwargs = dict(key=jax.random.key(4), num_probes=6, blocks="layer")
  one = hessian.hessian_trace(model.loss_fn, model.params, batch, **kwargs)
  three = hessian.hessian_trace(model.loss_fn, model.params, tiny.split(batch, (16, 32, 16)),
                                **kwargs)
  for name in one.blocks:
    np.testing.assert_allclose(three.blocks[name].extra["samples"],
                               one.blocks[name].extra["samples"], rtol=1e-3, atol=1e-5)


def _loop_fisher_leaf(name, labels_of):
  """(N, L) per-example, per-leaf sum over labels (weights) of ||grad_l log p_c||^2."""
  model, batch = tiny.classifier(name)
  grad_fn = tiny.log_prob_grad(name)
  out = []
  for i, x in enumerate(batch["x"]):
    row = np.zeros(len(jax.tree.leaves(model.params)))
    for c, w in labels_of(i):
      g = grad_fn(model.params, x, c)
      row += w * np.array([np.sum(np.square(np.asarray(a, np.float64)))
                           for a in jax.tree.leaves(g)])
    out.append(row)
  return np.array(out)


@pytest.mark.parametrize("labels", ["exact", "sampled", "data"])
def test_fisher_block_traces_sum_to_total_and_match_loop(labels):
  model, batch = tiny.classifier("mlp")
  kwargs = dict(labels=labels, key=jax.random.key(5), blocks="leaf")
  est = fisher.fisher_trace(model.logits_fn, model.params, batch, **kwargs)
  np.testing.assert_allclose(sum(b.value for b in est.blocks.values()), est.value, rtol=1e-12)
  names = blocks.leaf_paths(model.params)
  assert list(est.blocks) == names
  if labels == "sampled":
    assert all(b.stderr is not None and b.stderr > 0 for b in est.blocks.values())
    return
  probs = np.asarray(jax.nn.softmax(model.logits_fn(model.params, batch["x"])), np.float64)
  if labels == "exact":
    ref = _loop_fisher_leaf("mlp", lambda i: enumerate(probs[i]))
  else:
    ref = _loop_fisher_leaf("mlp", lambda i: [(int(batch["y"][i]), 1.0)])
  for l, name in enumerate(names):
    np.testing.assert_allclose(est.blocks[name].value, ref[:, l].mean(), rtol=1e-4)
    assert est.blocks[name].stderr is None


def test_per_example_sqnorms_by_block():
  model, batch = tiny.classifier("cnn")
  mask = tiny.random_mask(model.params, 0.6, seed=2)
  total = fisher.per_example_grad_norms(model.logits_fn, model.params, batch, mask=mask)
  parts = fisher.per_example_sqnorms_by_block(model.logits_fn, model.params, batch, mask=mask,
                                              blocks="layer")
  np.testing.assert_allclose(parts.total, total, rtol=1e-12)
  np.testing.assert_allclose(sum(parts.blocks.values()), total, rtol=1e-10)
  ref = tiny.loop_label_sqnorms("cnn", batch["x"], batch["y"], mask)
  np.testing.assert_allclose(total, ref, rtol=1e-4)
