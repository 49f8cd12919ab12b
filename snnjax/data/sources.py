"""Raw train/test splits from their sources, in raw input units (before normalization).

* ``mnist1d``: generated offline by the ``mnist1d`` package (4000 train / 1000 test, (40,) float).
* ``digits``: scikit-learn's bundled 8x8 digits (1797 images, values 0..16) with a fixed split.
* ``npz``: a file with ``x_train, y_train, x_test, y_test`` (uint8 HWC images), e.g.
  ``../shared/data/cifar10.npz``.
* ``tfds``: a TensorFlow Datasets copy prepared beforehand in ``data_dir`` (never downloaded).

Nothing here falls back from one dataset to another, and nothing downloads.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import random
import sys
import zipfile
import zlib
from typing import Optional

import numpy as np

from snnjax.errors import UserError

EMBEDDED = ("mnist1d", "digits")
FILE_BACKED = ("cifar10", "cifar100")
NUM_CLASSES = {"mnist1d": 10, "digits": 10, "cifar10": 10, "cifar100": 100}

# Published per-channel statistics of the full 50,000-image train splits, in raw 0..255 units.
# CIFAR-10: (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616) x 255; recomputed on the
# 50,000 train images (see ../shared/data/README-cifar10.md). CIFAR-100 differs: (0.5071,
# 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762) x 255.
STANDARD_STATS = {
    "cifar10": ((125.307, 122.950, 113.865), (62.993, 62.089, 66.705)),
    "cifar100": ((129.304, 124.070, 112.434), (68.170, 65.392, 70.418)),
}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm")
CLASS_NAMES = {
    "mnist1d": tuple(str(d) for d in range(10)),
    "digits": tuple(str(d) for d in range(10)),
    "cifar10": CIFAR10_CLASSES,
    "cifar100": CIFAR100_CLASSES,
}

DIGITS_NUM_TEST = 360  # of 1797: 1437 train / 360 test, a fixed default_rng(0) permutation.


@dataclasses.dataclass(frozen=True, eq=False)
class RawSplits:
  """Unnormalized splits: ``x_*`` in raw units (uint8 images or float), ``y_*`` int32 labels."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  is_image: bool


def how_to_get(name: str, npz_path: str = "") -> str:
  """One line saying how to make ``name`` available offline."""
  where = f" (now {npz_path!r})" if npz_path else ""
  return (f"put an npz with x_train, y_train, x_test, y_test (uint8 HWC images) at "
          f"dataset.npz_path{where}, e.g. ../shared/data/cifar10.npz for cifar10; or pip install "
          f"'snnjax[tfds]', prepare it once with TensorFlow (tfds build {name} --data_dir DIR, "
          f"which needs the network or a manual_dir) and set dataset.data_dir=DIR")


# ---------------------------------------------------------------------------- embedded datasets


@functools.lru_cache(maxsize=1)
def _mnist1d_cached() -> tuple[np.ndarray, ...]:
  if "matplotlib.pyplot" not in sys.modules:
    # mnist1d imports pyplot at import time; pick the non-interactive backend unless the user has
    # already set one up (pyplot imported) or asked for one (MPLBACKEND).
    import matplotlib  # pylint: disable=g-import-not-at-top
    if "MPLBACKEND" not in os.environ:
      matplotlib.use("Agg")
  from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=g-import-not-at-top
  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    data = make_dataset(get_dataset_args())
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)
  arrays = (data["x"], data["y"], data["x_test"], data["y_test"])
  for a in arrays:
    a.setflags(write=False)
  return arrays


def load_mnist1d() -> RawSplits:
  """MNIST-1D (Greydanus 2020), the canonical 4000/1000 split; x (N, 40) float32.

  Generated offline by ``mnist1d.data.make_dataset`` with its default arguments (seed 42); the
  global ``numpy.random`` and ``random`` states are restored afterwards. Cached in-process.
  """
  x, y, x_test, y_test = _mnist1d_cached()
  return RawSplits(x.astype(np.float32), y.astype(np.int32), x_test.astype(np.float32),
                   y_test.astype(np.int32), 10, False)


def load_digits() -> RawSplits:
  """scikit-learn's 8x8 digits as (N, 8, 8, 1) float32 images in 0..16.

  A fixed split (independent of any config seed): ``numpy.random.default_rng(0)`` permutes the
  1797 images; the first 1437 are train and the last 360 test.
  """
  from sklearn.datasets import load_digits as sk_load_digits  # pylint: disable=g-import-not-at-top
  bunch = sk_load_digits()
  images = bunch.images.astype(np.float32)[..., None]
  labels = bunch.target.astype(np.int32)
  perm = np.random.default_rng(0).permutation(images.shape[0])
  train, test = perm[:-DIGITS_NUM_TEST], perm[-DIGITS_NUM_TEST:]
  return RawSplits(images[train], labels[train], images[test], labels[test], 10, True)


# ------------------------------------------------------------------------------- file-backed


def load_npz(name: str, path: str) -> RawSplits:
  """Images from an npz file: ``x_*`` (N, H, W, C) or (N, H, W) uint8, ``y_*`` (N,) integers."""
  path = os.path.expanduser(path)
  if not path or not os.path.isfile(path):
    raise UserError(f"dataset file not found: {path!r}; {how_to_get(name, path)}")
  if not zipfile.is_zipfile(path):
    raise UserError(f"cannot read {path} as an npz file: it is not a zip archive (a truncated "
                    "download, or another format?)")
  try:
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
      if missing:
        raise UserError(f"{path} lacks the keys {missing}; it needs x_train, y_train, x_test, "
                        f"y_test")
      arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
  except UserError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise UserError(f"cannot read {path} as an npz file ({type(e).__name__}: "
                    f"{' '.join(str(e).split())[:200]}); is it truncated?") from e
  return _checked_images(name, str(path), **arrays)


def load_tfds(name: str, data_dir: Optional[str]) -> RawSplits:
  """A TensorFlow Datasets copy already prepared in ``data_dir`` (``download=False``).

  Reads it with ``tfds.data_source`` (array_record files, no TensorFlow needed); if that fails
  and TensorFlow is importable, with ``tfds.load(..., batch_size=-1)``.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(f"tensorflow_datasets is not installed; {how_to_get(name)}") from e
  failures = []
  try:
    sources = tfds.data_source(name, data_dir=data_dir, download=False)
    arrays = {}
    for split in ("train", "test"):
      records = [sources[split][i] for i in range(len(sources[split]))]
      arrays["x_" + split] = np.stack([np.asarray(r["image"]) for r in records])
      arrays["y_" + split] = np.asarray([int(r["label"]) for r in records])
    return _checked_images(name, f"tfds:{name}", **arrays)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # tfds raises many kinds here.
    failures.append(f"data_source: {type(e).__name__}: {_first_line(e)}")
  if importlib.util.find_spec("tensorflow") is not None:
    try:
      train, test = tfds.as_numpy(tfds.load(name, split=["train", "test"], data_dir=data_dir,
                                            batch_size=-1, download=False))
      return _checked_images(name, f"tfds:{name}", x_train=train["image"],
                             y_train=train["label"], x_test=test["image"], y_test=test["label"])
    except UserError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      failures.append(f"load: {type(e).__name__}: {_first_line(e)}")
  raise UserError(f"tfds has no prepared {name} in data_dir={data_dir!r} "
                  f"({'; '.join(failures)}); {how_to_get(name)}")


def tfds_importable() -> bool:
  return importlib.util.find_spec("tensorflow_datasets") is not None


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return text[0][:200] if text else ""


def _checked_images(name: str, where: str, *, x_train, y_train, x_test, y_test) -> RawSplits:
  num_classes = NUM_CLASSES[name]
  out = {}
  for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4:
      raise UserError(f"{where}: x_{split} must be (N, H, W, C) images, got shape {x.shape}")
    if x.shape[0] == 0:
      raise UserError(f"{where}: the {split} split is empty")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
      raise UserError(f"{where}: x_{split} must hold numbers, got {x.dtype}")
    if np.issubdtype(x.dtype, np.floating):
      bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
      if bad:
        raise UserError(f"{where}: x_{split} holds {bad} non-finite values (NaN or inf) out of "
                        f"{x.size}; they would make every normalized input NaN")
    if y.shape != (x.shape[0],):
      raise UserError(f"{where}: y_{split} must have shape ({x.shape[0]},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
      raise UserError(f"{where}: y_{split} must hold integer labels, got {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
      raise UserError(f"{where}: y_{split} must lie in [0, {num_classes}) for {name}, got "
                      f"[{y.min()}, {y.max()}]")
    out["x_" + split], out["y_" + split] = x, y.astype(np.int32)
  if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
    raise UserError(f"{where}: train and test images differ in shape: "
                    f"{out['x_train'].shape[1:]} vs {out['x_test'].shape[1:]}")
  return RawSplits(num_classes=num_classes, is_image=True, **out)
