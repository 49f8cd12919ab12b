"""Tests of the study and measure command lines: bad input is one error line and exit code 2."""

import os

import pytest

from snnjax.studies import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(ROOT, "configs", "study.py")


def _one_error_line(capsys):
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


def test_measure_missing_workdir_exits_2(tmp_path, capsys):
  missing = str(tmp_path / "nope")
  assert cli.measure_main(["measure.py", "--workdir", missing]) == 2
  assert missing in _one_error_line(capsys)
  assert not os.path.exists(missing)


def test_measure_needs_an_input(capsys):
  assert cli.measure_main(["measure.py"]) == 2
  assert "--workdir" in _one_error_line(capsys)


def test_measure_bad_flag_exits_2(tmp_path, capsys):
  assert cli.measure_main(["measure.py", "--workdir", str(tmp_path), "--fisher-kind",
                           "bogus"]) == 2
  _one_error_line(capsys)


def test_measure_not_a_workdir_exits_2(tmp_path, capsys):
  assert cli.measure_main(["measure.py", "--workdir", str(tmp_path)]) == 2
  assert "config.json" in _one_error_line(capsys)
  assert cli.measure_main(["measure.py", "--checkpoint", str(tmp_path)]) == 2
  assert "config.json" in _one_error_line(capsys)


def test_measure_bad_setting_exits_2(tmp_path, capsys):
  (tmp_path / "config.json").write_text("{}")
  assert cli.measure_main(["measure.py", "--workdir", str(tmp_path), "--hessian-probes",
                           "0"]) == 2
  assert "max_probes" in _one_error_line(capsys)


@pytest.mark.parametrize("argv,needle", [
    ([], "--config"),
    (["--config", f"{STUDY}:quick"], "--workdir"),
    (["--config", f"{STUDY}:nope", "--workdir", "W"], "preset"),
    (["--config", f"{STUDY}:quick", "--workdir", "W", "--stages", "table,bogus"], "bogus"),
    (["--config", f"{STUDY}:quick", "--workdir", "W", "--config.sparsities=1.5"], "sparsities"),
])
def test_study_bad_input_exits_2(tmp_path, capsys, argv, needle):
  argv = [str(tmp_path / a) if a == "W" else a for a in argv]
  assert cli.study_main(["study.py"] + argv) == 2
  assert needle in _one_error_line(capsys)
  assert not os.path.exists(tmp_path / "W" / "runs")
