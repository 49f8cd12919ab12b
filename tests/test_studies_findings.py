"""Tests of the findings verdicts, the regimes and the report's table on synthetic results."""

from snnjax.studies import findings, report
from snnjax.studies import study as study_lib
from snnjax.studies.runs import RunSpec
from snnjax.studies.stages import regimes, table


def _cell(v, e=0.1):
  return {"mean": v, "sd": None, "stderr": e, "values": [v]}


def _rows(scratch_f):
  rows = [{"regime": "dense", "sparsity": 0.0, "label": "Sol-D"}]
  for sp in (0.9, 0.96):
    rows.append({"regime": "finetune", "sparsity": sp, "label": f"Sol-F {sp:.2f}"})
    rows.append({"regime": "scratch", "sparsity": sp, "label": f"Sol-S {sp:.2f}"})
  values = {("dense", 0.0): (0.0, 0.9, 10, 12, 5), ("finetune", 0.9): (0.0, 0.88, 20, 25, 6),
            ("scratch", 0.9): (0.05, 0.85, scratch_f, 40, 7),
            ("finetune", 0.96): (0.01, 0.86, 30, 35, 6.5),
            ("scratch", 0.96): (0.1, 0.80, scratch_f * 2, 60, 8)}
  for r in rows:
    v = values[(r["regime"], r["sparsity"])]
    for k, x in zip(("train_error", "test_accuracy", "tr_f", "tr_h", "jacobian"), v):
      r[k] = _cell(x)
  return rows


def test_findings_verdicts_follow_the_numbers():
  got = {f["name"]: f["status"] for f in report.evaluate_findings(
      study_lib.default_config(), {"table": {"rows": _rows(50.0)}}, setups_match=False)}
  assert got["test_accuracy"] == "reproduced"
  assert got["train_error"] == "reproduced"
  assert got["tr_f"] == "reproduced" and got["tr_f_rises"] == "reproduced"
  assert got["tr_f_dense_lowest"] == "reproduced"
  assert got["label_noise_memorization"] == "not measured"
  got = {f["name"]: f["status"] for f in report.evaluate_findings(
      study_lib.default_config(), {"table": {"rows": _rows(5.0)}}, setups_match=False)}
  assert got["tr_f"] == "not reproduced"


def test_study_values_for_the_paper_setup():
  assert findings.study_value("tr_f", "scratch", 0.90) == 2702
  assert findings.study_value("tr_h", "dense", 0.0) == 66.3
  assert findings.study_value("test_accuracy", "finetune", 0.94) == 0.760
  assert findings.study_value("train_error", "finetune", 0.94) is None


def test_table_markdown_marks_scratch_above_finetune():
  text = table.table_markdown(_rows(50.0), setups_match=True)
  lines = text.splitlines()
  assert len(lines) == 2 + 5
  scratch_line = [l for l in lines if l.startswith("| Sol-S | 0.90")][0]
  assert "↑" in scratch_line and "(study 2702)" in scratch_line


def test_regimes_threshold():
  assert regimes.classify(0.05, 0.0, 0.02) == "optimization"
  assert regimes.classify(0.01, 0.0, 0.02) == "generalization"
  specs = [RunSpec("clean", "dense", 0.0, 0), RunSpec("clean", "scratch", 0.9, 0),
           RunSpec("noisy", "scratch", 0.9, 0)]
  measured = {"clean-dense-seed0": {"train_error": 0.01},
              "clean-scratch-0.90-seed0": {"train_error": 0.2}}
  out = regimes.classify_runs(specs, measured, 0.02)
  assert len(out) == 1 and out[0]["classification"] == "optimization"
  assert abs(out[0]["gap"] - 0.19) < 1e-12


def test_table_aggregates_seeds():
  specs = [RunSpec("clean", "finetune", 0.9, s) for s in (0, 1)] + [
      RunSpec("clean", "scratch", 0.9, 0), RunSpec("noisy", "dense", 0.0, 0)]
  est = lambda v: {"value": v, "stderr": 0.5}
  measured = {
      "clean-finetune-0.90-seed0": {"train_error": 0.0, "test_accuracy": 0.8, "tr_f": est(10.0),
                                    "tr_h": est(20.0), "jacobian": est(1.0)},
      "clean-finetune-0.90-seed1": {"train_error": 0.1, "test_accuracy": 0.7, "tr_f": est(14.0),
                                    "tr_h": est(22.0), "jacobian": est(3.0)},
      "clean-scratch-0.90-seed0": {"train_error": 0.2, "test_accuracy": 0.6, "tr_f": est(30.0),
                                   "tr_h": est(40.0), "jacobian": None}}
  rows = table.aggregate(specs, measured)
  assert [(r["regime"], r["seeds"]) for r in rows] == [("finetune", [0, 1]), ("scratch", [0])]
  f = rows[0]
  assert f["tr_f"]["mean"] == 12.0 and abs(f["tr_f"]["sd"] - 2 ** 1.5) < 1e-12
  assert abs(f["tr_f"]["stderr"] - 0.5 / 2 ** 0.5) < 1e-12
  assert rows[1]["tr_f"]["sd"] is None and rows[1]["tr_f"]["stderr"] == 0.5
  assert rows[1]["jacobian"] is None
  marks = table.scratch_vs_finetune(rows)["0.90"]
  assert marks["tr_f"] and marks["train_error"] and not marks["test_accuracy"]
  assert not marks["jacobian"]


def _seed_cell(values):
  mean = sum(values) / len(values)
  return {"mean": mean, "sd": None, "stderr": None, "values": list(values)}


def test_accuracy_gap_is_judged_against_the_seed_spread():
  def rows(f_acc, s_acc):
    return [{"regime": "finetune", "sparsity": 0.9, "label": "Sol-F 0.90",
             "test_accuracy": _seed_cell(f_acc)},
            {"regime": "scratch", "sparsity": 0.9, "label": "Sol-S 0.90",
             "test_accuracy": _seed_cell(s_acc)}]
  # Every Sol-S seed below every Sol-F seed: beyond the spread.
  c = findings.compare_over_seeds(rows((0.80, 0.82), (0.70, 0.74)), "test_accuracy",
                                  scratch_higher=False)
  assert len(c) == 1 and c[0]["separated"] is True and c[0]["direction"] is True
  assert abs(c[0]["gap"] - (0.72 - 0.81)) < 1e-12
  assert findings.verdict_over_seeds(c) == "reproduced"
  # Means in the study's direction, but the seed ranges overlap (0.79 > 0.78).
  c = findings.compare_over_seeds(rows((0.78, 0.84), (0.75, 0.79)), "test_accuracy",
                                  scratch_higher=False)
  assert c[0]["direction"] is True and c[0]["separated"] is False
  assert findings.verdict_over_seeds(c) == "within seed spread"
  assert "within seed spread" in findings.describe_comparisons(c)
  # The opposite direction, beyond the spread.
  c = findings.compare_over_seeds(rows((0.70, 0.71), (0.80, 0.81)), "test_accuracy",
                                  scratch_higher=False)
  assert c[0]["separated"] is True and c[0]["direction"] is False
  assert findings.verdict_over_seeds(c) == "not reproduced"
  assert "opposite to the study, beyond seed spread" in findings.describe_comparisons(c)
  # The opposite direction of the means, within the spread: no contradiction beyond it.
  c = findings.compare_over_seeds(rows((0.70, 0.80), (0.74, 0.78)), "test_accuracy",
                                  scratch_higher=False)
  assert c[0]["direction"] is False and c[0]["separated"] is False
  assert findings.verdict_over_seeds(c) == "within seed spread"
  # One seed: direction only, the spread unknown.
  c = findings.compare_over_seeds(rows((0.80,), (0.70,)), "test_accuracy", scratch_higher=False)
  assert c[0]["separated"] is None and findings.verdict_over_seeds(c) == "reproduced"
  c = findings.compare_over_seeds(rows((0.70,), (0.80,)), "test_accuracy", scratch_higher=False)
  assert findings.verdict_over_seeds(c) == "not reproduced"
  assert "one seed" in findings.describe_comparisons(c)
  assert findings.verdict_over_seeds([]) == "not measured"


def test_curvature_findings_use_the_seed_spread():
  rows = [{"regime": "finetune", "sparsity": sp, "label": "F", "tr_h": _seed_cell(f)}
          for sp, f in ((0.9, (10.0, 12.0)), (0.95, (20.0, 30.0)))]
  rows += [{"regime": "scratch", "sparsity": sp, "label": "S", "tr_h": _seed_cell(s)}
           for sp, s in ((0.9, (13.0, 15.0)), (0.95, (25.0, 40.0)))]
  for r in rows:
    for k in ("train_error", "test_accuracy", "tr_f", "jacobian"):
      r[k] = None
  got = {f["name"]: f for f in report.evaluate_findings(
      study_lib.default_config(), {"table": {"rows": rows}},
                                                           setups_match=False)}
  assert got["tr_h"]["status"] == "within seed spread"   # 0.95: 25 < 30
  assert [c["separated"] for c in got["tr_h"]["comparisons"]] == [True, False]


def test_label_noise_finding_says_when_the_difference_is_sampling_noise():
  def result(mem_f, mem_s):
    def final(m):
      return {"noisy_memorized": m, "noisy_correct": 0.4, "test_accuracy": 0.4,
              "num_train": 20000, "effective_noise_rate": 0.27}
    return {"label_noise": {
        "f": {"regime": "finetune", "seed": 0, "final": final(mem_f)},
        "s": {"regime": "scratch", "seed": 0, "final": final(mem_s)}}}
  get = lambda r: next(f for f in report.evaluate_findings(
      study_lib.default_config(), r, setups_match=False)
                       if f["name"] == "label_noise_memorization")
  # 5,400 noisy examples: 2 x stderr of a difference of two ~0.07 fractions is ~0.01.
  assert get(result(0.069, 0.068))["status"] == "within sampling noise"
  assert get(result(0.20, 0.10))["status"] == "reproduced"
  assert get(result(0.10, 0.20))["status"] == "not reproduced"


def test_label_noise_findings_read_every_seed_and_the_dense_regime():
  def final(m):
    return {"noisy_memorized": m, "noisy_correct": 0.4, "test_accuracy": 0.4,
            "num_train": 5000, "effective_noise_rate": 0.27}

  def result(pairs, dense=(0.95, 0.97)):
    out = {}
    for seed, (f, s) in enumerate(pairs):
      out[f"f{seed}"] = {"regime": "finetune", "seed": seed, "final": final(f)}
      out[f"s{seed}"] = {"regime": "scratch", "seed": seed, "final": final(s)}
      out[f"d{seed}"] = {"regime": "dense", "seed": seed, "final": final(dense[seed])}
    return {"label_noise": out}

  def get(r):
    return {f["name"]: f for f in report.evaluate_findings(study_lib.default_config(), r,
                                                           setups_match=False)}
  both = get(result([(0.9, 0.6), (0.92, 0.65)]))
  assert both["label_noise_memorization"]["status"] == "reproduced"
  assert "seed 0" in both["label_noise_memorization"]["ours"]
  assert "seed 1" in both["label_noise_memorization"]["ours"]
  # One seed each way: no verdict beyond the noise.
  assert get(result([(0.9, 0.6), (0.6, 0.9)]))["label_noise_memorization"]["status"] == (
      "within sampling noise")
  assert both["label_noise_regime"]["status"] == "reproduced"
  low = get(result([(0.9, 0.6), (0.92, 0.65)], dense=(0.95, 0.07)))
  assert low["label_noise_regime"]["status"] == "not reproduced"
