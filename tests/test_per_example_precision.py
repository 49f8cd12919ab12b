"""Per-example gradients of a small ResNet (eval-mode BatchNorm with random statistics) against a
float64 reference: <= 1e-5 relative on every leaf, the stem and its BatchNorm included, with the
CPU rewrite of grouped convolutions (the CPU default), and through everything built on them (the
per-leaf squared norms, the data-label Fisher diagonal, the exact GGN diagonal).

One batch holds both label cases: the head is scaled so that every prediction is confident (top-1
margin >= 12), examples 0 and 1 are labelled with their predicted class (1 - p_y ~ 1e-5), examples
2 and 3 with another class (large gradients). Labels other than the prediction: ResNet-20 at
16x16, worst leaf 6e-7 (rewrite) / 8e-7 (no rewrite, or XLA_FLAGS without
snnjax.xla_cpu.tune()), the same as a plain per-example jax.grad. Predicted labels: the float32
score e_y - softmax(f) lost 1 - p_y to cancellation and every leaf was off by ~eps / (1 - p_y)
(9e-4 on a trained ResNet-20 on CIFAR-10 training images, BENCHMARKS.md section 14; here 2e-3);
the likelihoods now compute 1 - p without the subtraction (``likelihoods.softmax_complement``).
"""

import jax
import jax.numpy as jnp
import numpy as np

from snnjax import estimators as est
from snnjax.estimators import likelihoods as lk
from snnjax.models import resnet

N = 4
TOL = 1e-5


def _setup():
  model = resnet.ResNet(4, 1, 0.25, "A")  # ResNet-8: stem + BN, one block per stage
  x = np.random.default_rng(0).standard_normal((N, 8, 8, 3)).astype(np.float32)
  shapes = jax.eval_shape(lambda k, xx: model.init(k, xx, train=False), jax.random.key(0), x[:1])
  rng = np.random.default_rng(1)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
    if name == "scale":
      return 1 + 0.2 * rng.standard_normal(leaf.shape)
    if name == "var":
      return rng.uniform(0.5, 2.0, leaf.shape)
    return 0.3 * rng.standard_normal(leaf.shape)

  variables = jax.tree.map(lambda a: np.asarray(a, np.float32),
                           jax.tree_util.tree_map_with_path(draw, shapes))
  params = variables["params"]

  def logits_of(dtype):
    stats = jax.tree.map(lambda a: jnp.asarray(a, dtype), variables["batch_stats"])
    return lambda p, xx: model.apply({"params": p, "batch_stats": stats}, xx, train=False)

  z = np.asarray(logits_of(jnp.float32)(params, x), np.float64)
  top2 = np.sort(z, axis=1)[:, -2:]
  scale = np.float32(12.0 / np.min(top2[:, 1] - top2[:, 0]))  # top-1 margins >= 12
  params["head"] = {k: v * scale for k, v in params["head"].items()}
  y = np.argmax(z, axis=1).astype(np.int32)
  y[2:] = (y[2:] + 1 + np.arange(N - 2)) % z.shape[1]  # examples 2, 3: another class
  return logits_of, params, x, y


def _reference(logits_of, params, x, y):
  """Per example, float64: (NLL gradient, exact GGN diagonal sum_c p_c (J^T (e_c - p))^2)."""
  with jax.enable_x64(True):
    f64 = logits_of(jnp.float64)
    p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)

    @jax.jit
    def one(p, xi, yi):
      z, vjp = jax.vjp(lambda q: f64(q, xi[None])[0], p)
      prob = jax.nn.softmax(z)
      grad = vjp(prob - jax.nn.one_hot(yi, z.shape[0], dtype=z.dtype))[0]
      rows = jax.vmap(lambda u: vjp(u)[0])(jnp.eye(z.shape[0], dtype=z.dtype) - prob[None])
      return grad, jax.tree.map(lambda r: jnp.tensordot(prob, jnp.square(r), 1), rows), z

    out = [jax.tree.map(np.asarray, one(p64, jnp.asarray(x[i], jnp.float64), y[i]))
           for i in range(N)]
  return [o[0] for o in out], [o[1] for o in out], np.stack([o[2] for o in out])


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_per_example_grads_match_float64_on_every_leaf():
  logits_of, params, x, y = _setup()
  ref, ref_ggn, z = _reference(logits_of, params, x, y)
  top = z.max(1, keepdims=True)
  logp = z - top - np.log(np.sum(np.exp(z - top), 1, keepdims=True))
  one_minus_py = -np.expm1(logp[np.arange(N), y])
  assert np.all(one_minus_py[:2] < 1e-4) and np.all(one_minus_py[2:] > 0.99)  # both cases
  p32 = jax.tree.map(jnp.asarray, params)
  paths = est.leaf_paths(p32)
  assert any(p.startswith("stem") for p in paths)
  f32 = logits_of(jnp.float32)
  batch = {"x": x, "y": y}
  got = est.per_example_grads(f32, p32, batch)  # CPU default: the grouped-conv rewrite
  for leaf, path in enumerate(paths):
    for i in range(N):
      err = _rel(jax.tree.leaves(got)[leaf][i], jax.tree.leaves(ref[i])[leaf])
      assert err <= TOL, (path, i, err)
  sq = est.per_example_sqnorms_by_block(f32, p32, batch, blocks="leaf").blocks
  for leaf, path in enumerate(paths):
    want = np.array([np.sum(np.square(jax.tree.leaves(r)[leaf])) for r in ref])
    assert np.max(np.abs(sq[path] - want) / want) <= TOL, path
  diag = est.fisher_diagonal(f32, p32, batch, labels="data").value
  ref_diag = jax.tree.map(lambda *gs: np.mean(np.square(np.stack(gs)), axis=0), *ref)
  for path, a, b in zip(paths, jax.tree.leaves(diag), jax.tree.leaves(ref_diag)):
    assert _rel(a, b) <= TOL, path
  ggn = est.fisher_diagonal(f32, p32, batch, labels="exact").value
  ref_ggn = jax.tree.map(lambda *gs: np.mean(np.stack(gs), axis=0), *ref_ggn)
  for path, a, b in zip(paths, jax.tree.leaves(ggn), jax.tree.leaves(ref_ggn)):
    assert _rel(a, b) <= TOL, path


def test_likelihood_complements_are_accurate_for_confident_outputs():
  """1 - p_y (categorical) and 1 - s (Bernoulli) near 0: relative error ~float32 eps, not
  eps / (1 - p)."""
  f = np.array([[14.0, 2.0, -1.0, 0.5], [0.1, 0.2, 0.3, 0.2], [3.0, 3.0, -20.0, 1.0]], np.float32)
  cat = lk.Categorical()
  for row in f:
    z = row.astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    for label in range(4):
      want = np.eye(4)[label] - p
      got = np.asarray(cat.score(jnp.asarray(row), label), np.float64)
      assert np.all(np.abs(got - want) <= 1e-6 * np.abs(want)), (row, label)
    u, w = cat.fisher_factor(jnp.asarray(row))
    np.testing.assert_allclose(np.diag(np.asarray(u, np.float64)), 1 - p, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(w, np.float64), p, rtol=1e-6)
    hess = np.diag(p) - np.outer(p, p)
    np.testing.assert_allclose(np.diag(np.asarray(cat.hessian(jnp.asarray(row)))), np.diag(hess),
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(cat.hessian(jnp.asarray(row))), hess, rtol=1e-5,
                               atol=1e-12)
  bern = lk.Bernoulli()
  fb = np.array([-30.0, -5.0, 0.0, 5.0, 17.0], np.float32)
  s = 1 / (1 + np.exp(-fb.astype(np.float64)))
  for label in (0.0, 1.0, 0.3):
    want = label - s
    got = np.asarray(bern.score(jnp.asarray(fb), jnp.full(5, label)), np.float64)
    assert np.all(np.abs(got - want) <= 1e-6 * np.abs(want)), label
  np.testing.assert_allclose(np.asarray(bern.fisher_factor(jnp.asarray(fb))[1], np.float64),
                             s * (1 - s), rtol=1e-6)
