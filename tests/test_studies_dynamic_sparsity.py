"""The dynamic_sparsity stage and its verdicts (findings.compare_toward, verdict_toward) on
test_studies_study.py covers its figure, section and findings end to end)."""

import pytest

from snnjax.studies import findings as findings_lib
from snnjax.studies.stages import dynamic_sparsity as ds


def _cell(values, stderr=None):
  return {"mean": sum(values) / len(values), "values": list(values), "stderr": stderr,
          "sd": None}


def _row(regime, cell, metric="tr_f"):
  return {"regime": regime, "sparsity": 0.9, metric: cell}


def test_compare_one_seed_uses_the_estimators_stderr():
  c = findings_lib.compare_toward(_cell([10.0], 0.1), _cell([20.0], 0.1), _cell([15.0], 0.1))
  assert c["toward"] and c["beyond_noise"] and c["noise"] == "sampling noise"
  assert c["gap_scratch"] == 10.0 and c["gap_rigl"] == 5.0
  c = findings_lib.compare_toward(_cell([10.0], 1.0), _cell([20.0], 1.0), _cell([19.0], 1.0))
  assert c["toward"] and c["beyond_noise"] is False  # 1 < 2 * sqrt(2)
  assert findings_lib.compare_toward(_cell([10.0]), _cell([20.0]), _cell([19.0]))["beyond_noise"] is None


def test_compare_binomial_for_accuracies_and_seed_spread_with_seeds():
  # accuracies 0.80 vs 0.70 over 1000 test examples: 2 SE of R - S is about 0.04
  c = findings_lib.compare_toward(_cell([0.8]), _cell([0.7]), _cell([0.72]), binomial_n=1000)
  assert c["toward"] and c["beyond_noise"] is False
  c = findings_lib.compare_toward(_cell([0.8]), _cell([0.7]), _cell([0.78]), binomial_n=1000)
  assert c["beyond_noise"] is True
  c = findings_lib.compare_toward(_cell([0.8, 0.81]), _cell([0.70, 0.74]), _cell([0.72, 0.76]))
  assert c["noise"] == "seed spread" and c["beyond_noise"] is False
  c = findings_lib.compare_toward(_cell([0.8, 0.81]), _cell([0.70, 0.71]), _cell([0.76, 0.77]))
  assert c["beyond_noise"] is True


@pytest.mark.parametrize("r_value,stderr,expected", [
    (15.0, 0.1, "reproduced"), (25.0, 0.1, "not reproduced"), (19.9, 1.0, "within sampling noise"),
    (15.0, None, "reproduced")])
def test_status_from_the_table_rows(r_value, stderr, expected):
  rows = [_row("finetune", _cell([10.0], stderr)), _row("scratch", _cell([20.0], stderr)),
          _row("rigl", _cell([r_value], stderr))]
  comparisons = ds.table_comparisons(rows, "tr_f", num_test=0)
  assert [c["sparsity"] for c in comparisons] == [0.9]
  assert findings_lib.verdict_toward(comparisons) == expected
  assert findings_lib.verdict_toward([]) == "not measured"


def test_memorization_from_the_label_noise_results():
  def final(memorized):
    return {"noisy_memorized": memorized, "num_train": 1000, "effective_noise_rate": 0.3}
  result = {"f": {"regime": "finetune", "seed": 0, "final": final(0.6)},
            "s": {"regime": "scratch", "seed": 0, "final": final(0.3)},
            "r": {"regime": "rigl", "seed": 0, "final": final(0.5)}}
  (c,) = ds.memorization_comparisons(result, 0.95)
  assert c["sparsity"] == 0.95 and c["toward"] and c["beyond_noise"]
  del result["r"]
  assert ds.memorization_comparisons(result, 0.95) == []
