"""The study-level TensorBoard switch (``--config.tensorboard=True``, issue 21): every run's
training curves and the study's curvature of it, read back with TensorBoard's own reader, equal
metrics.jsonl and the study's results; the switch changes no run's identity."""

import importlib.util
import shutil

import pytest

from _study_configs import tiny_study
from snnjax.studies import cache as cache_lib
from snnjax.studies import competing
from snnjax.studies import events as events_lib
from snnjax.studies import stages as stages_lib
from snnjax.studies import study as study_lib
from snnjax.studies.study import run_study
from snnjax.train import summaries
from snnjax.train.run_dir import RunDir

HAVE_TENSORBOARD = all(importlib.util.find_spec(m) is not None
                       for m in ("tensorboardX", "tensorboard"))


def _config(tensorboard=True):
  """The tiny study with the table and the Fisher trend only: Sol-D, Sol-F and Sol-S at 0.9."""
  c = tiny_study()
  c.sol_r = False
  for stage in stages_lib.REGISTRY:
    if stage.key not in ("measure", "fisher_trend"):
      c[stage.key].enabled = False
  c.fisher_trend.every_epochs = 1
  c.fisher_trend.sparsities = (0.9,)
  c.fisher_trend.num_examples = 16
  c.tensorboard = tensorboard
  return c


def test_the_switch_changes_no_run(tmp_path):
  cache = cache_lib.StageCache(str(tmp_path))
  off = study_lib.resolve(_config(False), cache)
  on = study_lib.resolve(_config(True), cache)
  assert {s: r.hash for s, r in on.items()} == {s: r.hash for s, r in off.items()}
  assert {s: r.workdir for s, r in on.items()} == {s: r.workdir for s, r in off.items()}
  assert all(r.config.tensorboard for r in on.values())
  assert not any(r.config.tensorboard for r in off.values())
  # the competing-explanation stages' variants start from a table run's config
  spec, base = next((s, r) for s, r in on.items() if s.regime == "scratch")
  variant = competing.variant(cache, _config(True), "v", spec, base.config, on[spec.dense()],
                              **{"mask.init": "sparse_aware"})
  assert variant.config.tensorboard


def _read_back(workdir):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
  acc = event_accumulator.EventAccumulator(summaries.events_dir(workdir))
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("study_tb"))
  config = _config()
  results = run_study(config, workdir, stages_to_run=("solutions", "table", "fisher_trend"))
  runs = study_lib.resolve(config, cache_lib.StageCache(workdir))
  return {"workdir": workdir, "config": config, "results": results, "runs": runs}


@pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboardX / tensorboard not installed")
def test_every_run_has_its_curves_and_curvature(study):
  runs, results = study["runs"], study["results"]
  assert sorted(s.name for s in runs) == sorted(results["table"]["per_run"])
  assert sorted(results["tensorboard"]) == sorted(s.name for s in runs)
  for spec, run in runs.items():
    got = _read_back(run.workdir)
    records = RunDir(run.workdir).epoch_records()
    final = records[-1]["epoch"]
    # the training curves: metrics.jsonl, epoch by epoch
    curves = {}
    for tag, value, step in summaries.record_points(records):
      curves.setdefault(tag, []).append((step, value))
    for must in ("train_loss", "test_accuracy", "lr"):
      assert must in curves, must
    for tag, points in curves.items():
      assert [s for s, _ in got[tag]] == [s for s, _ in points], (spec.name, tag)
      assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6,
                                                       abs=1e-7), (spec.name, tag)
    # the table's measurement at the final epoch
    measured = results["table"]["per_run"][spec.name]
    for key, tag in (("tr_f", "curvature/trace_fisher"), ("tr_h", "curvature/trace_hessian"),
                     ("jacobian", "curvature/jacobian_norm")):
      assert got[tag] == [(final, pytest.approx(measured[key]["value"], rel=1e-6))], tag
      if measured[key]["stderr"] is not None:
        assert got[tag + "_stderr"] == [(final, pytest.approx(measured[key]["stderr"],
                                                              rel=1e-6))]
    for key in ("train_error", "test_accuracy", "train_loss", "test_loss"):
      assert got[f"table/{key}"] == [(final, pytest.approx(measured[key], rel=1e-6,
                                                           abs=1e-7))], key
    # the Fisher trend: Tr(F) at the init (epoch 0) and every kept checkpoint
    trend = results["fisher_trend"]["points"][spec.name]
    assert [s for s, _ in got[events_lib.TREND_TAG]] == [p["epoch"] for p in trend] == [0, 1, 2]
    assert [v for _, v in got[events_lib.TREND_TAG]] == pytest.approx(
        [p["tr_f"]["value"] for p in trend], rel=1e-6)
    assert set(got) <= set(curves) | {t for t, _, _ in events_lib.run_points(
        results, spec.name, run.workdir)}
    assert summaries.STUDY_EVENTS in summaries.event_files(run.workdir)


@pytest.mark.skipif(not HAVE_TENSORBOARD, reason="tensorboardX / tensorboard not installed")
def test_a_rerun_replaces_the_study_file_and_backfills_runs_trained_without(study, tmp_path):
  """A rerun reuses everything and rewrites the one study file; a study whose runs were trained
  with the switch off gets their curves from metrics.jsonl when it is turned on."""
  files = {s.name: summaries.event_files(r.workdir) for s, r in study["runs"].items()}
  again = run_study(study["config"], study["workdir"],
                    stages_to_run=("solutions", "table", "fisher_trend"))
  assert again["cache"]["computed"] == []
  assert {s.name: summaries.event_files(r.workdir) for s, r in study["runs"].items()} == files

  # the same study trained without the switch: no event file; turned on: every run's curves
  plain = str(tmp_path / "plain")
  shutil.copytree(study["workdir"], plain, ignore=shutil.ignore_patterns("jax_cache"))
  runs = study_lib.resolve(study["config"], cache_lib.StageCache(plain))
  for run in runs.values():
    shutil.rmtree(summaries.events_dir(run.workdir))
  run_study(study["config"], plain, stages_to_run=("solutions", "table", "fisher_trend"))
  for spec, run in runs.items():
    assert summaries.event_files(run.workdir) == [summaries.METRICS_EVENTS,
                                                  summaries.STUDY_EVENTS]
    assert _read_back(run.workdir) == _read_back(study["runs"][spec].workdir)
