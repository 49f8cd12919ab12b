"""The plateau criterion on synthetic curves (snnjax.studies.plateau)."""

import pytest

from snnjax.studies import plateau


def test_flat_tail_plateaus():
  epochs = list(range(2, 41, 2))
  errors = [0.5 * 0.7 ** i for i in range(15)] + [0.0004, 0.0002, 0.0001, 0.0, 0.0]
  v = plateau.check(epochs, errors, 40)
  assert v["plateaued"] and v["reason"] == "" and v["how"] == "fitted"
  assert v["from_epoch"] == 30 and v["to_epoch"] == 40
  assert v["change"] == pytest.approx(0.0 - errors[14])


def test_still_falling_is_flagged():
  epochs = list(range(2, 41, 2))
  errors = [0.6 - 0.014 * i for i in range(20)]  # still falling 0.014 per evaluation
  v = plateau.check(epochs, errors, 40)
  assert not v["plateaued"]
  assert v["change"] < -v["tolerance"]


def test_relative_tolerance_for_a_high_floor():
  # An optimization-regime run stuck at ~0.30: moving 0.02 is within 10% of its level.
  epochs = [10, 20, 30, 40]
  assert plateau.check(epochs, [0.5, 0.33, 0.31, 0.29], 40)["how"] == "stuck"
  assert not plateau.check(epochs, [0.5, 0.33, 0.31, 0.25], 40)["plateaued"]


def test_a_fitted_run_has_plateaued_even_if_it_got_there_late():
  epochs = [10, 20, 30, 40]
  v = plateau.check(epochs, [0.3, 0.05, 0.09, 0.0], 40)     # fell 0.09 -> 0 in its last quarter
  assert v["plateaued"] and v["how"] == "fitted" and v["change"] == pytest.approx(-0.09)
  assert plateau.check(epochs, [0.3, 0.05, 0.09, 0.005], 40)["how"] == "fitted"
  # Not fitted (0.006 > 0.005) and still falling: flagged.
  assert not plateau.check(epochs, [0.3, 0.05, 0.09, 0.006], 40)["plateaued"]


def test_rising_error_is_movement_too():
  assert not plateau.check([10, 20, 30, 40], [0.3, 0.05, 0.01, 0.05], 40)["plateaued"]


def test_unfinished_or_unevaluated_runs_are_not_plateaued():
  v = plateau.check([10, 20], [0.3, 0.1], 40)
  assert not v["plateaued"] and "final epoch" in v["reason"]
  v = plateau.check([40], [0.0], 40)
  assert not v["plateaued"] and "no evaluation" in v["reason"]


def test_records_use_train_accuracy_of_evaluated_epochs():
  records = [{"epoch": e, "train_accuracy": (None if e % 2 else 1.0 - 0.5 / e)}
             for e in range(1, 21)]
  v = plateau.check_records(records, 20)
  assert v["from_epoch"] == 14 and v["to_epoch"] == 20
  assert v["error_from"] == pytest.approx(0.5 / 14)


def test_bad_arguments():
  with pytest.raises(ValueError):
    plateau.check([1, 2], [0.1], 2)
  with pytest.raises(ValueError):
    plateau.check([1, 2], [0.1, 0.1], 2, window=1.5)
