"""Tests for snnjax.data.datasets.load_dataset."""

from pathlib import Path

import numpy as np
import pytest

from snnjax.data import datasets
from snnjax.data import sources
from snnjax.errors import UserError

CIFAR10_NPZ = Path(__file__).resolve().parents[2] / "shared/data/cifar10.npz"


def _per_channel(x):
  axes = tuple(range(x.ndim - 1))
  return x.mean(axes, dtype=np.float64), x.std(axes, dtype=np.float64)


def test_digits_normalized_per_channel():
  d = datasets.load_dataset(datasets.default_dataset_config(name="digits"))
  assert d.x_train.shape == (1437, 8, 8, 1) and d.x_train.dtype == np.float32
  assert d.y_train.dtype == np.int32 and d.is_image and d.num_classes == 10
  mean, std = _per_channel(d.x_train)
  np.testing.assert_allclose(mean, 0.0, atol=1e-5)
  np.testing.assert_allclose(std, 1.0, atol=1e-5)
  assert d.mean.shape == d.std.shape == (1,) and 4.0 < d.mean[0] < 6.0
  np.testing.assert_array_equal(d.y_train, d.y_train_true)
  assert not d.noisy.any()


def test_mnist1d_scalar_standardization():
  d = datasets.load_dataset({"name": "mnist1d"})
  assert d.input_shape == (40,) and not d.is_image and d.num_test == 1000
  assert abs(d.x_train.astype(np.float64).mean()) < 1e-5
  assert abs(d.x_train.astype(np.float64).std() - 1.0) < 1e-5


def test_subset_noise_and_imbalance_are_seeded():
  cfg = dict(name="mnist1d", train_size=500, label_noise=0.2, noise_kind="flip", seed=3)
  a, b = datasets.load_dataset(cfg), datasets.load_dataset(cfg)
  np.testing.assert_array_equal(a.x_train, b.x_train)
  np.testing.assert_array_equal(a.y_train, b.y_train)
  assert a.num_train == 500 and np.ptp(a.train_class_counts()) <= 1
  assert a.noisy.sum() == 100 and np.all(a.y_train[a.noisy] != a.y_train_true[a.noisy])
  assert a.noise_rate == 0.2 and a.noise_kind == "flip"
  c = datasets.load_dataset({**cfg, "seed": 4})
  assert not np.array_equal(a.train_source_index, c.train_source_index)
  lt = datasets.load_dataset({**cfg, "imbalance_ratio": 10.0, "label_noise": 0.0})
  counts = lt.train_class_counts()
  assert counts[0] == 50 and counts[-1] == 5


def test_mnist1d_rejects_file_sources():
  with pytest.raises(UserError, match="embedded"):
    datasets.load_dataset({"name": "mnist1d", "source": "npz"})


@pytest.mark.parametrize("field,value", [
    ("name", "mnist"), ("source", "web"), ("label_noise", 1.0), ("noise_kind", "pair"),
    ("imbalance_ratio", 0.5), ("train_size", -1), ("train_size", 1.5), ("norm_stats", "x")])
def test_bad_config(field, value):
  with pytest.raises(UserError, match=field):
    datasets.load_dataset({"name": "digits", field: value})


def test_npz_dataset_uses_its_own_train_stats(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (60, 4, 4, 3), dtype=np.uint8)
  x[..., 1] //= 2
  np.savez(tmp_path / "c.npz", x_train=x, y_train=np.arange(60) % 10,
           x_test=x[:10], y_test=np.arange(10))
  d = datasets.load_dataset({"name": "cifar10", "npz_path": str(tmp_path / "c.npz")})
  np.testing.assert_allclose(d.mean, x.reshape(-1, 3).mean(0), rtol=1e-5)
  mean, std = _per_channel(d.x_train)
  np.testing.assert_allclose(mean, 0.0, atol=1e-5)
  np.testing.assert_allclose(std, 1.0, atol=1e-5)
  np.testing.assert_allclose(d.x_test, d.x_train[:10])
  assert d.class_names[0] == "airplane"
  raw = datasets.load_dataset({"name": "cifar10", "npz_path": str(tmp_path / "c.npz"),
                               "normalize": False})
  np.testing.assert_array_equal(raw.x_train, x.astype(np.float32))
  std_cfg = {"name": "cifar10", "npz_path": str(tmp_path / "c.npz"), "norm_stats": "standard"}
  np.testing.assert_allclose(datasets.load_dataset(std_cfg).mean,
                             sources.STANDARD_STATS["cifar10"][0])


def test_missing_data_is_a_user_error_with_how_to(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, "tfds_importable", lambda: False)
  for source in ("auto", "npz"):
    with pytest.raises(UserError, match="npz_path.*tfds build cifar100"):
      datasets.load_dataset({"name": "cifar100", "source": source,
                             "npz_path": str(tmp_path / "missing.npz")})


def test_channel_stats_match_numpy():
  x = np.random.default_rng(0).integers(0, 256, (50, 5, 5, 3), dtype=np.uint8)
  mean, std = datasets.channel_stats(x, chunk=7)
  np.testing.assert_allclose(mean, x.reshape(-1, 3).mean(0), rtol=1e-6)
  np.testing.assert_allclose(std, x.reshape(-1, 3).std(0), rtol=1e-5)


@pytest.mark.skipif(not CIFAR10_NPZ.is_file(),
                    reason=f"real CIFAR-10 subset not present at {CIFAR10_NPZ}")
def test_real_cifar10_npz():
  d = datasets.load_dataset({"name": "cifar10", "npz_path": str(CIFAR10_NPZ),
                             "label_noise": 0.3, "noise_kind": "uniform", "seed": 0})
  assert d.x_train.shape == (20000, 32, 32, 3) and d.x_test.shape == (10000, 32, 32, 3)
  np.testing.assert_array_equal(d.train_class_counts(), [2000] * 10)
  # Train statistics of this 20k subset are close to the published full-train values.
  np.testing.assert_allclose(d.mean, sources.STANDARD_STATS["cifar10"][0], atol=0.5)
  np.testing.assert_allclose(d.std, sources.STANDARD_STATS["cifar10"][1], atol=0.5)
  mean, std = datasets.channel_stats(d.x_train)  # float64 sums; checked against numpy above.
  np.testing.assert_allclose(mean, 0.0, atol=1e-4)
  np.testing.assert_allclose(std, 1.0, atol=1e-4)
  # "uniform" noise: 6000 chosen, about 10% of them keep their label.
  assert 5200 < d.noisy.sum() < 5600
