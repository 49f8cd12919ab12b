"""Tests of the study and measure command lines: bad input is one error line and exit code 2."""

import os

import pytest

from snnjax.studies import commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(ROOT, "configs", "study.py")


def _one_error_line(capsys):
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


def test_measure_missing_workdir_exits_2(tmp_path, capsys):
  missing = str(tmp_path / "nope")
  assert commands.measure_main(["measure.py", "--workdir", missing]) == 2
  assert missing in _one_error_line(capsys)
  assert not os.path.exists(missing)


def test_measure_needs_an_input(capsys):
  assert commands.measure_main(["measure.py"]) == 2
  assert "--workdir" in _one_error_line(capsys)


@pytest.mark.parametrize("args,needle", [
    (["--config.fisher.kind=bogus"], "fisher.kind"),          # a bad value
    (["--config.hessian.max_probes=0"], "max_probes"),         # out of range
    (["--config.hessian.max_probes=two"], "max_probes"),       # not an int
    (["--config.hessian.bogus=1"], "config.hessian.bogus"),    # an unknown field
    (["--config.nope=1"], "config.nope"),
    (["--fisher-kind", "exact"], "--config.FIELD=VALUE"),      # the removed hand-mapped flags
])
def test_measure_bad_setting_exits_2_with_one_line(tmp_path, capsys, args, needle):
  (tmp_path / "config.json").write_text("{}")
  assert commands.measure_main(["measure.py", "--workdir", str(tmp_path)] + args) == 2
  assert needle in _one_error_line(capsys)
  assert not os.path.exists(tmp_path / "measure.json")


def test_measure_bad_study_config_exits_2(tmp_path, capsys):
  assert commands.measure_main(["measure.py", "--workdir", str(tmp_path), "--config",
                           f"{STUDY}:nope"]) == 2
  assert "preset" in _one_error_line(capsys)


def test_measure_settings_are_the_defaults_or_the_studys_then_the_overrides():
  from snnjax.studies import measure  # pylint: disable=import-outside-toplevel
  args, overrides = commands.parse_measure(["measure.py", "--workdir", "W", "--config.fisher.kind=exact",
                                       "--config.hessian.max_probes", "20",
                                       "--noconfig.jacobian.squared", "--quiet"])
  assert args.workdir == ["W"] and args.quiet and args.config is None
  s = commands.measure_settings(args.config, overrides)
  expected = measure.default_settings()
  expected.fisher.kind = "exact"
  expected.hessian.max_probes = 20
  expected.jacobian.squared = False
  assert s.to_dict() == expected.to_dict()
  # --config: the study's measure settings (quick: 512 Tr(H) examples), then the overrides.
  args, overrides = commands.parse_measure(["measure.py", "--config", f"{STUDY}:quick",
                                       "--config.hessian.num_examples=64"])
  s = commands.measure_settings(args.config, overrides)
  assert (s.hessian.num_examples, s.hessian.max_probes) == (64, 40)


def test_measure_not_a_workdir_exits_2(tmp_path, capsys):
  assert commands.measure_main(["measure.py", "--workdir", str(tmp_path)]) == 2
  assert "config.json" in _one_error_line(capsys)
  assert commands.measure_main(["measure.py", "--checkpoint", str(tmp_path)]) == 2
  assert "config.json" in _one_error_line(capsys)


@pytest.mark.parametrize("argv,needle", [
    ([], "--config"),
    (["--config", f"{STUDY}:quick"], "--workdir"),
    (["--config", f"{STUDY}:nope", "--workdir", "W"], "preset"),
    (["--config", f"{STUDY}:quick", "--workdir", "W", "--stages", "table,bogus"], "bogus"),
    (["--config", f"{STUDY}:quick", "--workdir", "W", "--config.sparsities=1.5"], "sparsities"),
])
def test_study_bad_input_exits_2(tmp_path, capsys, argv, needle):
  argv = [str(tmp_path / a) if a == "W" else a for a in argv]
  assert commands.study_main(["study.py"] + argv) == 2
  assert needle in _one_error_line(capsys)
  assert not os.path.exists(tmp_path / "W" / "runs")
