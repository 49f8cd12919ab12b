"""The budget sweep's summary (snnjax.studies.budget) on hand-made budget reports, and its CLI's
refusals."""

import os

from snnjax.studies import budget, cache as cache_lib, commands


def _results(accs, train_errors, plateaued):
  """A budget report's results.json with Sol-F and Sol-S at 0.95 for seeds 0 and 1."""
  per_run, plateau, rows = {}, [], []
  for regime in ("finetune", "scratch"):
    names = [f"clean-{regime}-0.95-seed{s}" for s in (0, 1)]
    rows.append({"regime": regime, "sparsity": 0.95, "seeds": [0, 1], "runs": names})
    for s, name in enumerate(names):
      per_run[name] = {"test_accuracy": accs[regime][s], "train_error": train_errors[regime][s],
                       "tr_f": {"value": 10.0, "stderr": 1.0}}
      plateau.append({"run": name, "plateaued": plateaued[regime][s], "change": -0.01})
  rows.insert(0, {"regime": "dense", "sparsity": 0.0, "seeds": [0, 1],
                  "runs": ["clean-dense-seed0", "clean-dense-seed1"]})
  return {"table": {"rows": rows, "per_run": per_run}, "regimes": {"plateau": plateau}}


def _write(workdir, epochs, results):
  cache_lib.write_json(os.path.join(workdir, budget.report_dir_name(epochs), "results.json"),
                       results)


def test_summary_reads_every_budget_and_judges_the_plateaued_ones(tmp_path):
  d = str(tmp_path)
  # 10 epochs: Sol-S has not plateaued, big gap; 40: both plateaued, gap beyond the spread.
  _write(d, 10, _results({"finetune": [0.48, 0.47], "scratch": [0.40, 0.41]},
                         {"finetune": [0.0, 0.0], "scratch": [0.2, 0.2]},
                         {"finetune": [True, True], "scratch": [False, False]}))
  _write(d, 40, _results({"finetune": [0.48, 0.47], "scratch": [0.45, 0.44]},
                         {"finetune": [0.0, 0.0], "scratch": [0.0, 0.0]},
                         {"finetune": [True, True], "scratch": [True, True]}))
  s = budget.summarize(d, [40, 10, 20])          # 20 is missing: left out
  assert [b["epochs"] for b in s["budgets"]] == [10, 40]
  b10, b40 = s["budgets"]
  assert not b10["all_plateaued"] and b40["all_plateaued"]
  assert abs(b40["gap_mean"] - 0.03) < 1e-9 and b40["separated"]
  assert s["verdict"] == "the gap survives at every budget where both plateaued"
  text = "\n".join(budget.markdown(s))
  assert "**no**" in text and "beyond the seed spread" in text
  # Overlapping seeds at the plateaued budget: within the spread.
  _write(d, 40, _results({"finetune": [0.48, 0.44], "scratch": [0.45, 0.46]},
                         {"finetune": [0.0, 0.0], "scratch": [0.0, 0.0]},
                         {"finetune": [True, True], "scratch": [True, True]}))
  assert budget.summarize(d, [10, 40])["verdict"].startswith("the gap is within")
  assert budget.summarize(d, [10])["verdict"] == "no budget where every run plateaued"


def test_sweep_runs_each_budget_with_its_own_report_dir(tmp_path):
  from snnjax.train import config_io  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  base = config_io.load_config_spec(os.path.join(root, "configs", "study.py") + ":cifar10_fit_budget")
  seen = []

  def fake_study(config, workdir):  # records what the real run_study would be asked to do
    seen.append((config.sparse_epochs, config.report_dir, tuple(config.seeds), workdir))
  budget.run_sweep(base, str(tmp_path), [10, 40], seeds=[0, 1], run_study=fake_study)
  assert seen == [(10, "report-epochs10", (0, 1), str(tmp_path)),
                  (40, "report-epochs40", (0, 1), str(tmp_path))]
  assert base.sparse_epochs == 20            # the base config is left as it was


def test_cli_refuses_bad_input_with_one_line(tmp_path, capsys):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = os.path.join(root, "configs", "study.py")
  for argv in (["--epochs", "0"], ["--epochs", "a"], ["--epochs", "10", "--seeds", "-1"]):
    rc = commands.budget_main(["budget_sweep.py", "--config", spec + ":cifar10_fit_budget",
                               "--workdir", str(tmp_path / "s")] + argv)
    assert rc == 2
  rc = commands.budget_main(["budget_sweep.py", "--config", spec + ":quick", "--workdir",
                             str(tmp_path / "s"), "--epochs", "10"])
  assert rc == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert all(line.startswith("error: ") for line in err) and len(err) == 4
  assert "not a budget config" in err[-1]
  assert not os.path.exists(tmp_path / "s")
