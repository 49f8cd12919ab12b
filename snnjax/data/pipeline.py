"""Batches and augmentation.

Every batch is a dict ``{"x": (n, ...) float32, "y": (n,) int32, "index": (n,) int32}`` where
``index`` holds the examples' positions in the dataset arrays (train batches may add more
per-example arrays, e.g. ``"y_true"``).

* Training: :func:`epoch_permutation` gives a deterministic order per ``(seed, epoch)`` and
  :func:`batch_indices` cuts it into fixed-size index batches (the last partial batch dropped
  by default, so every step has the same shape and compiles once).
* Evaluation: :func:`iterate_batches` walks the data in order; every example is seen exactly
  once. The last batch is **smaller** by default; with ``pad=True`` it is padded to full size
  by repeating the last example and every batch carries ``"weight"`` (n,) float32, 1 for real
  examples and 0 for padding, so weighted sums count each example once.
* :func:`augment_batch`: the standard CIFAR augmentation inside jit.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import UserError


def augment_batch(key: jax.Array, x: jax.Array, *, pad: int = 4, flip: bool = True
                  ) -> jax.Array:
  """Pad-``pad`` random crop and random horizontal flip, drawn independently per example.

  Each (H, W, C) image is zero-padded by ``pad`` pixels on every side, cropped back to (H, W)
  at a uniformly random offset in ``[0, 2 * pad]`` per axis, and mirrored left-right with
  probability 1/2. The inputs are already normalized, so padding with 0 pads with the
  *channel mean* of the raw data (the usual torchvision pipeline pads raw pixels with black
  before normalizing; the difference only touches the border pixels). Jit-able; works for any
  H, W, C.

  Args:
    key: a PRNG key; the same key gives the same augmentation.
    x: (n, H, W, C) images.
    pad: padding per side (0 = no crop).
    flip: whether to apply random horizontal flips.

  Returns:
    (n, H, W, C) augmented images, same dtype as ``x``.
  """
  if x.ndim != 4:
    raise UserError(f"augment_batch needs (n, H, W, C) images, got shape {x.shape}")
  n, h, w, c = x.shape
  crop_key, flip_key = jax.random.split(key)
  out = x
  if pad > 0:
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * pad + 1)

    def crop(image, offset):
      return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    out = jax.vmap(crop)(padded, offsets)
  if flip:
    mirror = jax.random.bernoulli(flip_key, 0.5, (n,))
    out = jnp.where(mirror[:, None, None, None], out[:, :, ::-1, :], out)
  return out


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """(n,) int32 permutation of ``range(n)``, a function of ``(seed, epoch)`` only."""
  return np.random.default_rng((seed, epoch)).permutation(n).astype(np.int32)


def batch_indices(perm, batch_size: int, drop_last: bool = True) -> list[np.ndarray]:
  """Cuts ``perm`` into consecutive (batch_size,) int32 index arrays.

  With ``drop_last`` (default) the ``len(perm) % batch_size`` trailing indices are left out,
  so every batch has the same size; otherwise the last batch holds them and is smaller.
  """
  perm = np.asarray(perm, dtype=np.int32)
  if batch_size < 1:
    raise UserError(f"batch_size must be >= 1, got {batch_size}")
  if drop_last and perm.shape[0] < batch_size:
    raise UserError(f"batch_size {batch_size} exceeds the {perm.shape[0]} examples to batch")
  stop = perm.shape[0] - perm.shape[0] % batch_size if drop_last else perm.shape[0]
  return [perm[i:i + batch_size] for i in range(0, stop, batch_size)]


def iterate_batches(x, y, batch_size: int, *, indices=None,
                    extra: Optional[Mapping[str, np.ndarray]] = None,
                    pad: bool = False) -> Iterator[dict]:
  """Yields ``{"x", "y", "index", **extra}`` batches in order, each example exactly once.

  Args:
    x: (N, ...) inputs (host numpy).
    y: (N,) labels.
    batch_size: examples per batch.
    indices: positions to visit (default ``range(N)``), in the given order.
    extra: more (N, ...) per-example arrays, sliced like ``y`` under their own names.
    pad: if False (default) the last batch is smaller; if True it is filled up to
      ``batch_size`` with copies of its last example and every batch has ``"weight"``
      (batch_size,) float32: 1.0 for real examples, 0.0 for the copies.

  Yields:
    dicts with ``"x"`` (n, ...), ``"y"`` (n,) int32, ``"index"`` (n,) int32 positions into
    ``x``, the ``extra`` arrays, and with ``pad`` ``"weight"``.
  """
  x, y = np.asarray(x), np.asarray(y)
  if y.shape[:1] != x.shape[:1]:
    raise UserError(f"x and y differ in length: {x.shape[0]} vs {y.shape[0]}")
  if batch_size < 1:
    raise UserError(f"batch_size must be >= 1, got {batch_size}")
  extra = dict(extra or {})
  for name, a in extra.items():
    if np.shape(a)[:1] != x.shape[:1]:
      raise UserError(f"extra array {name!r} has length {np.shape(a)[0]}, x has {x.shape[0]}")
  order = (np.arange(x.shape[0], dtype=np.int32) if indices is None
           else np.asarray(indices, dtype=np.int32))
  for start in range(0, order.shape[0], batch_size):
    idx = order[start:start + batch_size]
    real = idx.shape[0]
    if pad and real < batch_size:
      idx = np.concatenate([idx, np.full(batch_size - real, idx[-1], np.int32)])
    batch = {"x": x[idx], "y": y[idx].astype(np.int32), "index": idx}
    for name, a in extra.items():
      batch[name] = np.asarray(a)[idx]
    if pad:
      weight = np.zeros(idx.shape[0], np.float32)
      weight[:real] = 1.0
      batch["weight"] = weight
    yield batch


def epoch_batches(x, y, batch_size: int, *, seed: int, epoch: int,
                  extra: Optional[Mapping[str, np.ndarray]] = None) -> Iterator[dict]:
  """Shuffled fixed-size training batches of one epoch (the last partial batch dropped)."""
  for idx in batch_indices(epoch_permutation(seed, epoch, np.shape(x)[0]), batch_size):
    yield from iterate_batches(x, y, batch_size, indices=idx, extra=extra)
