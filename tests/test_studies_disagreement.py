"""Tests of the disagreement counts against a direct comparison."""

import numpy as np

from snnjax.studies.stages import disagreement


def test_compare_matches_direct_counts():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 200)
  s = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 4, 200))
  f = np.where(rng.random(200) < 0.8, labels, rng.integers(0, 4, 200))
  out = disagreement.compare(s, f, labels, 4)
  differ = s != f
  assert out["num_disagree"] == int(differ.sum())
  assert out["class_counts"] == [int(np.sum(differ & (labels == c))) for c in range(4)]
  assert sum(out["class_counts"]) == out["num_disagree"]
  assert out["class_sizes"] == np.bincount(labels, minlength=4).tolist()
  np.testing.assert_allclose(out["scratch_correct"], np.mean(s[differ] == labels[differ]))
  np.testing.assert_allclose(out["finetune_correct"], np.mean(f[differ] == labels[differ]))
  np.testing.assert_allclose(
      out["scratch_correct"] + out["finetune_correct"] + out["neither_correct"], 1.0)


def test_compare_without_disagreement():
  labels = np.array([0, 1, 2])
  out = disagreement.compare(labels, labels, labels, 3)
  assert out["num_disagree"] == 0 and out["scratch_correct"] is None
  assert out["class_counts"] == [0, 0, 0]


def test_tail_share():
  sizes = [100, 80, 10, 5]
  out = disagreement.tail_share([1, 1, 4, 4], sizes)
  assert sorted(out["tail_classes"]) == [2, 3]
  np.testing.assert_allclose(out["tail_share_of_disagreements"], 0.8)
  np.testing.assert_allclose(out["tail_share_of_examples"], 15 / 195)
  assert out["concentration"] > 1
