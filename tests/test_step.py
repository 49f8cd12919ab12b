"""The pure train step: masked update, BatchNorm statistics, and the Fisher penalty."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from snnjax import models
from snnjax.train import TrainState, make_optimizer, train_step
from snnjax.train.step import cross_entropy, fisher_penalty, forward
from tests._train_configs import tiny


def _setup(seed=0):
  model = models.create_model("cnn", 10)
  params, stats = jax.device_get(models.init_variables(model, jax.random.key(seed), (8, 8, 1)))
  rng = np.random.default_rng(seed)
  mask = jax.tree.map(lambda p: rng.random(p.shape) < 0.4, params)
  params = jax.tree.map(lambda p, m: p * m, params, mask)
  batch = {"x": jnp.asarray(rng.normal(size=(16, 8, 8, 1)), jnp.float32),
           "y": jnp.asarray(rng.integers(0, 10, 16), jnp.int32)}
  return model, params, stats, mask, batch


def test_fisher_penalty_equals_the_explicit_gradient_norm():
  model, params, stats, mask, batch = _setup()
  key = jax.random.key(3)
  value = fisher_penalty(model.apply, params, stats, mask, batch["x"], key)
  logits, _ = forward(model.apply, params, stats, batch["x"], train=True)
  sampled = jax.random.categorical(key, logits)
  grads = jax.grad(lambda p: jnp.mean(cross_entropy(
      forward(model.apply, p, stats, batch["x"], train=True)[0], sampled)))(params)
  expected = sum(float(np.sum((np.asarray(g) * m) ** 2))
                 for g, m in zip(jax.tree.leaves(grads), jax.tree.leaves(mask)))
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)


class TrainStepTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_penalized_steps_keep_masked_weights_zero_and_differ_from_plain(self):
    model, params, stats, mask, batch = _setup(1)
    tx, _ = make_optimizer(tiny().optim, 10)
    plain = penalized = TrainState.create(params, stats, mask, tx)

    plain_step = self.variant(lambda s: train_step(s, batch, apply_fn=model.apply, tx=tx))
    penalized_step = self.variant(lambda s, w: train_step(
        s, batch, apply_fn=model.apply, tx=tx, fisher_weight=w, fisher_examples=8,
        key=jax.random.key(0)))
    for _ in range(3):
      plain, m_plain = plain_step(plain)
      penalized, m_pen = penalized_step(penalized, jnp.float32(0.5))
    assert "fisher_penalty" in m_pen and float(m_pen["fisher_penalty"]) > 0
    assert "fisher_penalty" not in m_plain
    for p, m in zip(jax.tree.leaves(penalized.params), jax.tree.leaves(mask)):
      assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
    diffs = [np.max(np.abs(np.asarray(a) - np.asarray(b)))
             for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(penalized.params))]
    assert max(diffs) > 1e-6
    # Train mode updated the BatchNorm running statistics.
    assert any(np.max(np.abs(np.asarray(a) - np.asarray(b))) > 0
               for a, b in zip(jax.tree.leaves(plain.batch_stats), jax.tree.leaves(stats)))


def test_fisher_regularized_run_records_the_penalty_until_it_stops(tmp_path):
  from snnjax.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  config = tiny(model="cnn", dataset="digits", epochs=3)
  config.fisher_reg.weight = 0.1
  config.fisher_reg.until_epoch = 2
  config.fisher_reg.num_examples = 16
  train_and_evaluate(config, str(tmp_path / "reg"))
  records = [json.loads(l) for l in open(tmp_path / "reg" / "metrics.jsonl")]
  assert [("fisher_penalty" in r) for r in records] == [True, True, False]
  assert all(r["fisher_penalty"] > 0 for r in records[:2])
