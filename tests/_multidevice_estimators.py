"""Run by tests/test_estimators_multidevice.py in a subprocess with 4 CPU devices.

Needs ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` in the environment before jax is
imported. Computes every estimator that loops over data on all 4 devices and on the default device
alone and asserts equal results; prints ``ok <checks>`` and exits 0, or raises (non-zero exit).
"""

import os
import sys

import jax
import numpy as np

_TESTS = os.path.dirname(os.path.abspath(__file__))
# The checkout's own snnjax (not an installed one) and the test helpers.
sys.path[:0] = [os.path.dirname(_TESTS), _TESTS]
import _tiny as tm  # noqa: E402
from snnjax.estimators import _sharding, diagonals, fisher, hessian, lanczos  # noqa: E402
from snnjax.estimators._base import as_pytree_fn  # noqa: E402
from snnjax.estimators.hessian import hessian_trace, hvp_over_data  # noqa: E402
from snnjax.estimators.likelihoods import Categorical  # noqa: E402
from snnjax.estimators.jacobian import jacobian_norm  # noqa: E402

RTOL = 1e-5
ALL = "all"


def _close(a, b, what):
  np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=RTOL,
                             atol=1e-7, err_msg=what)


def _same_estimate(one, many, what):
  _close(one.value, many.value, what)
  if one.stderr is not None:
    _close(one.stderr, many.stderr, what + " stderr")
  assert one.num_examples == many.num_examples, what
  if "per_example" in one.extra:
    _close(one.extra["per_example"], many.extra["per_example"], what + " per example")


def main():
  assert jax.device_count() == 4, f"expected 4 devices, got {jax.devices()}"
  checks = []
  model = tm.cnn(1)
  batch = tm.make_batch(5, model, 10)  # 10 examples: not a multiple of 4, exercises padding
  key = jax.random.key(11)
  params, logits_fn = model.params, model.logits_fn
  rng = np.random.default_rng(0)
  mask = jax.tree.map(lambda p: rng.random(p.shape) < 0.7, params)

  # The chunks really are spread over the devices, and so is the jitted per-example output.
  chunks = list(_sharding.example_chunks({"x": batch["x"]}, 3, ALL))
  assert [c[1] for c in chunks] == [4, 4, 2], [c[1] for c in chunks]
  x0 = chunks[0][2]["x"]
  assert len(x0.sharding.device_set) == 4 and not x0.sharding.is_fully_replicated
  out = _sharding._sharded_call(
      _sharding.replicate((as_pytree_fn(logits_fn), params, None), ALL), {"x": x0},
      fn=_sharding.chunk_fn(fisher._exact_fisher_chunk, lik=Categorical(),
                            rows=(0, model.num_classes), cpu_rewrites=True),
      devices=tuple(jax.devices()))
  assert len(out.sharding.device_set) == 4 and not out.sharding.is_fully_replicated, out.sharding
  checks.append("placement")

  # Fisher traces: the CNN for the labels whose per-example conv-kernel gradients matter most,
  # the MLP for the rest (fewer compilations).
  mlp = tm.mlp(2)
  mlp_batch = tm.make_batch(6, mlp, 10)
  mlp_mask = jax.tree.map(lambda p: rng.random(p.shape) < 0.7, mlp.params)
  cases = [(model, batch, "exact", {"mask": mask}),
           (model, batch, "sampled", {"mask": mask, "key": key, "num_samples": 5}),
           (mlp, mlp_batch, "exact", {"class_chunk_size": 3}),
           (mlp, mlp_batch, "data", {"mask": mlp_mask})]
  for m, b, labels, kw in cases:
    args = dict(labels=labels, chunk_size=4, return_per_example=True, **kw)
    one = fisher.fisher_trace(m.logits_fn, m.params, b, **args)
    many = fisher.fisher_trace(m.logits_fn, m.params, b, devices=ALL, **args)
    _same_estimate(one, many, f"fisher_trace {labels} {sorted(kw)}")
    checks.append(f"fisher_{labels}")
  _same_estimate(fisher.ggn_trace(mlp.logits_fn, mlp.params, mlp_batch, chunk_size=4),
                 fisher.ggn_trace(mlp.logits_fn, mlp.params, mlp_batch, chunk_size=4,
                                  devices=ALL), "ggn")
  checks.append("ggn")

  for labels in ("data", "sampled"):
    one = fisher.per_example_grad_norms(mlp.logits_fn, mlp.params, mlp_batch, labels=labels,
                                        key=key, mask=mlp_mask, chunk_size=4)
    many = fisher.per_example_grad_norms(mlp.logits_fn, mlp.params, mlp_batch, labels=labels,
                                         key=key, mask=mlp_mask, chunk_size=4,
                                         devices=jax.devices())
    _close(one, many, f"per_example_grad_norms {labels}")
    checks.append(f"grad_norms_{labels}")
  one = fisher.per_example_grads(logits_fn, params, batch, mask=mask, chunk_size=4)
  many = fisher.per_example_grads(logits_fn, params, batch, mask=mask, chunk_size=4, devices=ALL)
  jax.tree.map(lambda a, b: _close(a, b, "per_example_grads"), one, many)
  checks.append("per_example_grads")
  direction = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
  one = fisher.per_example_grad_dots(logits_fn, params, batch, direction, mask=mask, chunk_size=4)
  many = fisher.per_example_grad_dots(logits_fn, params, batch, direction, mask=mask,
                                      chunk_size=4, devices=ALL)
  _close(one.dots, many.dots, "per_example_grad_dots dots")
  _close(one.norms, many.norms, "per_example_grad_dots norms")
  checks.append("grad_dots")

  for m, b, output, kw in [(model, batch, "logits", {}),
                           (mlp, mlp_batch, "probs", {"key": key, "num_projections": 8})]:
    one = jacobian_norm(m.logits_fn, m.params, b, output=output, chunk_size=4,
                        return_per_example=True, **kw)
    many = jacobian_norm(m.logits_fn, m.params, b, output=output, chunk_size=4, devices=ALL,
                         return_per_example=True, **kw)
    _same_estimate(one, many, f"jacobian_norm {output} {sorted(kw)}")
    checks.append(f"jacobian_{output}_{'proj' if kw else 'exact'}")

  # The Hessian estimators: a batch of 10 on 4 devices is 8 sharded examples and 2 replicated
  # ones (hessian._place).
  placed, sizes = hessian._place([batch], [10], ALL)
  assert sizes == [8, 2] and len(placed[0]["x"].sharding.device_set) == 4
  assert not placed[0]["x"].sharding.is_fully_replicated
  assert placed[1]["x"].sharding.is_fully_replicated
  one = hessian_trace(model.loss_fn, params, batch, key=key, num_probes=4, mask=mask)
  many = hessian_trace(model.loss_fn, params, batch, key=key, num_probes=4, mask=mask,
                       devices=ALL)
  _close(one.value, many.value, "hessian_trace")
  _close(one.extra["samples"], many.extra["samples"], "hessian_trace samples")
  checks.append("hessian_trace")
  # Products (the MLP: fewer compilations): with devices its batch of 10 is two pieces, so every
  # product below shares the compilations of one fresh HVP per piece.
  mlp_loss, mlp_params = mlp.loss_fn, mlp.params
  v = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), mlp_params)
  jax.tree.map(lambda a, b: _close(a, b, "hvp_over_data"),
               hvp_over_data(mlp_loss, mlp_params, mlp_batch, v),
               hvp_over_data(mlp_loss, mlp_params, mlp_batch, v, devices=ALL))
  checks.append("hvp_over_data")
  # Per-block traces and diagonals: sharded like the totals.
  one = hessian_trace(mlp_loss, mlp_params, mlp_batch, key=key, num_probes=2, blocks="layer")
  many = hessian_trace(mlp_loss, mlp_params, mlp_batch, key=key, num_probes=2, blocks="layer",
                       devices=ALL)
  for name in one.blocks:
    _close(one.blocks[name].value, many.blocks[name].value, f"hessian block {name}")
  checks.append("hessian_blocks")
  one = diagonals.fisher_diagonal(model.logits_fn, params, batch, mask=mask, chunk_size=4)
  many = diagonals.fisher_diagonal(model.logits_fn, params, batch, mask=mask, chunk_size=4,
                                   devices=ALL)
  jax.tree.map(lambda a, b: _close(a, b, "fisher_diagonal"), one.value, many.value)
  checks.append("fisher_diagonal")
  one = lanczos.top_eigenvalues(mlp_loss, mlp_params, mlp_batch, k=2, key=key, num_iters=6)
  many = lanczos.top_eigenvalues(mlp_loss, mlp_params, mlp_batch, k=2, key=key, num_iters=6,
                                 devices=ALL)
  np.testing.assert_allclose(one.eigenvalues, many.eigenvalues, rtol=1e-4, err_msg="lanczos")
  checks.append("top_eigenvalues")
  one = lanczos.power_iteration(mlp_loss, mlp_params, mlp_batch, key=key, num_iters=3)
  many = lanczos.power_iteration(mlp_loss, mlp_params, mlp_batch, key=key, num_iters=3,
                                 devices=ALL)
  np.testing.assert_allclose(one.value, many.value, rtol=1e-4, err_msg="power_iteration")
  checks.append("power_iteration")
  one = lanczos.spectral_density(mlp_loss, mlp_params, mlp_batch, key=key, num_probes=1,
                                 num_iters=4)
  many = lanczos.spectral_density(mlp_loss, mlp_params, mlp_batch, key=key, num_probes=1,
                                  num_iters=4, devices=ALL)
  np.testing.assert_allclose(one.nodes, many.nodes, rtol=1e-4, atol=1e-6, err_msg="slq")
  checks.append("spectral_density")

  print("ok", " ".join(sorted(set(checks))))


if __name__ == "__main__":
  main()
