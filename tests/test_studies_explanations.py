"""The competing-explanations stages (gradient_flow, lottery, masks_at_init, explanations) on the
tiny study (digits subset, a small CNN, two-epoch runs), with few variants: one mask source,
one-shot tickets (IMP's chain is checked on its configs; tests/test_imp.py trains one)."""

import json
import os

import jax
import numpy as np
import pytest

from _study_configs import tiny_study
from snnjax.studies import cache as cache_lib
from snnjax.studies import study as study_lib
from snnjax.studies.stages import explanations, gradient_flow, lottery
from snnjax.studies.study import run_study
from snnjax.train import config_io
from snnjax.train.run_dir import RunDir
from snnjax.train.solution import load_solution

STAGES = ("solutions", "gradient_flow", "lottery", "masks_at_init", "explanations", "report")
OWN = ("gradient_flow", "lottery", "masks_at_init", "explanations")


def tiny_config():
  c = tiny_study(hessian_probes=4, jacobian_examples=16)
  for name in ("fisher_trend", "label_noise", "memorization", "disagreement", "interpolation",
               "sanity", "per_layer", "closing_gap", "dynamic_sparsity"):
    c[name].enabled = False
  for name in OWN:
    c[name].enabled = True
  c.sol_r = False
  c.lottery.imp_rounds = 1
  c.lottery.alphas = (0.0, 0.5, 1.0)
  c.lottery.bn_examples = 100
  c.masks_at_init.sources = ("synflow",)
  c.masks_at_init.synflow_rounds = 5
  c.masks_at_init.shuffle_reference = False
  return c


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("explanations"))
  config = tiny_config()
  results = run_study(config, workdir, stages_to_run=STAGES)
  runs = study_lib.resolve(config, cache_lib.StageCache(workdir))
  return {"workdir": workdir, "config": config, "results": results, "runs": runs}


def _ref(study, regime):
  return next(r for s, r in study["runs"].items() if s.family == "clean" and s.regime == regime)


def test_gradient_flow_records_and_verdicts(study):
  result = study["results"]["gradient_flow"]
  entry = result["per_seed"]["seed0"]
  assert set(entry) == set(gradient_flow.CURVES)
  for name, e in entry.items():
    assert e["curve"]["step"] == list(range(12)), name       # every step of 2 x 6 steps
    assert e["early"]["count"] == 6 and e["early"]["init"] == e["curve"]["value"][0] > 0
  # the table's Sol-S keeps its identity: the record is a runtime field
  scratch = _ref(study, "scratch")
  assert scratch.config.grad_norm_every == 1
  plain = json.loads(json.dumps(config_io.config_to_dict(scratch.config)))
  plain["grad_norm_every"] = 0
  assert config_io.identity_hash(plain) == RunDir(scratch.workdir).identity
  # the sparse-aware variant: Sol-S's mask, its kept weights redrawn, pruned ones 0
  sa = load_solution(os.path.join(study["workdir"], "runs", entry["sparse_aware"]["run"], "init"))
  s0 = RunDir(scratch.workdir).init_solution()
  for a, b in zip(jax.tree.leaves(sa.mask), jax.tree.leaves(s0.mask)):
    np.testing.assert_array_equal(a, b)
  assert sa.config.mask.init == "sparse_aware"
  assert set(result["comparisons"]) >= {"raise", "gap", "lottery", "early"}


def test_lottery_tickets_segments_and_findings(study):
  result = study["results"]["lottery"]
  e = result["per_seed"]["seed0"]
  assert e["rewind_step"] == 1 and e["dense_steps"] == 12   # max(1, round(0.03 * 12))
  dense = _ref(study, "dense")
  assert tuple(dense.config.save_steps) == (1,)
  assert os.path.isdir(os.path.join(dense.workdir, "rewind", "1"))
  assert set(e["segments"]) == set(lottery.PAIRS) - {"imp_vs_finetune"}
  for seg in e["segments"].values():
    assert all(v["height"] >= 0 for v in seg["barrier"].values())
    assert seg["l2_distance"] > 0 and 0 <= seg["test_disagreement"] <= 1
  # the k = 0 ticket: Sol-F's mask on Sol-D's init; the instability copy: the ticket's start
  runs_dir = os.path.join(study["workdir"], "runs")
  names = {n.rsplit("-", 1)[0]: n for n in os.listdir(runs_dir)}
  t0 = RunDir(os.path.join(runs_dir, names["lth-oneshot-k0-0.90-seed0"])).init_solution()
  f0 = RunDir(_ref(study, "finetune").workdir).init_solution()
  d0 = RunDir(dense.workdir).init_solution()
  for m, mf, w, wd in zip(*(jax.tree.leaves(x) for x in (t0.mask, f0.mask, t0.params, d0.params))):
    np.testing.assert_array_equal(m, mf)
    np.testing.assert_array_equal(np.asarray(w), np.where(np.asarray(m), np.asarray(wd), 0))
  tk = RunDir(os.path.join(runs_dir, names["lth-oneshot-k-0.90-seed0"])).init_solution()
  tko = RunDir(os.path.join(runs_dir, names["lth-oneshot-k-order-0.90-seed0"]))
  for a, b in zip(jax.tree.leaves(tk.params), jax.tree.leaves(tko.init_solution().params)):
    np.testing.assert_array_equal(a, b)
  assert tko.config.order_seed == lottery.ORDER_OFFSET
  rows = lottery.findings(study_lib_report_context(study), result)
  assert [r["name"] for r in rows] == ["lottery_accuracy", "lottery_connected",
                                       "lottery_stability", "lottery_distance"]


def study_lib_report_context(study):
  from snnjax.studies.stage import ReportContext  # pylint: disable=import-outside-toplevel
  return ReportContext(study["config"], study["results"], "", False)


def test_imp_rounds_chain_their_parents_and_sparsities(study):
  config = tiny_config()
  config.lottery.imp_rounds = 3
  config.sparsities = (0.875,)
  cache = cache_lib.StageCache(study["workdir"])
  refs = {"dense": (None, _ref(study, "dense")), "finetune": (None, _ref(study, "finetune"))}
  rounds = lottery.imp_rounds(config, cache, refs, 0.875, 0, k=1)
  assert [r.config.sparsity for r in rounds] == [0.5, 0.75, 0.875]
  assert rounds[0].config.dense_workdir == _ref(study, "dense").workdir
  assert [r.config.dense_workdir for r in rounds[1:]] == [r.workdir for r in rounds[:-1]]
  assert all(r.config.regime == "lottery" and r.config.mask.rewind_step == 1 for r in rounds)
  assert len({r.hash for r in rounds}) == 3


def test_masks_at_init_and_the_shuffle(study):
  result = study["results"]["masks_at_init"]
  entry = result["per_seed"]["seed0"]
  assert set(entry) == {"prune_dense", "synflow", "synflow-shuffled"}
  a, b = entry["synflow"]["densities"], entry["synflow-shuffled"]["densities"]
  assert a == b                                    # the shuffle keeps every layer's count
  assert set(result["comparisons"]) == {"synflow"}


def test_report_and_side_by_side(study):
  report = os.path.join(study["workdir"], "report")
  with open(os.path.join(report, "report.md")) as f:
    text = f.read()
  for title in ("## Gradient flow", "## Lottery tickets with rewinding", "## Masks found at",
                "## Competing explanations, side by side"):
    assert title in text
  for figure in ("gradient_flow.png", "lottery.png", "masks_at_init.png"):
    assert os.path.getsize(os.path.join(report, figure)) > 0
  with open(os.path.join(report, "results.json")) as f:
    saved = json.load(f)
  names = [f["name"] for f in saved["findings"]]
  for name in ("gradient_flow_raise", "gradient_flow_gap", "lottery_connected",
               "masks_at_init_shuffle_synflow"):
    assert name in names
  assert {f["status"] for f in saved["findings"]} <= set(
      ("reproduced", "not reproduced", "within seed spread", "within sampling noise",
       "not measured"))
  assert explanations.summary(["reproduced", "reproduced"]) == "supported"
  assert explanations.summary(["reproduced", "not reproduced"]) == "mixed"
  assert explanations.summary([]) == "not measured"


def test_a_rerun_computes_nothing(study):
  cache = cache_lib.StageCache(study["workdir"])
  before = sorted(os.listdir(os.path.join(study["workdir"], "runs")))
  run_study(study["config"], study["workdir"], stages_to_run=STAGES)
  assert sorted(os.listdir(os.path.join(study["workdir"], "runs"))) == before
  del cache


def test_settings_are_validated():
  from snnjax.errors import UserError  # pylint: disable=import-outside-toplevel
  for stage, field, value in (("lottery", "imp_rounds", 0), ("lottery", "rewind_fraction", 1.5),
                              ("gradient_flow", "every", 0), ("masks_at_init", "sources", ("x",))):
    c = tiny_config()
    with c[stage].ignore_type():
      c[stage][field] = value
    with pytest.raises(UserError, match=f"{stage}.{field}"):
      study_lib.validate(c)
