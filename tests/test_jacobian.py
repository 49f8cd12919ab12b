"""Tests of snnjax.estimators.jacobian against jax.jacrev per example (tests/_tiny.py models)."""

import functools

import chex
import jax
import numpy as np
import pytest

import _tiny as tiny
from snnjax.errors import UserError
from snnjax.estimators.jacobian import jacobian_norm

RTOL = 2e-5


@functools.cache
def _jacrev_sqnorms(name, output):
  """Exact reference: ||df/dx||_F^2 per example of ``tiny.classifier(name)`` by jacrev."""
  model, batch = tiny.classifier(name)

  def f(x):
    logits = model.logits_fn(model.params, x[None])[0]
    return jax.nn.softmax(logits) if output == "probs" else logits
  jac = jax.jit(jax.vmap(jax.jacrev(f)))(batch["x"])  # (n, C, *input)
  return np.sum(np.square(np.asarray(jac, np.float64)).reshape(jac.shape[0], -1), axis=1)


@pytest.mark.parametrize("name,output", [("mlp", "logits"), ("mlp", "probs"), ("cnn", "logits"),
                                         ("cnn", "probs")])
def test_exact_equals_jacrev(name, output):
  model, batch = tiny.classifier(name)
  expected = _jacrev_sqnorms(name, output)
  est = jacobian_norm(model.logits_fn, model.params, batch, output=output, chunk_size=4,
                      return_per_example=True)
  np.testing.assert_allclose(est.extra["per_example"], expected, rtol=RTOL)
  np.testing.assert_allclose(est.value, expected.mean(), rtol=RTOL)
  assert est.stderr is None and est.num_probes == 0 and est.num_examples == 7
  assert est.extra["squared"] is True and est.extra["output"] == output
  unsquared = jacobian_norm(model.logits_fn, model.params, batch, output=output, squared=False,
                            chunk_size=4)
  np.testing.assert_allclose(unsquared.value, np.sqrt(expected).mean(), rtol=RTOL)
  assert unsquared.extra["squared"] is False


def test_chunks_and_batches_do_not_change_it():
  model, batch = tiny.classifier("cnn")
  est = jacobian_norm(model.logits_fn, model.params, tiny.split({"x": batch["x"]}, (3, 4)),
                      chunk_size=4, return_per_example=True)
  np.testing.assert_allclose(est.extra["per_example"], _jacrev_sqnorms("cnn", "logits"),
                             rtol=RTOL)
  assert est.num_examples == 7


@pytest.mark.parametrize("projection", ["rademacher", "gaussian"])
def test_projection_estimate_within_stderr(projection):
  model, batch = tiny.classifier("mlp")
  exact = _jacrev_sqnorms("mlp", "logits").mean()
  key = jax.random.key(7)
  est = jacobian_norm(model.logits_fn, model.params, batch, key=key, num_projections=300,
                      projection=projection, chunk_size=4)
  assert est.num_probes == 300 and est.extra["method"] == projection
  assert abs(est.value - exact) < 4 * est.extra["projection_stderr"]
  assert est.extra["projection_stderr"] < 0.1 * exact
  # per-example keys: independent of chunking and batching
  again = jacobian_norm(model.logits_fn, model.params, tiny.split(batch, (5, 2)), key=key,
                        num_projections=300, projection=projection, chunk_size=4)
  np.testing.assert_allclose(again.value, est.value, rtol=RTOL)


def test_bad_input_raises():
  model, batch = tiny.classifier("mlp")
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
    f(devices="gpu")
  with pytest.raises(UserError):
    jacobian_norm(model.logits_fn, model.params, {"y": batch["y"]})
