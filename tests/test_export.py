"""The accelerator path, checked without an accelerator: ``jax.export`` for ``cuda`` and ``tpu``
of every compiled program a study runs, at the ``paper`` preset's shapes (CIFAR-100, the 4x-wide
ResNet-32, 100 classes): the train step (dense, masked, bfloat16, Fisher penalty), RigL's dense
gradient and mask update, the ensemble step and the estimators' kernels (HVP, Hutchinson probe,
per-example gradients and Fisher, input Jacobian). Nothing is materialized (``jax.ShapeDtypeStruct``
arguments only): an export fails on a primitive with no lowering for the platform, which is what a
first run on a GPU or TPU machine would otherwise find out.

The CPU-only rewrites (the model's residual materialization, the estimators' grouped convolutions
as batched dots) are resolved from the backend: off on an accelerator (checked here), so the
exported programs are built with them off, as the accelerator runs them.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax import models
from snnjax.estimators import _convs, fisher, hessian, jacobian, likelihoods
from snnjax.models import resnet
from snnjax.sparsity import dynamic
from snnjax.train import config_presets, dst, ensemble, starting_point
from snnjax.train.optim import make_optimizer
from snnjax.train.solution import _ModelFunction
from snnjax.train.state import TrainState
from snnjax.train.step import make_train_step

PLATFORMS = ("cuda", "tpu")
BATCH = 8           # examples per step (the export's cost does not depend on it)
NUM_TRAIN = 50_000  # CIFAR-100's training set, resident on the device
K = 2               # ensemble members


def _sds(tree):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), tree)


@pytest.fixture(scope="module")
def paper():
  """The paper preset's Sol-F config, model (rewrites off) and abstract train state."""
  config = config_presets.sparse_config("finetune", 0.95, "cifar100")
  assert (config.dataset.name, config.model.name) == ("cifar100", "wide_resnet32")
  model = models.create_model(config.model.name, 100, **dict(config.model.kwargs),
                              materialize=False)
  tx, _ = make_optimizer(config.optim, steps_per_epoch=NUM_TRAIN // 128,
                         num_epochs=config.num_epochs)

  def build():
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    mask = jax.tree.map(lambda p: jnp.ones(p.shape, bool), variables["params"])
    return TrainState.create(variables["params"], variables["batch_stats"], mask, tx)
  state = jax.eval_shape(build)
  data = {"x": jax.ShapeDtypeStruct((NUM_TRAIN, 32, 32, 3), jnp.float32),
          "y": jax.ShapeDtypeStruct((NUM_TRAIN,), jnp.int32)}
  return {"config": config, "model": model, "tx": tx, "state": state, "data": data}


def _export(fn, *args):
  exported = jax.export.export(fn, platforms=PLATFORMS)(*args)
  assert tuple(exported.platforms) == PLATFORMS
  assert exported.mlir_module_serialized  # lowered for both
  return exported


KEY = jax.ShapeDtypeStruct((2,), jnp.uint32)  # raw threefry key data, wrapped inside
IDX = jax.ShapeDtypeStruct((BATCH,), jnp.int32)


def test_the_cpu_rewrites_are_off_on_an_accelerator(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert _convs.resolve_cpu_rewrites(None) is False
  x = jnp.ones((2, 3))
  assert resnet._maybe_materialize(x, None) is x  # pylint: disable=protected-access
  cfg = config_presets.dense_config("cifar100")
  assert ensemble.default_vectorize(cfg)  # one vmapped program for the members


@pytest.mark.parametrize("variant", ["dense", "masked_bfloat16", "fisher_penalty"])
def test_train_step_exports(paper, variant):
  kwargs = {"compute_dtype": jnp.bfloat16} if variant == "masked_bfloat16" else {}
  if variant == "fisher_penalty":
    kwargs["fisher_examples"] = 4
  step = make_train_step(paper["model"].apply, paper["tx"], augment=True, **kwargs)
  args = [paper["state"], paper["data"], IDX]
  if variant == "fisher_penalty":
    fn = jax.jit(lambda s, d, i, k, w: step(s, d, i, jax.random.wrap_key_data(k), w))
    _export(fn, *args, KEY, jax.ShapeDtypeStruct((), jnp.float32))
  else:
    _export(jax.jit(lambda s, d, i, k: step(s, d, i, jax.random.wrap_key_data(k))), *args, KEY)


def test_rigl_gradient_and_mask_update_export(paper):
  grad_fn = dst.make_dense_grad_fn(paper["model"].apply, augment=True)
  _export(jax.jit(lambda s, d, i, k: grad_fn(s, d, i, jax.random.wrap_key_data(k))),
          paper["state"], paper["data"], IDX, KEY)
  prunable = starting_point.prunable_tree(paper["config"], paper["state"].params)
  update = dst.make_update_fn(dynamic.get_updater("rigl"), prunable)
  _export(jax.jit(lambda s, g, k, f: update(s, g, jax.random.wrap_key_data(k), f)),
          paper["state"], paper["state"].params, KEY, jax.ShapeDtypeStruct((), jnp.float32))


def test_ensemble_step_exports(paper):
  step = ensemble.make_ensemble_step(paper["model"].apply, paper["tx"], augment=True)
  states = jax.tree.map(lambda a: jax.ShapeDtypeStruct((K,) + a.shape, a.dtype), paper["state"])
  _export(jax.jit(lambda s, d, i, k, t: step(s, d, i, jax.random.wrap_key_data(k), t)),
          states, paper["data"], jax.ShapeDtypeStruct((K, BATCH), jnp.int32),
          jax.ShapeDtypeStruct((K, 2), jnp.uint32), jax.ShapeDtypeStruct((), jnp.int32))


def _functions(paper):
  """The estimators' ``(logits_fn, loss_fn)`` of a solution (eval-mode BatchNorm)."""
  logits = functools.partial(jax.tree_util.Partial, _ModelFunction(paper["model"], False, "logits"))
  loss = functools.partial(jax.tree_util.Partial, _ModelFunction(paper["model"], False, "loss"))
  return logits, loss


def test_estimator_kernels_export(paper):
  make_logits, make_loss = _functions(paper)
  params, stats = paper["state"].params, paper["state"].batch_stats
  size = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  batch = {"x": jax.ShapeDtypeStruct((BATCH, 32, 32, 3), jnp.float32),
           "y": jax.ShapeDtypeStruct((BATCH,), jnp.int32),
           "index": jax.ShapeDtypeStruct((BATCH,), jnp.int32)}
  vec = jax.ShapeDtypeStruct((size,), jnp.float32)
  mask = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.float32), params)

  # HVP: a fresh forward-over-reverse product and the linearized map's product
  _export(jax.jit(lambda bs, p, b, m, z: hessian._hvp_full(make_loss(bs), p, b, m, z)),
          stats, params, batch, vec, vec)
  _export(jax.jit(lambda bs, p, b, m, z: hessian._apply_one(
      hessian._linearize(make_loss(bs), p, b), p, m, z)), stats, params, batch, vec, vec)
  # Hutchinson probes: z^T H z per probe (one and a vmapped group), per-leaf sums
  _export(jax.jit(lambda bs, p, b, m, k, i: hessian._quad_one(
      make_loss(bs), p, b, m, jax.random.wrap_key_data(k), i, None)),
          stats, params, batch, vec, KEY, jax.ShapeDtypeStruct((), jnp.int32))
  _export(jax.jit(lambda bs, p, b, m, k, i: hessian._probe_products(
      make_loss(bs), p, b, m, jax.random.wrap_key_data(k), i, what="leaf")),
          stats, params, batch, vec, KEY, jax.ShapeDtypeStruct((4,), jnp.int32))
  # per-example gradients and the Fisher (exact, sampled labels), CPU rewrites off
  lik = likelihoods.resolve("categorical")
  _export(jax.jit(lambda bs, p, m, k, c: fisher._grads_chunk(
      (make_logits(bs), p, m, jax.random.wrap_key_data(k)), c, lik=lik, sampled=True,
      cpu_rewrites=False)), stats, params, mask, KEY, batch)
  _export(jax.jit(lambda bs, p, m, k, c: fisher._label_sqnorms_chunk(
      (make_logits(bs), p, m, jax.random.wrap_key_data(k)), c, lik=lik, num_samples=2,
      cpu_rewrites=False)), stats, params, mask, KEY, batch)
  _export(jax.jit(lambda bs, p, m, c: fisher._exact_fisher_chunk(
      (make_logits(bs), p, m), c, lik=lik, rows=(0, 100), cpu_rewrites=False)),
          stats, params, mask, batch)
  # the input Jacobian: exact (one VJP per class) and projected
  _export(jax.jit(lambda bs, p, c: jacobian._exact_chunk((make_logits(bs), p), c,
                                                         output="logits")), stats, params, batch)
  _export(jax.jit(lambda bs, p, k, c: jacobian._projected_chunk(
      (make_logits(bs), p, jax.random.wrap_key_data(k)), c, output="logits", num_projections=4,
      projection="rademacher")), stats, params, KEY, batch)
