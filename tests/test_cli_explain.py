"""Configs that explain themselves: "did you mean", --help lists the fields, the resolved config
and identity printed at start, a sparse run finds its Sol-D beside its work dir (not retrained)."""

import json
import os

import pytest

from snnjax.errors import UserError
from snnjax.train import RunDir, cli, config_io, config_presets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RIGL = os.path.join(REPO, "configs", "rigl95.py") + ":quick"


@pytest.mark.parametrize("field,want", [("learning_rat", "optim.lr"), ("optim.l", "optim.lr"),
                                        ("learning_rate", "optim.lr"), ("epochs", "num_epochs"),
                                        ("dst.update_evry", "dst.update_every"),
                                        ("optim.weightdecay", "optim.weight_decay")])
def test_did_you_mean_names_the_intended_field(field, want):
  with pytest.raises(UserError) as e:
    cli.parse(["train.py", "--config", RIGL, f"--config.{field}=0.1"])
  message = str(e.value)
  assert message.startswith(f"unknown config field in an override: {field}; did you mean ")
  assert cli.suggest_fields(field, config_presets.sparse_config("rigl", 0.95, "quick"))[0] == want
  assert want in message


def test_no_suggestion_for_a_name_like_nothing():
  config = config_presets.base_config()
  assert cli.suggest_fields("zzzqqq", config) == []
  assert str(cli.unknown_field_error("zzzqqq", config)) == (
      "unknown config field in an override: zzzqqq")


def test_help_lists_the_fields_with_their_defaults(capsys):
  assert cli.main(["train.py", "--help"]) == 0
  out = capsys.readouterr().out
  assert "  --config.optim.lr=0.1\n" in out and "  --config.num_epochs=200\n" in out
  assert cli.main(["train.py", "--config", RIGL, "--help"]) == 0
  out = capsys.readouterr().out
  assert "  --config.dst.update_every=20\n" in out and "  --config.num_epochs=12\n" in out


_DENSE = """
from snnjax.train import config_presets

def get_config():
  c = config_presets.dense_config("quick")
  c.num_epochs = 1
  c.optim.boundaries_epochs = (1,)
  c.dataset.train_size = 240
  c.batch_size = 40
  c.progress = False
  return c
"""

_SPARSE = """
from snnjax.train import config_presets

def get_config():
  c = config_presets.sparse_config("scratch", 0.8, "quick")
  c.num_epochs = 1
  c.optim.boundaries_epochs = (1,)
  c.dataset.train_size = 240
  c.batch_size = 40
  c.progress = False
  c.dense_workdir = "runs/dense-tiny"
  c.dense_config = {dense!r}
  return c
"""


def test_sparse_run_finds_its_sol_d_beside_its_work_dir_and_prints_its_config(
    tmp_path, monkeypatch, capsys):
  dense_cfg, sparse_cfg = tmp_path / "dense_tiny.py", tmp_path / "scratch_tiny.py"
  dense_cfg.write_text(_DENSE)
  sparse_cfg.write_text(_SPARSE.format(dense=str(dense_cfg)))
  runs = tmp_path / "elsewhere"
  assert cli.main(["train.py", "--config", str(dense_cfg), "--workdir",
                   str(runs / "my-dense")]) == 0
  err = capsys.readouterr().err
  dense = RunDir(runs / "my-dense")
  assert f"[snnjax] run identity {dense.identity}; saved as " in err
  assert "[snnjax]   optim.lr=0.05" in err
  metrics = open(dense.metrics_path).read()
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  assert cli.main(["train.py", "--config", str(sparse_cfg), "--workdir",
                   str(runs / "scratch")]) == 0
  err = capsys.readouterr().err
  assert f"[snnjax] Sol-D: {runs / 'my-dense'} (beside the work dir" in err
  assert "training the prerequisite" not in err and not (cwd / "runs").exists()
  assert open(dense.metrics_path).read() == metrics  # not retrained
  sparse = RunDir(runs / "scratch")
  assert sparse.config.dense_workdir == str(runs / "my-dense")
  assert sparse.dense_identity == dense.identity
  assert f"[snnjax] run identity {sparse.identity}; saved as" in err
  # An explicit dense_workdir is taken as given (here: refused, nothing there to train from).
  code = cli.main(["train.py", "--config", str(sparse_cfg), "--config.dense_workdir=nothing",
                   "--config.prerequisites=error", "--workdir", str(runs / "scratch2")])
  lines = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(lines) == 1 and "no finished Sol-D run" in lines[0], lines
  assert config_io.identity_hash(json.load(open(sparse.config_path))) == sparse.identity
