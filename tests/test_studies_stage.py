"""The stage contract and the registry: defaults, plans, hooks, and adding a stage."""

import os

import ml_collections
import pytest

from snnjax.errors import UserError
from snnjax.studies import cache as cache_lib
from snnjax.studies import report
from snnjax.studies import runs as runs_lib
from snnjax.studies import stages as stages_lib
from snnjax.studies import study as study_lib
from snnjax.studies.runs import RunSpec
from snnjax.studies.stage import Stage
from snnjax.studies.stages import fisher_trend, label_noise, sanity
from snnjax.train import config_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(ROOT, "configs", "study.py")


def _quick():
  return config_io.load_config_spec(f"{STUDY}:quick")


def test_registry_order_and_names():
  assert stages_lib.NAMES == ("table", "regimes", "sanity", "per_layer", "fisher_trend",
                              "label_noise", "memorization", "disagreement", "interpolation",
                              "closing_gap", "dynamic_sparsity", "gradient_flow", "lottery",
                              "masks_at_init", "explanations")
  assert study_lib.STAGES == ("solutions",) + stages_lib.NAMES + ("report",)
  assert stages_lib.get("sanity") is sanity.STAGE
  with pytest.raises(KeyError):
    stages_lib.get("bogus")


@pytest.mark.parametrize("stage", stages_lib.REGISTRY, ids=lambda s: s.name)
def test_every_stage_owns_its_settings(stage):
  config = study_lib.default_config()
  settings = stage.default_settings()
  assert isinstance(settings, ml_collections.ConfigDict)
  assert stage.settings(config).to_dict() == settings.to_dict()
  assert stage.enabled(config)
  stage.validate(config)  # the defaults are valid
  for spec in stage.plan(config):
    assert isinstance(spec, RunSpec)


def test_the_plan_is_the_union_of_the_enabled_stages_plans():
  c = _quick()
  union = set()
  for stage in stages_lib.REGISTRY:
    union |= set(stage.plan(c))
  union |= {s.dense() for s in union}
  assert set(study_lib.plan(c)) == union
  c.label_noise.enabled = False
  assert not any(s.family == "noisy" for s in study_lib.plan(c))
  c.disagreement.long_tailed = False
  assert not any(s.family == "longtail" for s in study_lib.plan(c))


def test_a_stage_validates_its_own_settings():
  c = _quick()
  c.regimes.threshold = -1.0
  with pytest.raises(UserError, match="regimes.threshold"):
    study_lib.validate(c)
  c = _quick()
  c.interpolation.seeds = (7,)
  with pytest.raises(UserError, match="interpolation.seeds must be some of the study seeds"):
    study_lib.validate(c)
  c = _quick()
  del c["sanity"]
  with pytest.raises(UserError, match="no sanity settings"):
    study_lib.validate(c)


def test_hooks_configure_the_stages_families():
  c = _quick()
  noisy = study_lib.training_config(c, RunSpec("noisy", "scratch", 0.95, 0), "/d")
  assert (noisy.dataset.label_noise, noisy.dataset.noise_kind) == (0.3, "uniform")
  tail = study_lib.training_config(c, RunSpec("longtail", "dense", 0.0, 0))
  assert tail.dataset.imbalance_ratio == 10.0
  clean = study_lib.training_config(c, RunSpec("clean", "finetune", 0.90, 0), "/d")
  assert clean.dataset.label_noise == 0.0 and clean.dataset.imbalance_ratio == 1.0
  assert fisher_trend.keeps_checkpoints(c, RunSpec("clean", "finetune", 0.90, 0))
  assert clean.checkpoint_every_epochs == c.fisher_trend.every_epochs
  assert clean.checkpoint_keep == clean.num_epochs // c.fisher_trend.every_epochs + 2
  # the gradient_flow stage records the gradient norm of Sol-F / Sol-S at its sparsity (0.94)
  recorded = study_lib.training_config(c, RunSpec("clean", "finetune", 0.94, 0), "/d")
  assert recorded.grad_norm_every == c.gradient_flow.every
  c.gradient_flow.enabled = False
  other = study_lib.training_config(c, RunSpec("clean", "finetune", 0.94, 0), "/d")
  assert not fisher_trend.keeps_checkpoints(c, RunSpec("clean", "finetune", 0.94, 0))
  plain = runs_lib.training_config(c, RunSpec("clean", "finetune", 0.94, 0), "/d")
  assert other.to_dict() == plain.to_dict()  # no hook touches a run it does not own
  recorded.grad_norm_every = 0
  assert recorded.to_dict() == plain.to_dict()  # only that runtime field


def test_sanity_checks_the_first_seed_at_the_smallest_sparsity():
  specs = [RunSpec("clean", r, s, seed) for seed in (0, 1) for r, s in
           (("dense", 0.0), ("finetune", 0.9), ("scratch", 0.9), ("finetune", 0.96))]
  chosen = sanity.checked_runs({s: None for s in specs})
  assert [s.name for s in chosen] == ["clean-dense-seed0", "clean-finetune-0.90-seed0",
                                      "clean-scratch-0.90-seed0"]


def _final(memorized, correct, noise=0.3, n=1000):
  return {"noisy_memorized": memorized, "noisy_correct": correct, "test_accuracy": 0.8,
          "num_train": n, "effective_noise_rate": noise}


def test_label_noise_finding_against_binomial_noise():
  def status(f_mem, s_mem, n):
    result = {"a": {"regime": "finetune", "seed": 0, "final": _final(f_mem, 0.5, n=n)},
              "b": {"regime": "scratch", "seed": 0, "final": _final(s_mem, 0.5, n=n)}}
    return label_noise.findings(None, result)[0]["status"]
  # 300 noisy examples, fractions near 0.5: 2 SE of the difference is about 0.08
  assert status(0.50, 0.45, 1000) == "within sampling noise"
  assert status(0.50, 0.30, 1000) == "reproduced"
  assert status(0.30, 0.50, 1000) == "not reproduced"
  # many more examples: the same 0.05 difference is beyond the noise
  assert status(0.50, 0.45, 100000) == "reproduced"
  assert label_noise.findings(None, None)[0]["status"] == "not measured"


def test_adding_a_stage_is_one_module_and_one_registry_line(tmp_path, monkeypatch):
  """A stage registered at the end runs after the others, and its section and findings rows
  reach the report; nothing else changes."""
  def compute(ctx):
    return {"clean_runs": len(ctx.clean), "table_rows": len(ctx.results["table"]["rows"])}

  def report_section(rc, result):
    return ["## Counting", "", f"{result['clean_runs']} clean runs.", ""]

  def findings(rc, result):
    if result is None:
      return [{"name": "count", "claim": "c", "study": "-", "ours": "-",
               "status": "not measured"}]
    return [{"name": "count", "claim": "c", "study": "-", "ours": str(result["clean_runs"]),
             "status": "reproduced"}]

  counting = Stage(name="counting", default_settings=lambda: ml_collections.ConfigDict(
      {"enabled": True}), validate=lambda config: None, compute=compute,
      report=report_section, findings=findings, needs=("table",))
  monkeypatch.setattr(stages_lib, "REGISTRY", stages_lib.REGISTRY + (counting,))
  monkeypatch.setattr(stages_lib, "NAMES", stages_lib.NAMES + ("counting",))
  config = study_lib.default_config()
  assert "counting" in config
  assert [s.name for s in study_lib._selected(config, ("counting",))] == ["table", "counting"]

  class Ctx:
    clean = {RunSpec("clean", "dense", 0.0, 0): None}
    results = {"table": {"rows": [1, 2]}}
  results = {"counting": compute(Ctx), "runs": {}, "wall_times_s": {}}
  path = report.write_report(config, results, str(tmp_path))
  text = open(path).read()
  assert "## Counting" in text and "1 clean runs." in text
  saved = cache_lib.read_json(os.path.join(tmp_path, "results.json"))
  assert {"name": "count", "claim": "c", "study": "-", "ours": "1", "status": "reproduced",
          "setups_match": False} in saved["findings"]
