"""Memorization / influence scores: the formulas, and a trained subset ensemble on a constructed
set where some labels only their own example's presence can explain."""

import numpy as np
import pytest

from snnjax.data.dataset import Dataset
from snnjax.errors import UserError
from snnjax.studies import memorization_scores as ms
from tests._train_configs import tiny


def test_mem_and_se_match_their_formulas():
  rng = np.random.default_rng(0)
  membership = ms.draw_membership(40, 7, 0.6, seed=3)
  correct = rng.random((40, 7)) < 0.6
  got = ms.memorization(membership, correct)
  for i in range(7):
    c_in, c_out = correct[membership[:, i], i], correct[~membership[:, i], i]
    assert got["mem"][i] == pytest.approx(c_in.mean() - c_out.mean())
    se = np.sqrt(c_in.var(ddof=1) / len(c_in) + c_out.var(ddof=1) / len(c_out))
    assert got["se"][i] == pytest.approx(se)
    assert (got["n_in"][i], got["n_out"][i]) == (len(c_in), len(c_out))


def test_influence_matches_its_formula_and_equals_mem_on_the_diagonal():
  rng = np.random.default_rng(1)
  membership = ms.draw_membership(30, 5, 0.5, seed=0)
  test_correct = rng.random((30, 3)) < 0.5
  got = ms.influence(membership, test_correct)
  assert got["infl"].shape == got["se"].shape == (5, 3)
  for i in range(5):
    for j in range(3):
      a, b = test_correct[membership[:, i], j], test_correct[~membership[:, i], j]
      assert got["infl"][i, j] == pytest.approx(a.mean() - b.mean())
      assert got["se"][i, j] == pytest.approx(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
  # A test set equal to the training set: infl(i, i) is mem(i).
  correct = rng.random((30, 5)) < 0.5
  np.testing.assert_allclose(np.diag(ms.influence(membership, correct)["infl"]),
                             ms.memorization(membership, correct)["mem"])


def test_a_group_without_models_gives_nan_and_bad_input_is_refused():
  membership = np.array([[True, False], [True, True], [True, False]])
  got = ms.memorization(membership, np.ones((3, 2), bool))
  assert np.isnan(got["mem"][0]) and np.isnan(got["se"][0])  # never left out
  assert got["mem"][1] == pytest.approx(0.0) and np.isnan(got["se"][1])  # one model out
  with pytest.raises(UserError):
    ms.memorization(membership, np.ones((2, 2), bool))
  with pytest.raises(UserError):
    ms.draw_membership(4, 10, 1.0, seed=0)


def test_draw_membership_has_equal_rows_and_is_seeded():
  a = ms.draw_membership(8, 50, 0.7, seed=5)
  assert (a.sum(1) == 35).all()
  np.testing.assert_array_equal(a, ms.draw_membership(8, 50, 0.7, seed=5))
  np.testing.assert_array_equal(a[:4], ms.draw_membership(4, 50, 0.7, seed=5))
  assert not np.array_equal(a, ms.draw_membership(8, 50, 0.7, seed=6))


UNIQUE, GROUPS, COPIES, DIM, CLASSES = 40, 8, 5, 16, 10


def _constructed_dataset():
  """UNIQUE points with random labels (only an example's own presence explains its label) and
  GROUPS points repeated COPIES times each (any copy explains the others); the test set holds
  copies of the first 4 unique points and of the first group's point."""
  rng = np.random.default_rng(0)
  x_unique = rng.normal(size=(UNIQUE, DIM)).astype(np.float32)
  x_group = rng.normal(size=(GROUPS, DIM)).astype(np.float32)
  y_unique = rng.integers(0, CLASSES, UNIQUE).astype(np.int32)
  y_group = rng.integers(0, CLASSES, GROUPS).astype(np.int32)
  x = np.concatenate([x_unique, np.repeat(x_group, COPIES, axis=0)])
  y = np.concatenate([y_unique, np.repeat(y_group, COPIES)])
  x_test = np.concatenate([x_unique[:4], x_group[:1]])
  y_test = np.concatenate([y_unique[:4], y_group[:1]])
  return Dataset(name="mnist1d", x_train=x, y_train=y, y_train_true=y.copy(),
                 noisy=np.zeros(len(y), bool), x_test=x_test, y_test=y_test, num_classes=CLASSES,
                 mean=np.zeros(1, np.float32), std=np.ones(1, np.float32), is_image=False)


@pytest.fixture(scope="module")
def scored():
  config = tiny("dense", dataset="mnist1d", model="mlp", epochs=50, hidden_sizes=(64,))
  config.batch_size = 14
  config.optim.lr = 0.1
  config.optim.weight_decay = 0.0
  config.optim.boundaries_epochs = (45,)
  settings = ms.default_settings()
  settings.num_models = 32
  settings.fraction = 0.7
  settings.test_examples = 5
  return ms.train_and_score(config, _constructed_dataset(), settings)


def test_labels_only_their_own_presence_explains_are_memorized(scored):
  mem = np.asarray(scored["mem"])
  assert scored["in_subset_accuracy"] > 0.99  # the models fit their subsets
  assert mem[:UNIQUE].mean() > 0.75, mem[:UNIQUE]  # chance out of the subset is 0.1
  assert np.min(mem[:UNIQUE]) > 0.4
  assert np.all(np.asarray(scored["se"])[:UNIQUE] < 0.2)


def test_duplicated_examples_are_not_memorized(scored):
  mem = np.asarray(scored["mem"])[UNIQUE:]
  assert abs(mem.mean()) < 0.05, mem
  assert np.max(np.abs(mem)) < 0.2


def test_influence_on_a_copy_is_the_training_examples_memorization(scored):
  infl = np.asarray(scored["infl"])  # (N, 5)
  mem = np.asarray(scored["mem"])
  for j in range(4):  # test example j is a copy of unique training example j
    assert infl[j, j] == pytest.approx(mem[j])
    others = np.delete(infl[:, j], j)  # ~0 +- se(i, j) ~ 0.2 with 32 models
    assert infl[j, j] > 0.4 and np.argmax(infl[:, j]) == j
    assert abs(others.mean()) < 0.05 and np.mean(np.abs(others)) < 0.2
  # The copy of a duplicated point: no single copy's presence matters.
  assert np.max(np.abs(infl[UNIQUE:UNIQUE + COPIES, 4])) < 0.2
