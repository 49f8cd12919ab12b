"""Checkpoint integrity: per-leaf checksums saved with every checkpoint and verified on every
restore, so a flipped bit, a truncated, partly deleted or replaced checkpoint is a one-line
CorruptCheckpointError naming the step (and the leaf), on resume and for a finished run; never a
silent resume or "already finished"."""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from snnjax import xla_cpu
from snnjax.errors import UserError
from snnjax.train import train_and_evaluate
from snnjax.train.checkpoint import (CheckpointStore, CorruptCheckpointError, first_mismatch,
                                     leaf_digests)
from snnjax.train.run_dir import RunDir
from snnjax.train.solution import load_solution
from tests._train_configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [sys.executable, os.path.join(REPO, "scripts", "train.py")]
# A config file giving a run's own config.json back: the CLI on the module's trained run.
SAME_CONFIG = """
import json, os, ml_collections
def get_config():
  return ml_collections.ConfigDict(json.load(open(os.environ["RUN_CONFIG"])))
"""
NAMED = re.compile(r"leaf \S+ does not match|Error reading \"\S+\"")


def _config(**model_kwargs):
  config = tiny(model="mlp", dataset="mnist1d", epochs=2, **model_kwargs)
  config.optim.lr = 0.05
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished 2-epoch MLP run (checkpoints at steps 62 and 124) and its final record."""
  root = tmp_path_factory.mktemp("ckpt")
  record = train_and_evaluate(_config(), str(root / "run"))
  return root / "run", record


@pytest.fixture
def run(trained, tmp_path):
  src, _ = trained
  dst = tmp_path / "run"
  shutil.copytree(src, dst)
  return dst


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())


def _data_files(step_dir):
  files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir / "state") for f in fs
           if os.sep + "d" + os.sep in os.path.join(r, f)]
  return sorted(files, key=os.path.getsize, reverse=True)


def _flip(step_dir, n=64):
  path = _data_files(step_dir)[0]
  data = bytearray(open(path, "rb").read())
  for i in range(n):
    data[(len(data) // 2 + 37 * i) % len(data)] ^= 0xFF
  open(path, "wb").write(bytes(data))


def _truncate(step_dir):
  path = _data_files(step_dir)[0]
  os.truncate(path, os.path.getsize(path) // 3)


def _delete_part(step_dir):
  os.unlink(_data_files(step_dir)[0])


def _delete_state(step_dir):
  shutil.rmtree(step_dir / "state")


def _unfinished(workdir):
  """The run as if killed after its first checkpoint: the last one moved away."""
  last = _steps(workdir)[-1]
  shutil.move(str(workdir / "checkpoints" / str(last)), str(workdir.parent / "moved"))
  return _steps(workdir)[-1]


def test_digests_name_each_leaf_and_detect_one_changed_value():
  tree = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
          "mask": {"w": np.ones((2, 3), bool)}, "step": np.int32(4)}
  digests = leaf_digests(tree)
  assert sorted(digests) == ["mask/w", "params/w", "step"]
  assert first_mismatch(digests, tree) is None
  changed = jax.tree.map(np.copy, tree)
  changed["params"]["w"][1, 2] = np.nextafter(np.float32(5), np.float32(6))
  assert first_mismatch(digests, changed) == "params/w"
  assert first_mismatch(digests, {**tree, "step": np.int64(4)}) == "step"  # dtype counts
  assert first_mismatch(digests, {k: v for k, v in tree.items() if k != "mask"}) == "mask/w"


def test_saved_meta_holds_the_digests_of_the_saved_state(trained):
  workdir, record = trained
  with CheckpointStore(workdir / "checkpoints", read_only=True) as store:
    meta = store.restore_meta(124)
  solution = load_solution(str(workdir))
  assert meta["digests"]["params/stem/kernel"] == leaf_digests(solution.params)["stem/kernel"]
  assert RunDir(workdir).final_metrics() == {k: v for k, v in record.items() if k != "wall_time_s"}


@pytest.mark.parametrize("damage", [_flip, _truncate, _delete_part, _delete_state])
def test_damaged_final_checkpoint_is_never_finished(run, damage):
  damage(run / "checkpoints" / "124")
  before = {p: open(p, "rb").read() for p in _data_files(run / "checkpoints" / "124")}
  with pytest.raises(CorruptCheckpointError, match=r"checkpoints/124 is corrupt") as e:
    train_and_evaluate(_config(), str(run))
  assert NAMED.search(str(e.value)) or damage is _delete_state, str(e.value)
  assert "\n" not in str(e.value)
  with pytest.raises(CorruptCheckpointError):
    RunDir(run).final_metrics()
  with pytest.raises(CorruptCheckpointError):
    load_solution(str(run))
  # Nothing already written is lost or rewritten.
  assert before == {p: open(p, "rb").read() for p in before}


@pytest.mark.parametrize("damage", [_flip, _truncate])
def test_damaged_checkpoint_is_never_resumed_and_the_advice_works(run, trained, damage):
  _, record = trained
  step = _unfinished(run)
  damage(run / "checkpoints" / str(step))
  with pytest.raises(CorruptCheckpointError, match=rf"checkpoints/{step} is corrupt.*move that"):
    train_and_evaluate(_config(), str(run))
  # As the message says: moving the damaged step away retrains from the one before (here: init).
  shutil.move(str(run / "checkpoints" / str(step)), str(run.parent / "damaged"))
  again = train_and_evaluate(_config(), str(run))
  for key in ("test_loss", "test_accuracy", "train_loss", "batch_loss"):
    assert again[key] == record[key], key


def test_checkpoint_of_another_architecture_is_refused(run, tmp_path):
  other = tmp_path / "other"
  train_and_evaluate(_config(hidden_sizes=(16,)), str(other))
  shutil.rmtree(run / "checkpoints")
  shutil.copytree(other / "checkpoints", run / "checkpoints")
  with pytest.raises(CorruptCheckpointError, match="does not match the model/config"):
    train_and_evaluate(_config(), str(run))


def test_cli_prints_one_error_line_for_a_truncated_checkpoint(run, tmp_path):
  _truncate(run / "checkpoints" / "124")
  (tmp_path / "same.py").write_text(SAME_CONFIG)
  out = subprocess.run(TRAIN + ["--config", str(tmp_path / "same.py"), "--workdir", str(run)],
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "RUN_CONFIG": str(run / "config.json")})
  assert out.returncode == 2, out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: checkpoint "), out.stderr
  assert "checkpoints/124" in lines[0] and "Event loop" not in out.stderr


def test_the_numerics_environment_is_recorded_but_not_in_the_identity(trained):
  workdir, _ = trained
  with CheckpointStore(workdir / "checkpoints", read_only=True) as store:
    env = store.restore_meta(124)["environment"]
  assert env == xla_cpu.numerics_environment()
  assert set(env) == {"xla_tuning", "env", "jax", "jaxlib"}
  assert "environment" not in open(workdir / "config.json").read()
  assert xla_cpu.numerics_environment({"XLA_FLAGS": xla_cpu.FLAG})["xla_tuning"]
  off = xla_cpu.numerics_environment({"SNNJAX_XLA_TUNING": "0"})
  assert not off["xla_tuning"] and off["env"] == {"SNNJAX_XLA_TUNING": "0"}


MEASURE = [sys.executable, os.path.join(REPO, "scripts", "measure.py")]


def _measure_cli(*args):
  return subprocess.run(MEASURE + list(args), cwd=REPO, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": REPO})


def test_a_final_checkpoint_replaced_by_an_earlier_one_is_refused(run):
  """checkpoints/124 replaced by a copy of checkpoints/62: not the step its name says (issue 23)."""
  shutil.rmtree(run / "checkpoints" / "124")
  shutil.copytree(run / "checkpoints" / "62", run / "checkpoints" / "124")
  with pytest.raises(CorruptCheckpointError, match=r"checkpoints/124 holds the state of step 62"):
    load_solution(str(run))
  with pytest.raises(CorruptCheckpointError, match=r"checkpoints/124 holds the state of step 62"):
    RunDir(run).solution()
  assert load_solution(str(run / "checkpoints" / "62")).step == 62  # the real one still loads


@pytest.mark.parametrize("field,value", [("sparsity", 0.5), ("regime", "scratch"), ("seed", 7),
                                         ("dataset.name", "digits"),
                                         ("model.kwargs.hidden_sizes", [16])])
def test_an_edited_config_json_is_refused_by_load_solution_and_measure(run, tmp_path, capsys,
                                                                       field, value):
  """config.json edited after training (e.g. sparsity 0.5 on another run, another dataset or
  channel list): its identity.json disagrees, so neither load_solution nor measure.py reports
  numbers under the edited fields (issue 23)."""
  path = run / "config.json"
  d = json.loads(path.read_text())
  *parents, name = field.split(".")
  node = d
  for p in parents:
    node = node.setdefault(p, {})
  node[name] = value
  path.write_text(json.dumps(d))
  with pytest.raises(UserError, match="does not match the run's identity"):
    load_solution(str(run))
  if field in ("sparsity", "dataset.name"):
    from snnjax.studies import commands  # pylint: disable=import-outside-toplevel
    capsys.readouterr()
    assert commands.measure_main(["measure.py", "--workdir", str(run), "--out",
                                  str(tmp_path / "m"), "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "does not match the run's identity" in lines[0], lines
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("field,value,needle", [
    ("dataset", {"name": "digits"}, "was trained on inputs of shape (40,)"),
    ("model", {"kwargs": {"hidden_sizes": [16]}}, "does not match the model/config")])
def test_measure_without_identity_refuses_a_config_of_another_dataset_or_width(
    run, tmp_path, capsys, field, value, needle):
  """Even without identity.json, a config.json naming another dataset or channel list is one
  error line from measure.py, not a JAX traceback."""
  from snnjax.studies import commands  # pylint: disable=import-outside-toplevel
  os.unlink(run / "identity.json")
  path = run / "config.json"
  d = json.loads(path.read_text())
  d[field].update(value)
  path.write_text(json.dumps(d))
  capsys.readouterr()
  assert commands.measure_main(["measure.py", "--workdir", str(run), "--out", str(tmp_path / "m"),
                                "--quiet"]) == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
  assert not (tmp_path / "m.json").exists()


def test_measure_prints_one_line_for_a_truncated_final_checkpoint(run, tmp_path):
  _truncate(run / "checkpoints" / "124")
  out = _measure_cli("--workdir", str(run), "--out", str(tmp_path / "m"), "--quiet")
  assert out.returncode == 2, out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: checkpoint "), out.stderr
  assert "Event loop" not in out.stderr
