"""Batches as users have them, and the one-line UserErrors for ordinary mistakes.

Same estimates from a dict batch, a tuple batch ``(x, y)`` and a custom-keyed batch (with
``x=`` / ``y=`` selectors, keys or functions); the Hessian side passes the batch untouched to
the user's ``loss_fn``. Guards: a non-scalar ``loss_fn``, a train-mode BatchNorm ``logits_fn``
(outputs depending on the other examples of the batch), a mask that is not boolean / 0-1, a mask
whose structure differs from the params'.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import _tiny as tiny
from snnjax.errors import MaskMismatchError, UserError
from snnjax import estimators as est


def _one_line(excinfo):
  assert "\n" not in str(excinfo.value), str(excinfo.value)


def test_dict_tuple_and_custom_keyed_batches_give_the_same_estimates():
  model, batch = tiny.classifier("mlp")
  x, y = batch["x"], batch["y"]
  keyed = {"image": x, "label": y}
  for fn, kw in [(est.fisher_trace, dict(labels="data")),
                 (est.fisher_trace, dict(labels="exact")),
                 (est.jacobian_norm, {})]:
    ref = fn(model.logits_fn, model.params, batch, **kw).value
    assert fn(model.logits_fn, model.params, (x, y), **kw).value == ref
    sel = dict(x="image", y="label") if kw.get("labels") == "data" else dict(x="image")
    assert fn(model.logits_fn, model.params, keyed, **kw, **sel).value == ref
    sel = {k: (lambda b, v=v: b[v]) for k, v in sel.items()}
    assert fn(model.logits_fn, model.params, keyed, **kw, **sel).value == ref
  d_ref, _ = est.fisher_diagonal(model.logits_fn, model.params, batch, labels="data").flat()
  d_tup, _ = est.fisher_diagonal(model.logits_fn, model.params, [(x[:4], y[:4]),
                                                                 (x[4:], y[4:])],
                                 labels="data").flat()
  np.testing.assert_allclose(d_tup, d_ref, rtol=1e-6)

  # the Hessian side: the batch goes to loss_fn as it is
  def tuple_loss(params, b):
    xs, ys = b
    return model.loss_fn(params, {"x": xs, "y": ys})

  def keyed_loss(params, b):
    return model.loss_fn(params, {"x": b["image"], "y": b["label"]})

  key = jax.random.key(0)
  h_ref = est.hessian_trace(model.loss_fn, model.params, batch, key=key, num_probes=3).value
  assert est.hessian_trace(tuple_loss, model.params, (x, y), key=key, num_probes=3).value == \
      pytest.approx(h_ref, rel=1e-6)
  assert est.hessian_trace(keyed_loss, model.params, keyed, key=key, num_probes=3).value == \
      pytest.approx(h_ref, rel=1e-6)


def test_missing_inputs_say_how_to_select_them():
  model, batch = tiny.classifier("mlp")
  with pytest.raises(UserError, match="pass x=") as e:
    est.fisher_trace(model.logits_fn, model.params, {"image": batch["x"]})
  _one_line(e)
  with pytest.raises(UserError, match="pass y=") as e:
    est.fisher_trace(model.logits_fn, model.params, {"x": batch["x"]}, labels="data")
  _one_line(e)


def test_non_scalar_loss_fn_is_refused_before_any_work():
  model, batch = tiny.classifier("mlp")

  def per_example_loss(params, b):
    return optax.softmax_cross_entropy_with_integer_labels(model.logits_fn(params, b["x"]),
                                                           b["y"])
  with pytest.raises(UserError, match="scalar mean loss") as e:
    est.hessian_trace(per_example_loss, model.params, batch, key=jax.random.key(0),
                      num_probes=2)
  _one_line(e)
  with pytest.raises(UserError, match="scalar mean loss"):
    est.hvp(per_example_loss, model.params, batch, model.params)


def test_train_mode_batchnorm_is_refused():
  model, batch = tiny.classifier("cnn")
  cnn = tiny._CNN(4, 3, "relu", True)  # tiny.cnn's module
  shapes = jax.eval_shape(cnn.init, jax.random.key(0), batch["x"][:1])["batch_stats"]
  variables = {"params": model.params,
               "batch_stats": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)}

  def train_logits(params, x):
    return cnn.apply({**variables, "params": params}, x, train=True,
                     mutable=["batch_stats"])[0]

  for fn in (lambda: est.fisher_trace(train_logits, model.params, batch),
             lambda: est.jacobian_norm(train_logits, model.params, batch),
             lambda: est.per_example_grad_norms(train_logits, model.params, batch)):
    with pytest.raises(UserError, match="depend on the other examples") as e:
      fn()
    _one_line(e)

  def with_updates(params, x):  # forgot the [0]: (outputs, updates)
    return cnn.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
  with pytest.raises(UserError, match="one array") as e:
    est.fisher_trace(with_updates, model.params, batch)
  _one_line(e)


def test_masks_that_are_not_0_1_or_do_not_match_are_refused():
  model, batch = tiny.classifier("mlp")
  half = jax.tree.map(lambda p: np.full(np.shape(p), 0.5, np.float32), model.params)
  for fn in (lambda m: est.fisher_trace(model.logits_fn, model.params, batch, mask=m),
             lambda m: est.hessian_trace(model.loss_fn, model.params, batch, mask=m,
                                         key=jax.random.key(0), num_probes=2)):
    with pytest.raises(MaskMismatchError, match="not boolean or 0/1") as e:
      fn(half)
    _one_line(e)
    partial = {k: v for k, v in model.params.items() if k != "head"}
    with pytest.raises(MaskMismatchError, match="missing") as e:
      fn(jax.tree.map(lambda p: np.ones(np.shape(p), bool), partial))
    _one_line(e)
  ones = jax.tree.map(lambda p: np.ones(np.shape(p), np.float32), model.params)
  dense = est.fisher_trace(model.logits_fn, model.params, batch).value
  assert est.fisher_trace(model.logits_fn, model.params, batch, mask=ones).value == \
      pytest.approx(dense, rel=1e-6)
