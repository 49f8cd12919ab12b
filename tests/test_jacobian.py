"""Tests of snnjax.estimators.jacobian against jax.jacrev per example."""

import functools

import chex
import jax
import numpy as np
import pytest

import _tiny_models as tm
from snnjax.errors import UserError
from snnjax.estimators.jacobian import jacobian_norm

RTOL = 2e-5


@functools.lru_cache(maxsize=None)
def _setup(name):
  model = tm.mlp(0) if name == "mlp" else tm.cnn(1)
  return model, tm.make_batch(3, model, 6)


def _jacrev_sqnorms(model, batch, output):
  def f(x):
    logits = model.logits_fn(model.params, x[None])[0]
    return jax.nn.softmax(logits) if output == "probs" else logits
  jac = jax.jit(jax.vmap(jax.jacrev(f)))(batch["x"])  # (n, C, *input)
  return np.sum(np.square(np.asarray(jac, np.float64)).reshape(jac.shape[0], -1), axis=1)


@pytest.mark.parametrize("name,output", [("mlp", "logits"), ("mlp", "probs"), ("cnn", "logits"),
                                         ("cnn", "probs")])
def test_exact_equals_jacrev(name, output):
  model, batch = _setup(name)
  expected = _jacrev_sqnorms(model, batch, output)
  est = jacobian_norm(model.logits_fn, model.params, batch, output=output, chunk_size=4,
                      return_per_example=True)
  np.testing.assert_allclose(est.extra["per_example"], expected, rtol=RTOL)
  np.testing.assert_allclose(est.value, expected.mean(), rtol=RTOL)
  assert est.stderr is None and est.num_probes == 0 and est.num_examples == 6
  assert est.extra["squared"] is True and est.extra["output"] == output
  unsquared = jacobian_norm(model.logits_fn, model.params, batch, output=output, squared=False,
                            chunk_size=4)
  np.testing.assert_allclose(unsquared.value, np.sqrt(expected).mean(), rtol=RTOL)
  assert unsquared.extra["squared"] is False


def test_chunks_and_batches_do_not_change_it():
  model, batch = _setup("cnn")
  ref = jacobian_norm(model.logits_fn, model.params, batch, chunk_size=4, return_per_example=True)
  parts = [{"x": batch["x"][:2]}, {"x": batch["x"][2:]}]
  est = jacobian_norm(model.logits_fn, model.params, parts, chunk_size=4, return_per_example=True)
  chex.assert_trees_all_close(est.extra["per_example"], ref.extra["per_example"], rtol=RTOL)
  assert est.num_examples == 6


@pytest.mark.parametrize("projection", ["rademacher", "gaussian"])
def test_projection_estimate_within_stderr(projection):
  model, batch = _setup("mlp")
  exact = jacobian_norm(model.logits_fn, model.params, batch)
  key = jax.random.key(7)
  est = jacobian_norm(model.logits_fn, model.params, batch, key=key, num_projections=300,
                      projection=projection, chunk_size=4)
  assert est.num_probes == 300 and est.extra["method"] == projection
  assert abs(est.value - exact.value) < 4 * est.extra["projection_stderr"]
  assert est.extra["projection_stderr"] < 0.1 * exact.value
  # per-example keys: independent of chunking and batching
  again = jacobian_norm(model.logits_fn, model.params, [{"x": batch["x"][:5]},
                                                        {"x": batch["x"][5:]}],
                        key=key, num_projections=300, projection=projection, chunk_size=4)
  np.testing.assert_allclose(again.value, est.value, rtol=RTOL)


def test_bad_input_raises():
  model, batch = _setup("mlp")
  f = functools.partial(jacobian_norm, model.logits_fn, model.params, batch)
  with pytest.raises(UserError):
    f(output="loss")
  with pytest.raises(UserError):
    f(num_projections=4)  # no key
  with pytest.raises(UserError):
    f(num_projections=4, key=jax.random.key(0), squared=False)
  with pytest.raises(UserError):
    f(num_projections=0, key=jax.random.key(0))
  with pytest.raises(UserError):
    f(projection="sphere", num_projections=2, key=jax.random.key(0))
  with pytest.raises(UserError):
    jacobian_norm(model.logits_fn, model.params, {"y": batch["y"]})
