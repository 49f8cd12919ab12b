"""Tests of the study's cache: hashes, run work dirs and cached stage results."""

import json
import os

import ml_collections
import numpy as np

from snnjax.studies import cache as cache_lib


def _config(**kw):
  c = ml_collections.ConfigDict({"seed": 0, "sparsity": 0.9, "progress": True,
                                 "optim": {"lr": 0.1}})
  for k, v in kw.items():
    c[k] = v
  return c


def test_digest_is_stable_and_order_free():
  assert cache_lib.digest({"a": 1, "b": (1, 2)}) == cache_lib.digest({"b": [1, 2], "a": 1})
  assert cache_lib.digest({"a": 1}) != cache_lib.digest({"a": 2})
  assert cache_lib.digest({"x": np.float32(0.5)}) == cache_lib.digest({"x": 0.5})


def test_run_hash_ignores_runtime_fields_only():
  base = cache_lib.run_hash(_config())
  assert cache_lib.run_hash(_config(progress=False)) == base
  assert cache_lib.run_hash(_config(seed=1)) != base
  c = _config()
  c.optim.lr = 0.2
  assert cache_lib.run_hash(c) != base


def test_run_hash_is_location_free():
  def sparse(dense_dir, scores):
    return _config(dense_workdir=dense_dir, curriculum={"scores_path": scores})
  here = cache_lib.run_hash(sparse("/a/runs/dense-1", "/a/results/s-1.npy"), dense_hash="d1")
  assert cache_lib.run_hash(sparse("/b/c/runs/dense-1", "/b/c/results/s-1.npy"),
                            dense_hash="d1") == here
  assert cache_lib.run_hash(sparse("/a/runs/dense-1", "/a/results/s-1.npy"),
                            dense_hash="d2") != here
  assert cache_lib.run_hash(sparse("/a/runs/dense-1", "/a/results/s-2.npy"),
                            dense_hash="d1") != here


def test_cached_computes_once_then_reuses(tmp_path):
  cache = cache_lib.StageCache(str(tmp_path))
  calls = []

  def compute():
    calls.append(1)
    return {"value": np.float64(1.5), "list": (1, 2)}

  first = cache.cached("demo", {"k": 1}, compute)
  again = cache_lib.StageCache(str(tmp_path)).cached("demo", {"k": 1}, compute)
  assert calls == [1]
  assert first == again == {"value": 1.5, "list": [1, 2]}
  cache.cached("demo", {"k": 2}, compute)  # other inputs: computed anew
  assert calls == [1, 1]
  assert len(os.listdir(tmp_path / "results")) == 2


def test_cached_recomputes_a_corrupt_result(tmp_path):
  cache = cache_lib.StageCache(str(tmp_path))
  path = cache.result_path("demo", {"k": 1})
  os.makedirs(os.path.dirname(path))
  with open(path, "w") as f:
    f.write("{not json")
  assert cache.cached("demo", {"k": 1}, lambda: 3) == 3
  with open(path) as f:
    assert json.load(f)["result"] == 3


def test_run_workdir_is_keyed_by_config(tmp_path):
  cache = cache_lib.StageCache(str(tmp_path))
  a = cache.run_workdir("clean-dense-seed0", _config())
  b = cache.run_workdir("clean-dense-seed0", _config(seed=3))
  assert a != b and os.path.basename(a).startswith("clean-dense-seed0-")


def test_to_json_drops_non_finite():
  assert cache_lib.to_json({"a": float("nan"), "b": np.arange(2)}) == {"a": None, "b": [0, 1]}


def test_compilation_cache_is_scoped(tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  before = jax.config.jax_compilation_cache_dir
  with cache_lib.compilation_cache(str(tmp_path / "cache")) as used:
    assert jax.config.jax_compilation_cache_dir == used
    jax.jit(lambda x: x * 3.0 + 1.0)(jax.numpy.ones(7)).block_until_ready()
  assert jax.config.jax_compilation_cache_dir == before
  if before is None:
    assert os.listdir(tmp_path / "cache")  # the compiled program went to the cache
