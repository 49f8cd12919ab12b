"""No silent recompiles (snnjax.estimators.compilation): masks of other densities, other probe
counts, new Partials of the same model and a short last batch reuse the compiled programs."""

import os
import subprocess
import sys

import jax
import numpy as np

import _tiny as tiny
from snnjax import estimators as est
from snnjax.estimators import compilation


def test_masks_of_different_densities_and_probe_counts_do_not_recompile():
  model, batch = tiny.curvature("cnn")
  loss, params = model.loss_fn, model.params
  key = jax.random.key(0)

  def run(mask, probes):
    est.hessian_trace(loss, params, batch, key=key, num_probes=probes, mask=mask)
    est.hessian_trace(loss, params, batch, key=key, num_probes=probes, mask=mask, blocks="layer")
    # Hutch++ sketches of k = 3, 4, 4 vectors: padded to one power of two (4), one compilation.
    est.hessian_trace(loss, params, batch, key=key, num_probes=3 * (2 + probes // 2), mask=mask,
                      method="hutchpp")
    est.hessian_diagonal(loss, params, batch, key=key, num_probes=probes, mask=mask)
    est.top_eigenvalues(loss, params, batch, k=1, key=key, mask=mask, num_iters=probes + 2)
    est.fisher_trace(model.logits_fn, params, batch, mask=mask)

  run(tiny.random_mask(params, 0.3, seed=0), 3)  # warm-up: compiles once
  with compilation.count_compilations() as counter:
    run(tiny.random_mask(params, 0.6, seed=1), 4)
    run(tiny.random_mask(params, 0.9, seed=2), 5)
  assert counter.count == 0, counter.names


def test_new_partials_of_one_model_and_short_last_batch_do_not_recompile():
  model, batch = tiny.classifier("mlp")
  mlp, _ = tiny.curvature("mlp")
  n = batch["x"].shape[0]

  def logits(scale, params, x):  # a model function; ``scale`` stands for e.g. BatchNorm stats
    return scale * model.logits_fn(params, x)

  def loss(scale, params, b):
    return mlp.loss_fn(jax.tree.map(lambda p: p * scale, params), b)

  def run(scale, last):
    fn = jax.tree_util.Partial(logits, np.float32(scale))  # a new closure object every call
    data = [{k: v[:n - 3] for k, v in batch.items()}, {k: v[n - last:] for k, v in batch.items()}]
    est.per_example_grad_norms(fn, model.params, data, chunk_size=4)
    est.fisher_trace(fn, model.params, data, chunk_size=4, blocks="leaf")
    est.hessian_trace(jax.tree_util.Partial(loss, np.float32(scale)), mlp.params,
                      tiny.curvature("mlp")[1], key=jax.random.key(1), num_probes=2)

  run(1.0, 3)
  with compilation.count_compilations() as counter:
    run(0.9, 2)
    run(1.1, 1)
  assert counter.count == 0, counter.names


def test_persistent_cache_from_env(tmp_path):
  code = ("import jax, jax.numpy as jnp; import snnjax.estimators; "
          "print(jax.config.jax_compilation_cache_dir); "
          "jax.jit(lambda x: jnp.sin(x) * 3)(jnp.ones(3)).block_until_ready()")
  env = dict(os.environ, SNNJAX_COMPILATION_CACHE=str(tmp_path / "cache"))
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == str(tmp_path / "cache")
  assert any((tmp_path / "cache").iterdir())  # a program was written
