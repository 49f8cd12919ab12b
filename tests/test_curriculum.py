"""Data scheduling: pool selection by score, determinism, errors, and a scheduled run."""

import os
import shutil

import numpy as np
import pytest

from snnjax.errors import UserError
from snnjax.train import curriculum, train_and_evaluate
from tests._train_configs import tiny


def test_pool_batches_take_the_lowest_or_highest_scores_of_each_pool():
  scores = np.random.default_rng(0).normal(size=500)
  for order, pick in (("low_first", np.min), ("high_first", np.max)):
    batches = curriculum.pool_batches(scores, order=order, seed=1, epoch=2, num_steps=6,
                                      batch_size=20, pool_factor=3)
    assert len(batches) == 6 and all(b.shape == (20,) and len(set(b)) == 20 for b in batches)
    for i, b in enumerate(batches):
      pool = np.random.default_rng((1, 2, i)).choice(500, 60, replace=False)
      rest = np.setdiff1d(pool, b)
      assert set(b) <= set(pool)
      if order == "low_first":
        assert scores[b].max() <= scores[rest].min()
      else:
        assert scores[b].min() >= scores[rest].max()
  again = curriculum.pool_batches(scores, order="low_first", seed=1, epoch=2, num_steps=6,
                                  batch_size=20, pool_factor=3)
  first = curriculum.pool_batches(scores, order="low_first", seed=1, epoch=2, num_steps=6,
                                  batch_size=20, pool_factor=3)
  assert all(np.array_equal(a, b) for a, b in zip(again, first))


def test_scores_file_errors(tmp_path):
  with pytest.raises(UserError, match="no scores file"):
    curriculum.load_scores(str(tmp_path / "none.npy"), 10)
  np.save(tmp_path / "short.npy", np.zeros(5))
  with pytest.raises(UserError, match="expected \\(10,\\)"):
    curriculum.load_scores(str(tmp_path / "short.npy"), 10)


def test_scheduled_run_trains_and_differs_from_plain(tmp_path):
  plain = train_and_evaluate(tiny(epochs=2), str(tmp_path / "plain"))
  np.save(tmp_path / "scores.npy", np.arange(4000, dtype=np.float32))  # mnist1d: 4000 examples
  config = tiny(epochs=2)
  config.curriculum.kind = "low_first"
  config.curriculum.scores_path = str(tmp_path / "scores.npy")
  config.curriculum.until_epoch = 1
  scheduled = train_and_evaluate(config, str(tmp_path / "scheduled"))
  assert scheduled["train_loss"] != plain["train_loss"]
  # moved (the run and its scores file, the originals gone): the same run, not retrained
  os.makedirs(tmp_path / "moved")
  shutil.move(str(tmp_path / "scores.npy"), str(tmp_path / "moved" / "scores.npy"))
  shutil.move(str(tmp_path / "scheduled"), str(tmp_path / "moved" / "scheduled"))
  config.curriculum.scores_path = str(tmp_path / "moved" / "scores.npy")
  again = train_and_evaluate(config, str(tmp_path / "moved" / "scheduled"))
  assert again == {k: v for k, v in scheduled.items() if k != "wall_time_s"}
  # other scores under the same name: another run (compared by content)
  np.save(tmp_path / "moved" / "scores.npy", np.arange(4000, dtype=np.float32)[::-1].copy())
  with pytest.raises(UserError, match="holds other scores"):
    train_and_evaluate(config, str(tmp_path / "moved" / "scheduled"))
  config.curriculum.scores_path = str(tmp_path / "missing.npy")
  with pytest.raises(UserError, match="no scores file"):
    train_and_evaluate(config, str(tmp_path / "bad"))
  assert not (tmp_path / "bad").exists()
