"""``load_dataset(cfg)``: a :class:`~snnjax.data.dataset.Dataset` from a ``config.dataset``.

Steps, in order (each seeded from ``cfg.seed`` with its own stream, so changing one does not
change the others):

1. raw splits from the source (see :mod:`snnjax.data.sources`); ``downsample=k > 1`` replaces
   every image by its exact k x k average pooling in raw units (float32; ``k=2`` makes CIFAR's
   32x32 images 16x16, a quarter of a convolutional network's FLOPs), see :func:`average_pool`;
2. normalization statistics from the source's **full** train split (before any subset), per
   channel, in raw units; ``norm_stats="standard"`` uses the published CIFAR values instead
   (:data:`snnjax.data.sources.STANDARD_STATS`: CIFAR-10 and CIFAR-100 differ);
3. ``train_size > 0``: a class-balanced subset of that many train examples;
4. ``imbalance_ratio > 1``: an exponential long-tailed subset of what is left;
5. ``label_noise > 0``: labels corrupted (:func:`snnjax.data.noise.corrupt_labels`);
6. ``x = (raw - mean) / std`` as float32, for train and test alike.

The test split is never subset, corrupted or reordered.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import numpy as np

from snnjax.data import noise as noise_lib
from snnjax.data import sources
from snnjax.data import subsets
from snnjax.data.dataset import Dataset
from snnjax.errors import UserError

DATASET_NAMES = ("mnist1d", "digits", "cifar10", "cifar100")
SOURCES = ("auto", "npz", "tfds")
NORM_STATS = ("train", "standard")

# Seed streams: default_rng((seed, stream)).
_SUBSET_STREAM, _IMBALANCE_STREAM, _NOISE_STREAM = 1, 2, 3

_DEFAULTS = {
    "name": "mnist1d",
    "source": "auto",
    "npz_path": "",
    "data_dir": "",
    "train_size": 0,
    "label_noise": 0.0,
    "noise_kind": "flip",
    "seed": 0,
    "imbalance_ratio": 1.0,
    "normalize": True,
    "norm_stats": "train",
    "downsample": 1,
}


def default_dataset_config(**overrides) -> "ml_collections.ConfigDict":
  """A ``config.dataset`` with every field :func:`load_dataset` reads.

  Fields: ``name``, ``source`` ("auto" | "npz" | "tfds"), ``npz_path`` (str, "" = none),
  ``data_dir`` (tfds data dir, "" = tfds default), ``train_size`` (0 = all), ``label_noise``
  (rate in [0, 1)), ``noise_kind`` ("flip" | "uniform"), ``seed``, ``imbalance_ratio`` (1.0 =
  balanced), ``normalize`` (bool), ``norm_stats`` ("train" | "standard").
  """
  import ml_collections  # pylint: disable=g-import-not-at-top  # Only this helper needs it.
  unknown = sorted(set(overrides) - set(_DEFAULTS))
  if unknown:
    raise UserError(f"unknown dataset config fields {unknown}; known: {sorted(_DEFAULTS)}")
  return ml_collections.ConfigDict({**_DEFAULTS, **overrides})


def load_dataset(cfg: Mapping[str, Any]) -> Dataset:
  """Loads, subsets, corrupts and normalizes a dataset as ``cfg`` says (see the module doc).

  Args:
    cfg: a ConfigDict or mapping with the fields of :func:`default_dataset_config`; missing
      fields take their defaults, fields this function does not know are ignored.

  Returns:
    A :class:`Dataset` of host numpy arrays.

  Raises:
    UserError: an out-of-range field, or data that is not available offline (the message says
      how to get it; there is no fallback to another dataset and no download).
  """
  c = _read_config(cfg)
  name = c["name"]
  raw = _load_raw(name, c["source"], c["npz_path"], c["data_dir"])
  if c["downsample"] > 1:
    if not raw.is_image:
      raise UserError(f"dataset.downsample={c['downsample']} pools images; {name} examples are "
                      "vectors")
    raw = dataclasses.replace(raw, x_train=average_pool(raw.x_train, c["downsample"]),
                              x_test=average_pool(raw.x_test, c["downsample"]))
  mean, std = _normalization(name, raw, c["normalize"], c["norm_stats"])

  seed = c["seed"]
  y_true = raw.y_train
  keep = np.arange(y_true.shape[0], dtype=np.int64)
  if c["train_size"] > 0:
    keep = keep[subsets.balanced_subset(y_true, raw.num_classes, c["train_size"],
                                        (seed, _SUBSET_STREAM))]
  if c["imbalance_ratio"] > 1.0:
    keep = keep[subsets.long_tailed_subset(y_true[keep], raw.num_classes, c["imbalance_ratio"],
                                           (seed, _IMBALANCE_STREAM))]
  y_true = y_true[keep]
  if c["label_noise"] > 0.0:
    y_train, noisy = noise_lib.corrupt_labels(y_true, raw.num_classes, c["label_noise"],
                                              c["noise_kind"], (seed, _NOISE_STREAM))
  else:
    y_train, noisy = y_true.copy(), np.zeros(y_true.shape, bool)

  return Dataset(
      name=name,
      x_train=normalize(raw.x_train[keep], mean, std, per_channel=raw.is_image),
      y_train=y_train.astype(np.int32),
      y_train_true=y_true.astype(np.int32),
      noisy=noisy,
      x_test=normalize(raw.x_test, mean, std, per_channel=raw.is_image),
      y_test=raw.y_test.astype(np.int32),
      num_classes=raw.num_classes,
      mean=mean,
      std=std,
      is_image=raw.is_image,
      noise_rate=float(c["label_noise"]),
      noise_kind=c["noise_kind"],
      train_source_index=keep,
      class_names=sources.CLASS_NAMES[name],
  )


def average_pool(x: np.ndarray, k: int) -> np.ndarray:
  """(N, H, W, C) images -> (N, H/k, W/k, C) float32 means of non-overlapping k x k windows.

  Exact for 8-bit pixels (a sum of at most 64 values below 256, divided by a power of two or
  another k^2: the float32 mean of the integers). ``H`` and ``W`` must be multiples of ``k``.
  """
  n, h, w, c = x.shape
  if h % k or w % k:
    raise UserError(f"dataset.downsample={k} does not divide the {h}x{w} images")
  blocks = np.asarray(x, np.float64).reshape(n, h // k, k, w // k, k, c)
  return (blocks.sum(axis=(2, 4)) / (k * k)).astype(np.float32)


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray, *, per_channel: bool = True
              ) -> np.ndarray:
  """``(x - mean) / std`` as float32; ``mean``/``std`` are (C,) over the last axis of images,
  or (1,) scalars over every element of non-image inputs."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  if not per_channel:
    mean, std = mean.reshape(()), std.reshape(())
  out = np.array(x, dtype=np.float32)
  out -= mean
  out /= std
  return out


def channel_stats(x: np.ndarray, *, per_channel: bool = True, chunk: int = 1 << 18
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Mean and (population) std over all examples and positions, per channel (last axis) of
  (N, ..., C) images or over every element of non-image inputs: (C,) or (1,) float32."""
  x = np.asarray(x)
  flat = x.reshape(-1, x.shape[-1]) if per_channel else x.reshape(-1, 1)
  total = np.zeros(flat.shape[1])
  total_sq = np.zeros(flat.shape[1])
  for start in range(0, flat.shape[0], chunk):  # float64 sums, `chunk` rows at a time.
    block = flat[start:start + chunk].astype(np.float64)
    total += block.sum(0)
    total_sq += np.square(block).sum(0)
  mean = total / flat.shape[0]
  var = np.maximum(total_sq / flat.shape[0] - np.square(mean), 0.0)
  return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def _read_config(cfg) -> dict:
  get = cfg.get if hasattr(cfg, "get") else (lambda k, d: getattr(cfg, k, d))
  c = {k: get(k, d) for k, d in _DEFAULTS.items()}
  for key in ("npz_path", "data_dir"):
    c[key] = "" if c[key] is None else str(c[key])
  if c["name"] not in DATASET_NAMES:
    raise UserError(f"dataset.name must be one of {DATASET_NAMES}, got {c['name']!r}")
  if c["source"] not in SOURCES:
    raise UserError(f"dataset.source must be one of {SOURCES}, got {c['source']!r}")
  if c["noise_kind"] not in noise_lib.NOISE_KINDS:
    raise UserError(f"dataset.noise_kind must be one of {noise_lib.NOISE_KINDS}, "
                    f"got {c['noise_kind']!r}")
  if c["norm_stats"] not in NORM_STATS:
    raise UserError(f"dataset.norm_stats must be one of {NORM_STATS}, got {c['norm_stats']!r}")
  if c["norm_stats"] == "standard" and c["name"] not in sources.STANDARD_STATS:
    raise UserError(f"dataset.norm_stats='standard' exists only for "
                    f"{tuple(sources.STANDARD_STATS)}; use 'train' for {c['name']}")
  try:
    c["label_noise"] = float(c["label_noise"])
    c["imbalance_ratio"] = float(c["imbalance_ratio"])
    c["train_size"] = _as_int(c["train_size"], "train_size")
    c["seed"] = _as_int(c["seed"], "seed")
    c["downsample"] = _as_int(c["downsample"], "downsample")
  except (TypeError, ValueError) as e:
    raise UserError(f"dataset config: {e}") from e
  if not 0.0 <= c["label_noise"] < 1.0:
    raise UserError(f"dataset.label_noise must be in [0, 1), got {c['label_noise']}")
  if not c["imbalance_ratio"] >= 1.0:
    raise UserError(f"dataset.imbalance_ratio must be >= 1, got {c['imbalance_ratio']}")
  if c["train_size"] < 0:
    raise UserError(f"dataset.train_size must be >= 0 (0 = all), got {c['train_size']}")
  if not 1 <= c["downsample"] <= 8:
    raise UserError(f"dataset.downsample must be in [1, 8], got {c['downsample']}")
  if c["seed"] < 0:
    raise UserError(f"dataset.seed must be >= 0, got {c['seed']}")
  c["normalize"] = bool(c["normalize"])
  return c


def _as_int(value, field: str) -> int:
  if isinstance(value, bool) or int(value) != value:
    raise ValueError(f"dataset.{field} must be an integer, got {value!r}")
  return int(value)


def _load_raw(name: str, source: str, npz_path: str, data_dir: str) -> sources.RawSplits:
  if name in sources.EMBEDDED:
    if source != "auto":
      raise UserError(f"{name} is embedded (generated offline); dataset.source must be 'auto', "
                      f"got {source!r}")
    return sources.load_mnist1d() if name == "mnist1d" else sources.load_digits()
  data_dir = data_dir or None
  if source == "npz":
    return sources.load_npz(name, npz_path)
  if source == "tfds":
    return sources.load_tfds(name, data_dir)
  if npz_path and os.path.isfile(os.path.expanduser(npz_path)):
    return sources.load_npz(name, npz_path)
  if sources.tfds_importable():
    return sources.load_tfds(name, data_dir)
  missing = f"no file at dataset.npz_path={npz_path!r}" if npz_path else "dataset.npz_path unset"
  raise UserError(f"{name} is not available offline ({missing}, tensorflow_datasets not "
                  f"installed); {sources.how_to_get(name, npz_path)}")


def _normalization(name: str, raw: sources.RawSplits, enabled: bool, which: str
                   ) -> tuple[np.ndarray, np.ndarray]:
  channels = raw.x_train.shape[-1] if raw.is_image else 1
  if not enabled:
    return np.zeros(channels, np.float32), np.ones(channels, np.float32)
  if which == "standard":
    mean, std = sources.STANDARD_STATS[name]
    if len(mean) != channels:
      raise UserError(f"standard {name} statistics have {len(mean)} channels, the data "
                      f"{channels}")
    return np.asarray(mean, np.float32), np.asarray(std, np.float32)
  mean, std = channel_stats(raw.x_train, per_channel=raw.is_image)
  if np.any(std == 0):
    raise UserError(f"{name}: a channel of the train split is constant; cannot normalize it")
  return mean, std
