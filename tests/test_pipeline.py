"""Tests for snnjax.data.pipeline."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax.data import pipeline
from snnjax.errors import UserError


def _images(n=6, h=7, w=5, c=2):
  return jnp.asarray(np.random.default_rng(0).normal(size=(n, h, w, c)).astype(np.float32))


def _find_shift(out, image, pad):
  """(dy, dx, flipped) with out == crop of the zero-padded image (maybe mirrored), or None."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  shifts = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
  crops = np.stack([padded[dy:dy + h, dx:dx + w] for dy, dx in shifts])
  for flipped, candidates in ((False, crops), (True, crops[:, :, ::-1])):
    hits = np.flatnonzero(np.all(candidates == out, axis=(1, 2, 3)))
    if hits.size:
      return (*shifts[hits[0]], flipped)
  return None


class AugmentTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_each_output_is_a_shifted_maybe_flipped_crop(self):
    x = _images()
    out = self.variant(pipeline.augment_batch)(jax.random.key(0), x)
    chex.assert_shape(out, x.shape)
    chex.assert_type(out, jnp.float32)
    found = [_find_shift(np.asarray(o), np.asarray(i), 4) for o, i in zip(out, x)]
    assert all(f is not None for f in found)

  @chex.variants(with_jit=True, without_jit=True)
  def test_deterministic_by_key(self):
    x = _images()
    fn = self.variant(pipeline.augment_batch)
    chex.assert_trees_all_close(fn(jax.random.key(1), x), fn(jax.random.key(1), x))
    assert not np.array_equal(fn(jax.random.key(1), x), fn(jax.random.key(2), x))

  def test_offsets_and_flips_vary_per_example(self):
    x = jnp.tile(_images(1, 8, 8, 1), (64, 1, 1, 1))
    out = pipeline.augment_batch(jax.random.key(0), x)
    found = {_find_shift(np.asarray(o), np.asarray(x[0]), 4) for o in out}
    assert len(found) > 20
    assert {f[2] for f in found} == {False, True}

  def test_no_pad_only_flips(self):
    x = _images()
    out = np.asarray(pipeline.augment_batch(jax.random.key(3), x, pad=0))
    for o, i in zip(out, np.asarray(x)):
      assert np.array_equal(o, i) or np.array_equal(o, i[:, ::-1])
    chex.assert_trees_all_close(pipeline.augment_batch(jax.random.key(3), x, pad=0, flip=False), x)

  def test_rejects_non_images(self):
    with pytest.raises(UserError):
      pipeline.augment_batch(jax.random.key(0), jnp.zeros((4, 40)))


def test_epoch_permutation():
  p = pipeline.epoch_permutation(0, 1, 100)
  assert p.dtype == np.int32 and sorted(p.tolist()) == list(range(100))
  np.testing.assert_array_equal(p, pipeline.epoch_permutation(0, 1, 100))
  assert not np.array_equal(p, pipeline.epoch_permutation(0, 2, 100))
  assert not np.array_equal(p, pipeline.epoch_permutation(1, 1, 100))


def test_batch_indices():
  perm = pipeline.epoch_permutation(0, 0, 10)
  batches = pipeline.batch_indices(perm, 4)
  assert [b.shape for b in batches] == [(4,), (4,)]
  np.testing.assert_array_equal(np.concatenate(batches), perm[:8])
  tail = pipeline.batch_indices(perm, 4, drop_last=False)
  assert [b.shape[0] for b in tail] == [4, 4, 2]
  with pytest.raises(UserError):
    pipeline.batch_indices(perm, 11)
  with pytest.raises(UserError):
    pipeline.batch_indices(perm, 0)


def test_iterate_batches_covers_each_example_once():
  x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
  y = np.arange(10) % 3
  batches = list(pipeline.iterate_batches(x, y, 4, extra={"y_true": y + 1}))
  assert [b["x"].shape[0] for b in batches] == [4, 4, 2]
  index = np.concatenate([b["index"] for b in batches])
  np.testing.assert_array_equal(index, np.arange(10))
  for b in batches:
    np.testing.assert_array_equal(b["x"], x[b["index"]])
    np.testing.assert_array_equal(b["y_true"], y[b["index"]] + 1)
    assert b["y"].dtype == np.int32 and b["index"].dtype == np.int32


def test_iterate_batches_padded_weights():
  x = np.arange(10, dtype=np.float32)[:, None]
  batches = list(pipeline.iterate_batches(x, np.zeros(10), 4, indices=[9, 3, 5, 1, 0], pad=True))
  assert [b["x"].shape[0] for b in batches] == [4, 4]
  weights = np.concatenate([b["weight"] for b in batches])
  np.testing.assert_array_equal(weights, [1, 1, 1, 1, 1, 0, 0, 0])
  index = np.concatenate([b["index"] for b in batches])[weights > 0]
  np.testing.assert_array_equal(index, [9, 3, 5, 1, 0])


def test_epoch_batches_fixed_size():
  x = np.zeros((10, 2), np.float32)
  batches = list(pipeline.epoch_batches(x, np.zeros(10), 3, seed=0, epoch=0))
  assert len(batches) == 3 and all(b["x"].shape == (3, 2) for b in batches)
  assert len(set(np.concatenate([b["index"] for b in batches]).tolist())) == 9
