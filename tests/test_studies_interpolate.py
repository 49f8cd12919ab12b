"""Tests of ``snnjax.interpolate`` and ``scripts/interpolate.py``: the endpoints reproduce each
checkpoint's metrics.jsonl numbers, a segment from a checkpoint to itself has no barrier, the
barrier against the chord, masks, and the CLI's outputs and error lines."""

import json
import os

import jax
import numpy as np
import pytest

import snnjax
from snnjax import data as data_lib
from snnjax.errors import UserError
from snnjax.studies import commands
from snnjax.studies import interpolate as interp
from snnjax.train import recompute_batch_stats
from snnjax.train.loop import train_and_evaluate
from snnjax.train.run_dir import RunDir

from _train_configs import tiny

METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Two epochs of a BatchNorm CNN and of a BN-free MLP on digits, a checkpoint per epoch."""
  root = tmp_path_factory.mktemp("interp")
  out = {}
  for name, config in (("cnn", tiny(model="cnn", dataset="digits", epochs=2, channels=(8, 8),
                                    strides=(1, 2))),
                       ("mlp", tiny(model="mlp", dataset="digits", epochs=2))):
    config.optim.lr = 0.2
    config.train_eval_size = 500  # the stored train metrics are on a seeded subset
    train_and_evaluate(config, str(root / name))
    out[name] = str(root / name)
  return out


def _records(workdir):
  return {r["step"]: r for r in RunDir(workdir).epoch_records()}


def _check_endpoints(result, workdir, steps):
  records = _records(workdir)
  for alpha, step in zip((0.0, 1.0), steps):
    i = result["alphas"].index(alpha)
    for k in METRICS:
      np.testing.assert_allclose(result[k][i], records[step][k], rtol=1e-6, atol=1e-7,
                                 err_msg=f"{k} at alpha {alpha}")


def test_endpoints_reproduce_stored_metrics_with_stored_statistics(runs):
  steps = sorted(_records(runs["cnn"]))
  result = snnjax.interpolate(runs["cnn"], runs["cnn"], step_a=steps[0], alphas=(0.5,),
                              bn="stored")
  assert result["alphas"] == [0.0, 0.5, 1.0]
  assert result["endpoints_exact"] and result["same_mask"] and result["bn"] == "stored"
  assert result["num_train_examples"] == 500
  _check_endpoints(result, runs["cnn"], steps)
  assert result["a"]["stored_metrics"]["test_accuracy"] == _records(runs["cnn"])[steps[0]][
      "test_accuracy"]
  assert result["l2_distance"] > 0


def test_endpoints_reproduce_stored_metrics_with_recomputed_statistics(runs):
  # Without BatchNorm the recomputation changes nothing: every metric is reproduced.
  steps = sorted(_records(runs["mlp"]))
  result = snnjax.interpolate(runs["mlp"], runs["mlp"], step_a=steps[0], alphas=(0.5,))
  assert result["bn"] == "recompute"
  _check_endpoints(result, runs["mlp"], steps)
  # With BatchNorm the endpoints are the checkpoints evaluated with their population statistics.
  result = snnjax.interpolate(runs["cnn"], f"{runs['cnn']}/checkpoints/{max(steps)}",
                              step_a=min(steps), alphas=(), train_examples=0)
  dataset = data_lib.load_dataset(RunDir(runs["cnn"]).config.dataset)
  for alpha, step in ((0.0, min(steps)), (1.0, max(steps))):
    sol = RunDir(runs["cnn"]).solution(step)
    stats = recompute_batch_stats(sol.apply_fn, sol.params, sol.batch_stats, dataset.x_train)
    assert not np.allclose(jax.tree.leaves(stats)[0], jax.tree.leaves(sol.batch_stats)[0])
    i = result["alphas"].index(alpha)
    want = sol.evaluate(dataset.x_test, dataset.y_test, batch_stats=stats)
    assert result["test_loss"][i] == pytest.approx(want["loss"], rel=1e-6)
    assert result["test_accuracy"][i] == pytest.approx(want["accuracy"])
    want = sol.evaluate(dataset.x_train, dataset.y_train, batch_stats=stats)
    assert result["train_loss"][i] == pytest.approx(want["loss"], rel=1e-6)


def test_barrier_of_a_checkpoint_with_itself_is_zero(runs):
  result = snnjax.interpolate(runs["cnn"], runs["cnn"], alphas=(-0.2, 0.3, 0.7, 1.2))
  for q in interp.QUANTITIES:
    assert result["barrier"][q]["height"] == 0.0
  assert result["l2_distance"] == 0.0 and result["test_disagreement"] == 0.0
  assert len(set(result["test_loss"])) == 1  # one network at every alpha


def test_barrier_against_the_chord():
  alphas = [-0.5, 0.0, 0.25, 0.5, 1.0, 1.5]
  values = [9.0, 1.0, 2.5, 2.0, 3.0, 9.0]  # chord at 0.25: 1.5, at 0.5: 2.0
  assert interp.barrier(alphas, values) == {"height": 1.0, "alpha": 0.25}
  assert interp.barrier([0.0, 0.5, 1.0], [1.0, 0.5, 0.0])["height"] == 0.0  # below the chord
  with pytest.raises(UserError, match="alpha 0 and 1"):
    interp.barrier([0.0, 0.5], [1.0, 2.0])


def test_masks_union_intersection_and_one_side():
  a = {"w": np.array([True, True, False, False])}
  b = {"w": np.array([True, False, True, False])}
  assert interp.combine_masks(a, b, "union")["w"].tolist() == [True, True, True, False]
  assert interp.combine_masks(a, b, "intersection")["w"].tolist() == [True, False, False, False]
  assert interp.combine_masks(a, b, "b")["w"].tolist() == b["w"].tolist()
  with pytest.raises(UserError, match="mask must be one of"):
    interp.combine_masks(a, b, "both")


def test_cli_writes_json_and_figure_and_refuses_bad_input(runs, tmp_path, capsys):
  steps = sorted(_records(runs["mlp"]))
  out = tmp_path / "seg"
  code = commands.interpolate_main(["interpolate.py", runs["mlp"], runs["mlp"], "--step-a",
                                    str(steps[0]), "--alphas=-0.5,0.5", "--bn", "stored",
                                    "--out", str(out), "--quiet"])
  assert code == 0
  result = json.loads((tmp_path / "seg.json").read_text())
  assert result["alphas"] == [-0.5, 0.0, 0.5, 1.0] and result["mask"] == "union"
  assert set(result["barrier"]) == set(interp.QUANTITIES)
  assert os.path.getsize(tmp_path / "seg.png") > 0
  for args, message in (([runs["mlp"], runs["mlp"], "--mask", "both"], "invalid choice"),
                        ([runs["mlp"], str(tmp_path / "nothing")], "no checkpoint or work dir"),
                        ([runs["mlp"], runs["cnn"]], "different architectures"),
                        ([runs["mlp"], runs["mlp"], "--alphas", "0,x"], "--alphas must be")):
    capsys.readouterr()
    assert commands.interpolate_main(["interpolate.py", *args, "--out",
                                      str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
  assert not list(tmp_path.glob("bad*"))
