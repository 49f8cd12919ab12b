"""The study end to end on a tiny setup (digits subset, a small CNN, a couple of epochs).

One module-scoped study run feeds every test: artifacts and their sanity, the label-noise
fractions, disagreement counts against a direct comparison, interpolation endpoints against the
checkpoints, cosines, and the cache (a rerun computes nothing; a changed value reruns only what
depends on it).
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from _study_configs import tiny_study
from snnjax import data as data_lib
from snnjax import sparsity
from snnjax.studies.stages import dynamic_sparsity
from snnjax.studies.stages import memorization
from snnjax.studies import commands
from snnjax.studies import cache as cache_lib
from snnjax.studies import study as study_lib
from snnjax.studies.study import run_study
from snnjax.train import evaluate
from snnjax.train.batchnorm import recompute_batch_stats
from snnjax.train.solution import load_solution
from snnjax.train.step import make_predict_fn

FIGURES = ("table.png", "fisher_trend.png", "label_noise.png", "memorization.png", "disagreement.png",
           "interpolation.png", "interpolation_cosines.png", "dynamic_sparsity.png")


def tiny_config():
  c = tiny_study()
  c.fisher_trend.every_epochs = 1
  c.fisher_trend.sparsities = (0.9,)
  c.fisher_trend.num_examples = 16
  c.label_noise.sparsity = 0.9
  c.disagreement.sparsity = 0.9
  c.interpolation.alphas = (-0.1, 0.0, 0.5, 1.0, 1.1)
  c.interpolation.cosine_alphas = (0.3,)
  c.interpolation.num_examples = 24
  c.sanity.num_examples = 16
  c.sanity.max_probes = 8
  c.per_layer.num_examples = 16
  c.per_layer.num_probes = 4
  c.closing_gap.enabled = False
  return c


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("study"))
  config = tiny_config()
  results = run_study(config, workdir)
  runs = study_lib.resolve(config, cache_lib.StageCache(workdir))
  return {"workdir": workdir, "config": config, "results": results, "runs": runs}


def _run(study, family, regime, sparsity=0.0):
  for spec, run in study["runs"].items():
    if (spec.family, spec.regime) == (family, regime) and abs(spec.sparsity - sparsity) < 1e-9:
      return run
  raise KeyError((family, regime, sparsity))


def test_every_artifact_is_written(study):
  report = os.path.join(study["workdir"], "report")
  for name in FIGURES + ("report.md", "results.json"):
    assert os.path.getsize(os.path.join(report, name)) > 0, name
  with open(os.path.join(report, "report.md")) as f:
    text = f.read()
  for section in ("## Findings", "## The table", "## Regimes", "## Sanity check",
                  "## Fisher trend", "## Label noise", "## Memorization scores", "## Disagreement",
                  "## Interpolation", "## Dynamic sparse training (Sol-R)", "## Wall times",
                  "## Configs used"):
    assert section in text
  with open(os.path.join(report, "results.json")) as f:
    saved = json.load(f)
  assert {"table", "regimes", "sanity", "fisher_trend", "label_noise", "memorization",
          "disagreement", "interpolation", "dynamic_sparsity", "findings", "environment"} <= set(saved)


def test_table_values_are_sane(study):
  rows = study["results"]["table"]["rows"]
  assert [(r["regime"], r["sparsity"]) for r in rows] == [
      ("dense", 0.0), ("finetune", 0.9), ("scratch", 0.9), ("rigl", 0.9)]
  for r in rows:
    assert 0.0 <= r["train_error"]["mean"] <= 1.0
    assert 0.0 <= r["test_accuracy"]["mean"] <= 1.0
    assert r["tr_f"]["mean"] > 0 and r["tr_f"]["stderr"] > 0
    assert np.isfinite(r["tr_h"]["mean"]) and r["tr_h"]["stderr"] > 0
    assert r["jacobian"]["mean"] > 0
  per_run = study["results"]["table"]["per_run"]
  sparse = per_run["clean-finetune-0.90-seed0"]
  assert 0.85 < sparse["measured_sparsity"] < 0.95
  assert per_run["clean-dense-seed0"]["measured_sparsity"] == 0.0
  for r in study["results"]["regimes"]["runs"]:
    assert r["classification"] in ("generalization", "optimization")
    assert r["classification"] == ("optimization" if r["gap"] > r["threshold"]
                                   else "generalization")


def test_sanity_check_reports_both_traces(study):
  for r in study["results"]["sanity"].values():
    assert r["tr_f_exact"]["value"] > 0 and r["tr_h"]["stderr"] > 0
    # ReLU CNN with eval-mode BatchNorm: Tr(H) = Tr(F) exactly, so Hutchinson must agree.
    assert r["agree"], r
    assert abs(r["tr_h"]["value"] - r["tr_f_exact"]["value"]) <= 3 * r["tr_h"]["stderr"]


def test_per_layer_traces_sum_to_the_totals(study):
  result = study["results"]["per_layer"]
  assert set(result) == {"0.9"}
  for regime in ("finetune", "scratch"):
    r = result["0.9"][regime]
    assert len(r["layers"]) >= 3
    np.testing.assert_allclose(sum(l["tr_h"] for l in r["layers"].values()), r["tr_h"],
                               rtol=1e-9)
    np.testing.assert_allclose(sum(l["tr_f"] for l in r["layers"].values()), r["tr_f"],
                               rtol=1e-9)
  with open(os.path.join(study["workdir"], "report", "report.md")) as f:
    assert "## Per-layer curvature" in f.read()
  assert os.path.getsize(os.path.join(study["workdir"], "report", "per_layer_0.9.png")) > 0


def test_fisher_trend_has_a_point_per_kept_checkpoint(study):
  trend = study["results"]["fisher_trend"]["points"]
  assert set(trend) == {"clean-dense-seed0", "clean-finetune-0.90-seed0",
                        "clean-scratch-0.90-seed0", "clean-rigl-0.90-seed0"}
  for points in trend.values():
    assert [p["epoch"] for p in points] == [0, 1, 2]
    assert all(p["tr_f"]["value"] > 0 for p in points)


def test_label_noise_fractions_sum_correctly(study):
  ln = study["results"]["label_noise"]
  assert {r["regime"] for r in ln.values()} == {"dense", "finetune", "scratch", "rigl"}
  for r in ln.values():
    f = r["final"]
    assert f["num_clean"] + f["num_noisy"] == f["num_train"]
    assert f["num_noisy"] > 0
    np.testing.assert_allclose(f["noisy_correct"] + f["noisy_memorized"] + f["noisy_other"], 1.0)
    # the accuracy on the labels trained on splits into clean hits and memorized noisy labels
    np.testing.assert_allclose(
        f["train_accuracy"] * f["num_train"],
        f["clean_accuracy"] * f["num_clean"] + f["noisy_memorized"] * f["num_noisy"], atol=1e-6)
    c = r["curves"]
    assert len(c["epoch"]) == 2
    for correct, mem, other in zip(c["train_noisy_correct"], c["train_noisy_memorized"],
                                   c["train_noisy_other"]):
      np.testing.assert_allclose(correct + mem + other, 1.0)
    # the last epoch's logged breakdown is the final checkpoint's
    np.testing.assert_allclose(c["train_noisy_memorized"][-1], f["noisy_memorized"])
    np.testing.assert_allclose(c["train_clean_accuracy"][-1], f["clean_accuracy"])


def _predictions(solution, x):
  logits = solution.model.apply({"params": solution.params, "batch_stats": solution.batch_stats},
                                x, train=False)
  return np.asarray(logits).argmax(1)


@pytest.mark.parametrize("family,regime", [("clean", "scratch"), ("longtail", "scratch"),
                                           ("clean", "rigl")])
def test_disagreement_counts_match_direct_comparison(study, family, regime):
  infix = "rigl-" if regime == "rigl" else ""
  result = study["results"]["disagreement"][f"{family}-{infix}seed0"]
  assert result["regime"] == regime
  scratch, finetune = _run(study, family, regime, 0.9), _run(study, family, "finetune", 0.9)
  dataset = data_lib.load_dataset(scratch.config.dataset)
  s, f = load_solution(scratch.workdir), load_solution(finetune.workdir)
  for split, x, y in (("train", dataset.x_train, dataset.y_train_true),
                      ("test", dataset.x_test, dataset.y_test)):
    ps, pf = _predictions(s, x), _predictions(f, x)
    got = result[split]
    assert got["num_disagree"] == int(np.sum(ps != pf))
    assert got["class_counts"] == np.bincount(y[ps != pf], minlength=10).tolist()
    np.testing.assert_allclose(got["scratch_accuracy"], np.mean(ps == y))
  if family == "longtail":
    sizes = result["train"]["class_sizes"]
    assert max(sizes) > 3 * min(sizes)


def test_sol_r_starts_at_init_s_keeps_its_counts_and_moves_its_mask(study):
  scratch, rigl = _run(study, "clean", "scratch", 0.9), _run(study, "clean", "rigl", 0.9)
  init_s, init_r = (load_solution(os.path.join(r.workdir, "init")) for r in (scratch, rigl))
  for a, b in ((init_s.params, init_r.params), (init_s.mask, init_r.mask)):
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  sol_r = load_solution(rigl.workdir)
  layers = lambda m: {k: v[0] for k, v in sparsity.layer_densities(m).items()}
  assert layers(sol_r.mask) == layers(init_r.mask)
  curves = study["results"]["dynamic_sparsity"]["runs"]["clean-rigl-0.90-seed0"]
  assert curves["epoch"] == [0, 1, 2] and curves["mask_updates"] == [0, 3, 4]  # every 2 of 12
  assert curves["mask_change_all"][0] == 0.0 < curves["mask_change_all"][-1] <= 1.0
  assert set(curves["mask_change"]) == set(layers(sol_r.mask))
  with open(os.path.join(study["workdir"], "report", "results.json")) as f:
    findings = json.load(f)["findings"]
  rows = [r for r in findings if r["name"].startswith("dynamic_sparsity_")]
  assert [r["name"] for r in rows] == [f"dynamic_sparsity_{m}" for m, _ in
                                       dynamic_sparsity.METRICS]
  assert all(r["status"] != "not measured" for r in rows)


def _loss_with_recomputed_stats(solution, dataset, batch_size):
  stats = recompute_batch_stats(solution.apply_fn, solution.params, solution.batch_stats,
                                dataset.x_train, batch_size=batch_size)
  predict = make_predict_fn(solution.apply_fn)
  logits = evaluate.predict_logits(predict, solution.params, stats, dataset.x_train, 500)
  return evaluate.loss_and_accuracy(logits, dataset.y_train_true)


def test_interpolation_endpoints_reproduce_the_checkpoints(study):
  lines = study["results"]["interpolation"]["seed0"]
  finetune, scratch = _run(study, "clean", "finetune", 0.9), _run(study, "clean", "scratch", 0.9)
  dataset = data_lib.load_dataset(finetune.config.dataset)
  bs = study["config"].interpolation.bn_batch_size
  sol_f = load_solution(finetune.workdir)
  ends = {"init_s": load_solution(os.path.join(scratch.workdir, "init")),
          "init_f": load_solution(os.path.join(finetune.workdir, "init"))}
  want_end = _loss_with_recomputed_stats(sol_f, dataset, bs)
  for name, line in lines.items():
    assert line["endpoints_exact"] and line["same_mask"]
    a = line["alphas"]
    # theta(1) is Sol-F and theta(0) the init, bit for bit: with the BN statistics recomputed
    # the same way, the losses are the checkpoints' own.
    np.testing.assert_allclose(line["train_loss"][a.index(1.0)], want_end["loss"], rtol=1e-6)
    want_start = _loss_with_recomputed_stats(ends[name], dataset, bs)
    np.testing.assert_allclose(line["train_loss"][a.index(0.0)], want_start["loss"], rtol=1e-6)
  # With its stored running statistics Sol-F reproduces the test loss logged by training.
  with open(os.path.join(finetune.workdir, "metrics.jsonl")) as f:
    last = [json.loads(l) for l in f if l.strip()][-1]
  np.testing.assert_allclose(lines["init_s"]["end_stored_stats"]["test_loss"], last["test_loss"],
                             rtol=1e-5)


def test_interpolation_cosines_lie_in_range(study):
  for line in study["results"]["interpolation"]["seed0"].values():
    cos = line["cosines"]["0.3"]
    values = np.array([v for v in cos["values"] if v is not None])
    assert len(cos["values"]) == 24 and values.size > 0
    assert np.all(values >= -1.0) and np.all(values <= 1.0)
    assert sum(cos["top"]["class_counts"]) == cos["top"]["k"] >= 1


def test_memorization_scores_match_the_ensemble_and_the_solutions(study):
  """The stage's scores are Feldman-Zhang's formula over its cached ensemble; its 'Sol-F fits,
  Sol-S does not' group is what the two solutions predict; its finding has a verdict."""
  from snnjax.studies import memorization_scores  # pylint: disable=import-outside-toplevel
  m = study["results"]["memorization"]
  results_dir = os.path.join(study["workdir"], "results")
  [path] = [p for p in os.listdir(results_dir) if p.startswith("memorization-scores-clean")]
  with open(os.path.join(results_dir, path)) as f:
    ens = json.load(f)["result"]
  membership, correct = np.asarray(ens["membership"], bool), np.asarray(ens["correct"], bool)
  assert membership.shape == (8, 300) and (membership.sum(1) == 210).all()
  want = memorization_scores.memorization(membership, correct)["mem"]
  np.testing.assert_allclose(np.asarray(m["mem"], float), want)
  ds = data_lib.load_dataset(_run(study, "clean", "dense").config.dataset)
  fits = {r: load_solution(_run(study, "clean", r, 0.9).workdir).predict(ds.x_train).argmax(1)
          == ds.y_train for r in ("finetune", "scratch")}
  scored = np.isfinite(want)  # with 8 models a few examples are never (or always) held out
  assert m["summary"]["num_unscored"] == int((~scored).sum())
  assert m["gaps"]["scratch"]["count"] == int((fits["finetune"] & ~fits["scratch"] & scored).sum())
  for r in m["solutions"].values():
    for key in ("fisher", "loss"):
      rho, (lo, hi) = r[key]["rho"], r[key]["interval"]
      assert -1.0 <= lo <= hi <= 1.0 and np.isfinite(rho)
  assert sum(m["classes"]["top_counts"]) == m["classes"]["num_top"] == 15
  infl = memorization_scores.influence(membership, np.asarray(ens["test_correct"], bool))["infl"]
  assert [r["test"] for r in m["influence"]] == [0, 1, 2]
  for r in m["influence"]:
    assert r["infl"] == pytest.approx(np.nanmax(infl[:, r["test"]]))
  assert m["noisy"]["num_noisy"] > 0 and set(m["noisy"]["solutions"]) == {"dense", "finetune",
                                                                          "scratch", "rigl"}
  with open(os.path.join(study["workdir"], "report", "results.json")) as f:
    [row] = [x for x in json.load(f)["findings"] if x["name"] == "memorization_scores"]
  group = m["gaps"]["scratch"]["count"]
  if group < memorization.MIN_GROUP:  # a handful of examples decides nothing
    assert row["status"] == "not measured"
  else:
    assert row["status"] in ("reproduced", "not reproduced", "within sampling noise")


def test_rerun_skips_finished_stages_and_reruns_what_changed(study, capsys):
  mtimes = {n: os.path.getmtime(os.path.join(r["workdir"], "metrics.jsonl"))
            for n, r in study["results"]["runs"].items()}
  again = run_study(study["config"], study["workdir"], stages_to_run=(
      "solutions", "table", "regimes", "fisher_trend", "label_noise", "memorization",
      "disagreement", "interpolation", "sanity", "per_layer"))
  assert again["cache"]["computed"] == []
  assert len(again["cache"]["reused"]) == len(study["results"]["cache"]["computed"])
  for name, r in again["runs"].items():
    assert os.path.getmtime(os.path.join(r["workdir"], "metrics.jsonl")) == mtimes[name]
  assert "already finished" in capsys.readouterr().err
  changed = tiny_config()
  changed.interpolation.alphas = (0.0, 0.25, 1.0)
  third = run_study(changed, study["workdir"], stages_to_run=("solutions", "interpolation"))
  assert [os.path.basename(p).split("-")[0] for p in third["cache"]["computed"]] == [
      "interpolation"]
  assert third["interpolation"]["seed0"]["init_s"]["alphas"] == [0.0, 0.25, 0.3, 1.0]


def test_an_interrupted_stage_is_recomputed(study):
  results_dir = os.path.join(study["workdir"], "results")
  victim = sorted(p for p in os.listdir(results_dir) if p.startswith("label_noise-"))[0]
  os.remove(os.path.join(results_dir, victim))
  again = run_study(study["config"], study["workdir"],
                    stages_to_run=("solutions", "label_noise"))
  assert [os.path.basename(p) for p in again["cache"]["computed"]] == [victim]


def test_measure_cli_writes_the_table(study, tmp_path, capsys):
  run = _run(study, "clean", "finetune", 0.9)
  out = str(tmp_path / "m")
  code = commands.measure_main(["measure.py", "--workdir", run.workdir, "--checkpoint",
                           os.path.join(run.workdir, "init"), "--out", out,
                           "--config.hessian.num_examples=16", "--config.hessian.max_probes=3",
                           "--config.hessian.min_probes=2",
                           "--config.fisher.num_examples=16", "--config.fisher.kind=exact",
                           "--config.jacobian.num_examples=8", "--quiet"])
  assert code == 0
  with open(out + ".json") as f:
    saved = json.load(f)
  assert len(saved["rows"]) == 2
  assert saved["settings"]["fisher"]["kind"] == "exact"
  assert any("exact expectation" in t for t in saved["settings_text"])
  with open(out + ".md") as f:
    assert "| solution |" in f.read()
  # a study directory stands for every run under it
  assert commands.expand_workdir(study["workdir"]) == sorted(r.workdir for r in study["runs"].values())


def test_findings_have_a_status(study):
  with open(os.path.join(study["workdir"], "report", "results.json")) as f:
    findings = json.load(f)["findings"]
  assert len(findings) >= 10
  assert {f["status"] for f in findings} <= {"reproduced", "not reproduced", "not measured",
                                             "within seed spread", "within sampling noise"}


def test_a_moved_study_trains_nothing(study, tmp_path, capsys):
  """Run identity is location-free: a copy of the study directory names the very same runs."""
  moved = str(tmp_path / "elsewhere" / "study")
  shutil.copytree(study["workdir"], moved, ignore=shutil.ignore_patterns("jax_cache"))
  lines = {n: _lines(os.path.join(r["workdir"], "metrics.jsonl"))
           for n, r in study["results"]["runs"].items()}
  capsys.readouterr()
  again = run_study(study["config"], moved, stages_to_run=(
      "solutions", "table", "regimes", "fisher_trend", "label_noise", "memorization",
      "disagreement", "interpolation", "sanity"))
  assert again["cache"]["computed"] == []
  assert sorted(again["runs"]) == sorted(study["results"]["runs"])
  for name, r in again["runs"].items():
    assert r["workdir"].startswith(moved + os.sep)
    assert os.path.basename(r["workdir"]) == os.path.basename(
        study["results"]["runs"][name]["workdir"])
    assert _lines(os.path.join(r["workdir"], "metrics.jsonl")) == lines[name]  # nothing trained
    assert r["final"]["test_accuracy"] == study["results"]["runs"][name]["final"]["test_accuracy"]
  assert again["table"]["rows"] == study["results"]["table"]["rows"]


def _lines(path):
  with open(path) as f:
    return f.read().splitlines()
