"""Tests for snnjax.data.sources (offline loaders; nothing here needs tfds)."""

import random
import sys
import types

import numpy as np
import pytest

from snnjax.data import sources
from snnjax.errors import UserError


def test_mnist1d_offline_and_global_rng_untouched():
  np.random.seed(123)
  random.seed(123)
  expected_np, expected_py = np.random.rand(), random.random()
  np.random.seed(123)
  random.seed(123)
  raw = sources.load_mnist1d()
  assert np.random.rand() == expected_np and random.random() == expected_py
  assert raw.x_train.shape == (4000, 40) and raw.x_test.shape == (1000, 40)
  assert raw.x_train.dtype == np.float32 and raw.y_train.dtype == np.int32
  assert not raw.is_image and raw.num_classes == 10
  np.testing.assert_array_equal(np.bincount(raw.y_train, minlength=10) > 300, True)


def test_digits_fixed_split():
  a, b = sources.load_digits(), sources.load_digits()
  assert a.x_train.shape == (1437, 8, 8, 1) and a.x_test.shape == (360, 8, 8, 1)
  assert a.x_train.min() == 0 and a.x_train.max() == 16
  np.testing.assert_array_equal(a.y_test, b.y_test)
  assert a.is_image


def _write_npz(path, n=40, m=20, classes=10, shape=(6, 5, 3), **overrides):
  rng = np.random.default_rng(0)
  arrays = dict(x_train=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                y_train=np.arange(n) % classes,
                x_test=rng.integers(0, 256, (m, *shape), dtype=np.uint8),
                y_test=np.arange(m) % classes)
  arrays.update(overrides)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  np.savez(path, **arrays)
  return arrays


def test_npz_roundtrip(tmp_path):
  arrays = _write_npz(tmp_path / "d.npz")
  raw = sources.load_npz("cifar10", str(tmp_path / "d.npz"))
  np.testing.assert_array_equal(raw.x_train, arrays["x_train"])
  assert raw.y_train.dtype == np.int32 and raw.is_image and raw.num_classes == 10


def test_npz_missing_file_says_how_to_get_it(tmp_path):
  with pytest.raises(UserError, match="not found.*npz_path.*tfds build cifar10"):
    sources.load_npz("cifar10", str(tmp_path / "nope.npz"))


@pytest.mark.parametrize("overrides,match", [
    (dict(y_test=None), "lacks"),
    (dict(y_train=np.full(40, 10)), "must lie in"),
    (dict(x_train=np.zeros((40, 6), np.uint8)), r"\(N, H, W, C\)"),
    (dict(x_test=np.zeros((20, 6, 6, 3), np.uint8)), "differ in shape"),
])
def test_npz_bad_content(tmp_path, overrides, match):
  _write_npz(tmp_path / "d.npz", **overrides)
  with pytest.raises(UserError, match=match):
    sources.load_npz("cifar10", str(tmp_path / "d.npz"))


def test_npz_not_an_npz(tmp_path):
  (tmp_path / "d.npz").write_text("hello")
  with pytest.raises(UserError, match="cannot read"):
    sources.load_npz("cifar10", str(tmp_path / "d.npz"))


def test_class_names():
  assert len(sources.CIFAR100_CLASSES) == 100 == len(set(sources.CIFAR100_CLASSES))
  assert sources.CIFAR10_CLASSES[6] == "frog"
  for name in ("baby", "boy", "girl", "man", "woman"):
    assert name in sources.CIFAR100_CLASSES


def _fake_tfds(monkeypatch, data_source):
  module = types.ModuleType("tensorflow_datasets")
  module.data_source = data_source
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)


def test_tfds_data_source_path_without_tensorflow(monkeypatch):
  calls = []

  def data_source(name, data_dir=None, download=True):
    calls.append((name, data_dir, download))
    rng = np.random.default_rng(0)
    def split(n):
      return [{"image": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "label": i % 100,
               "id": str(i)} for i in range(n)]
    return {"train": split(6), "test": split(3)}

  _fake_tfds(monkeypatch, data_source)
  raw = sources.load_tfds("cifar100", "/data/tfds")
  assert calls == [("cifar100", "/data/tfds", False)]
  assert raw.x_train.shape == (6, 4, 4, 3) and raw.y_test.tolist() == [0, 1, 2]
  assert raw.num_classes == 100


def test_tfds_not_prepared_is_a_user_error(monkeypatch):
  def data_source(name, data_dir=None, download=True):
    raise AssertionError(f"Dataset {name}: could not find data in {data_dir}")

  _fake_tfds(monkeypatch, data_source)
  monkeypatch.setattr(sources.importlib.util, "find_spec",
                      lambda name: None if name == "tensorflow" else object())
  with pytest.raises(UserError, match="no prepared cifar10.*could not find data.*tfds build"):
    sources.load_tfds("cifar10", "/nowhere")


def test_tfds_missing_package(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(UserError, match="not installed"):
    sources.load_tfds("cifar10", None)
