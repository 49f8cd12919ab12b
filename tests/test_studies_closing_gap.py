"""The closing-the-gap stage on a tiny setup (digits subset, a small CNN, two epochs).

One module-scoped study (solutions, the stage and the report only) feeds the integration tests:
artifacts, the scores file against a direct per-example computation, the variants' configs and
inits, and the cache (a rerun computes nothing; a changed lambda reruns only its variant). Unit
tests cover the settings, the plan and the verdicts.
"""

import json
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _study_configs import tiny_study
from snnjax import data as data_lib
from snnjax.errors import UserError
from snnjax.studies import cache as cache_lib
from snnjax.studies import study as study_lib
from snnjax.studies.stages import closing_gap
from snnjax.studies.study import run_study, validate
from snnjax.train import config_io
from snnjax.train.solution import load_solution

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("solutions", "closing_gap", "report")


def _quick():
  return config_io.load_config_spec(os.path.join(ROOT, "configs", "study.py") + ":quick")


def tiny_config():
  c = tiny_study(hessian_probes=4, jacobian_examples=16)
  for name in ("fisher_trend", "label_noise", "memorization", "disagreement", "interpolation",
               "sanity", "per_layer"):
    c[name].enabled = False
  c.closing_gap.measure_tr_h = False
  c.closing_gap.fisher_examples = 16
  return c


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("gap"))
  config = tiny_config()
  results = run_study(config, workdir, stages_to_run=STAGES)
  runs = study_lib.resolve(config, cache_lib.StageCache(workdir))
  scratch = next(r for s, r in runs.items() if s.family == "clean" and s.regime == "scratch")
  return {"workdir": workdir, "config": config, "results": results, "scratch": scratch}


def _variant_runs(study):
  return study["results"]["closing_gap"]["runs"]


def test_stage_writes_its_artifacts(study):
  result = study["results"]["closing_gap"]
  assert result["sparsity"] == 0.9
  # Sol-R (the quick study's sol_r) beside Sol-S and Sol-F, then the variants
  assert [r["name"] for r in result["rows"]] == ["scratch", "finetune", "rigl", "fisher_penalty",
                                                 "low_first", "high_first"]
  for r in result["rows"]:
    assert 0.0 <= r["test_accuracy"]["mean"] <= 1.0 and 0.0 <= r["train_error"]["mean"] <= 1.0
    assert r["tr_f"]["mean"] > 0 and r["tr_f"]["stderr"] > 0
  # Tr(H) off for the variants: only the references (measured by the table protocol) carry it
  assert [r["tr_h"] is None for r in result["rows"]] == [False, False, False, True, True, True]
  assert set(result["verdicts"]) == set(closing_gap.VARIANTS) | {"rigl"}
  acc = {r["name"]: r["test_accuracy"]["mean"] for r in result["rows"]}
  for name, v in result["verdicts"].items():
    assert v["status"] in ("closed", "partly closed", "not closed", "no gap")
    np.testing.assert_allclose(v["change"], acc[name] - acc["scratch"])
    np.testing.assert_allclose(v["gap"], acc["finetune"] - acc["scratch"])
  report = os.path.join(study["workdir"], "report")
  assert os.path.getsize(os.path.join(report, "closing_gap.png")) > 0
  with open(os.path.join(report, "report.md")) as f:
    text = f.read()
  assert "## Closing the gap" in text and "lambda = 0.1 > 0" in text
  with open(os.path.join(report, "results.json")) as f:
    saved = json.load(f)
  assert "closing_gap" in saved and "table" not in saved
  gap_findings = [f for f in saved["findings"] if f["name"].startswith("closing_gap_")]
  assert len(gap_findings) == 3
  assert {f["status"] for f in gap_findings} <= {"reproduced", "not reproduced", "not measured"}


def _kernel_mask(params, mask):
  def keep(path, m):
    return np.asarray(m, np.float32) * (jax.tree_util.keystr(path).endswith("['kernel']"))
  return jax.tree_util.tree_map_with_path(keep, mask)


def test_scores_file_matches_a_direct_computation(study):
  scores_info = study["results"]["closing_gap"]["scores"]["seed0"]
  path = os.path.join(study["workdir"], scores_info["path"])
  scores = np.load(path)
  dataset = data_lib.load_dataset(study["scratch"].config.dataset)
  assert scores.shape == (dataset.num_train,) == (300,)
  assert np.all(scores > 0)
  init = load_solution(os.path.join(study["scratch"].workdir, "init"))
  logits_fn, _ = init.functions(bn_mode="eval")
  kmask = _kernel_mask(init.params, init.mask)
  for i in (0, 17, 299):
    x = jnp.asarray(dataset.x_train[i:i + 1])
    p = jax.nn.softmax(logits_fn(init.params, x)[0])
    total = 0.0
    for c in range(p.shape[0]):
      g = jax.grad(lambda w, c=c: jax.nn.log_softmax(logits_fn(w, x)[0])[c])(init.params)
      sq = sum(float(jnp.sum(jnp.square(a * m))) for a, m in
               zip(jax.tree.leaves(g), jax.tree.leaves(kmask)))
      total += float(p[c]) * sq
    np.testing.assert_allclose(scores[i], total, rtol=1e-4)
  np.testing.assert_allclose(scores_info["summary"]["mean"], scores.mean())


def test_variant_configs_point_at_the_scores_and_share_init_s(study):
  runs = _variant_runs(study)
  scores_path = os.path.join(study["workdir"],
                             study["results"]["closing_gap"]["scores"]["seed0"]["path"])
  plain = study["scratch"].config
  plain_init = load_solution(os.path.join(study["scratch"].workdir, "init"))
  for name, r in runs.items():
    with open(os.path.join(r["workdir"], "config.json")) as f:
      cfg = json.load(f)
    assert cfg["regime"] == "scratch" and cfg["sparsity"] == 0.9
    assert cfg["dense_workdir"] == plain.dense_workdir
    assert cfg["num_epochs"] == plain.num_epochs == 2
    if r["variant"] == "fisher_penalty":
      assert cfg["fisher_reg"] == {"weight": 0.1, "until_epoch": 1, "num_examples": 16}
      assert cfg["curriculum"]["kind"] == "none"
      with open(os.path.join(r["workdir"], "metrics.jsonl")) as f:
        records = [json.loads(l) for l in f if l.strip()]
      assert "fisher_penalty" in records[0] and "fisher_penalty" not in records[1]
    else:
      assert cfg["curriculum"]["kind"] == r["variant"]
      assert cfg["curriculum"]["scores_path"] == scores_path
      assert cfg["curriculum"]["until_epoch"] == 1
      assert cfg["fisher_reg"]["weight"] == 0.0
    init = load_solution(os.path.join(r["workdir"], "init"))
    chex.assert_trees_all_close(init.params, plain_init.params)
    chex.assert_trees_all_equal(init.mask, plain_init.mask)


def test_rerun_skips_the_stage_and_a_change_reruns_only_its_variant(study, capsys):
  runs = _variant_runs(study)
  mtimes = {n: os.path.getmtime(os.path.join(r["workdir"], "metrics.jsonl"))
            for n, r in runs.items()}
  again = run_study(study["config"], study["workdir"], stages_to_run=STAGES)
  assert again["cache"]["computed"] == []
  assert any(p.endswith(".npy") for p in again["cache"]["reused"])
  for name, r in again["closing_gap"]["runs"].items():
    assert r["workdir"] == runs[name]["workdir"]
    assert os.path.getmtime(os.path.join(r["workdir"], "metrics.jsonl")) == mtimes[name]
  assert "already finished" in capsys.readouterr().err
  assert again["closing_gap"]["rows"] == study["results"]["closing_gap"]["rows"]
  changed = tiny_config()
  changed.closing_gap.fisher_weight = 0.05
  third = run_study(changed, study["workdir"], stages_to_run=STAGES)
  assert [os.path.basename(p).rsplit("-", 1)[0] for p in third["cache"]["computed"]] == [
      "closing_gap-measure-gap-fisher_penalty-0.90-seed0"]
  new = third["closing_gap"]["runs"]
  assert new["gap-fisher_penalty-0.90-seed0"]["workdir"] != runs[
      "gap-fisher_penalty-0.90-seed0"]["workdir"]
  assert new["gap-low_first-0.90-seed0"]["workdir"] == runs["gap-low_first-0.90-seed0"]["workdir"]


def test_disabled_stage_plans_nothing_extra():
  c = _quick()
  assert closing_gap.stage_sparsity(c) == 0.94  # the middle of (0.90, 0.94, 0.96)
  c.closing_gap.sparsity = 0.8
  assert "clean-scratch-0.80-seed0" in {s.name for s in study_lib.plan(c)}
  c.closing_gap.enabled = False
  assert "clean-scratch-0.80-seed0" not in {s.name for s in study_lib.plan(c)}


@pytest.mark.parametrize("field,value,needle", [
    ("fisher_weight", 0.0, "fisher_weight"),
    ("fisher_weight", -0.1, "fisher_weight"),
    ("variants", ("fisher_penalty", "bogus"), "variants"),
    ("schedule_until", 1.5, "schedule_until"),
    ("pool_factor", 0.5, "pool_factor"),
    ("sparsity", 1.0, "sparsity"),
])
def test_bad_settings_are_user_errors(field, value, needle):
  c = _quick()
  with c.ignore_type():
    c.closing_gap[field] = value
  with pytest.raises(UserError, match=needle):
    validate(c)


def test_bad_score_kind_is_a_user_error():
  c = _quick()
  c.closing_gap.scores.kind = "empirical"
  with pytest.raises(UserError, match="scores.kind"):
    validate(c)


def test_until_epoch_and_variant_config():
  assert closing_gap.until_epoch(12, 0.5) == 6
  assert closing_gap.until_epoch(3, 0.1) == 1
  assert closing_gap.until_epoch(4, 1.0) == 4
  base = config_io.load_config_spec(os.path.join(ROOT, "configs", "scratch95.py") + ":quick")
  g = closing_gap.default_settings()
  cfg = closing_gap.variant_config(base, "high_first", g, "/s.npy")
  assert (cfg.curriculum.kind, cfg.curriculum.scores_path, cfg.curriculum.until_epoch) == (
      "high_first", "/s.npy", 6)
  assert base.curriculum.kind == "none"  # the base is not modified
  assert cache_lib.run_hash(cfg) != cache_lib.run_hash(
      closing_gap.variant_config(base, "high_first", g, "/other.npy"))
  with pytest.raises(UserError, match="scores"):
    closing_gap.variant_config(base, "low_first", g, "")


def _rows(s_acc, f_acc, v_acc):
  def row(name, acc, tr_f):
    return {"name": name, "label": name,
            "test_accuracy": {"mean": acc}, "tr_f": {"mean": tr_f}}
  return [row("scratch", s_acc, 50.0), row("finetune", f_acc, 20.0),
          row("fisher_penalty", v_acc, 30.0)]


@pytest.mark.parametrize("v_acc,status,fraction", [
    (0.96, "closed", 2.0), (0.93, "closed", 1.0), (0.91, "partly closed", 1 / 3),
    (0.90, "not closed", 0.0), (0.89, "not closed", -1 / 3)])
def test_verdicts(v_acc, status, fraction):
  v = closing_gap.verdicts(_rows(0.90, 0.93, v_acc), num_test=100)["fisher_penalty"]
  assert v["status"] == status
  np.testing.assert_allclose(v["fraction_closed"], fraction, atol=1e-9)
  assert v["change_test_examples"] == round((v_acc - 0.90) * 100)
  assert v["tr_f_toward_finetune"] is True


def test_verdict_without_a_gap():
  v = closing_gap.verdicts(_rows(0.93, 0.92, 0.95), num_test=100)["fisher_penalty"]
  assert v["status"] == "no gap" and v["fraction_closed"] is None
  [finding] = closing_gap.findings(None, {"verdicts": {"fisher_penalty": v}})
  assert finding["status"] == "not measured" and "no gap" in finding["ours"]


def test_a_moved_study_reruns_with_nothing_computed(study, tmp_path, capsys):
  """``mv`` of the study directory (the original gone): the scheduled runs' configs name the scores
  file at its old place, yet the moved study holds the very same runs (issue 23)."""
  original = study["workdir"]
  moved = str(tmp_path / "elsewhere" / "study")
  os.makedirs(os.path.dirname(moved))
  shutil.move(original, moved)
  try:
    assert not os.path.exists(original)
    before = {n: _lines(os.path.join(r["workdir"].replace(original, moved), "metrics.jsonl"))
              for n, r in _variant_runs(study).items()}
    capsys.readouterr()
    again = run_study(study["config"], moved, stages_to_run=STAGES)
    assert again["cache"]["computed"] == []
    for name, r in again["closing_gap"]["runs"].items():
      assert r["workdir"].startswith(moved + os.sep)
      assert _lines(os.path.join(r["workdir"], "metrics.jsonl")) == before[name]  # nothing trained
    assert again["closing_gap"]["rows"] == study["results"]["closing_gap"]["rows"]
  finally:
    shutil.move(moved, original)


def _lines(path):
  with open(path) as f:
    return f.read().splitlines()
