"""The gradient-flow stage: does a sparse-aware init raise Sol-S's early gradient norm, and close
part of the gap? (Evci et al., AAAI 2022, "Gradient Flow in Sparse Neural Networks and How
Lottery Tickets Win".)

Their explanation of the sparse-from-scratch gap: a dense init under a mask gives each unit the
variance its dense fan-in calls for, so the masked gradients are weak at the start; the
sparse-aware init (each unit's weights N(0, 2 / its active fan-in), ``mask.init=sparse_aware``,
``snnjax.sparsity.sparse_init``) restores them. The stage trains one variant per seed, Sol-S with
the sparse-aware init (the table's Sol-S config: same mask, seed, schedule; only the kept weights'
init differs), and reads the masked gradient norm ``||mask * g||`` recorded at every
``every``-th step (``grad_norm_every``: g the step's mini-batch gradient at the step's params,
before its update; step 0 is the gradient at the init) of:

* Sol-S with the dense init (the table's, Init-S), Sol-S with the sparse-aware init,
* Sol-F (the table's; its first step is at Init-F, the pruned Sol-D),
* the lottery ticket (Sol-D's mask on Sol-D's own init, rewound to step 0; the lottery stage's
  one-shot k = 0 run, shared).

Findings: the sparse-aware init raises the early gradient norm (mean over the first
``early_epochs`` epochs' recorded steps, above plain Sol-S's beyond the noise: the seed ranges
with several seeds, else 2 standard errors of the per-step means); it closes part of the
test-accuracy gap (``findings.compare_toward`` against Sol-F and Sol-S, binomial noise over the test
set with one seed); the lottery init's early gradient norm is not above Sol-S's (Evci et al.: tickets
do not win by gradient flow).
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from snnjax.errors import check
from snnjax.studies import cache as cache_lib
from snnjax.studies import competing as ex
from snnjax.studies import figures
from snnjax.studies import findings as findings_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies.markdown import fmt
from snnjax.studies.stage import Stage
from snnjax.train.run_dir import RunDir

NAME = "gradient_flow"
CURVES = ("scratch", "sparse_aware", "finetune", "lottery")
LABELS = {"scratch": "Sol-S (dense init, Init-S)", "sparse_aware": "Sol-S (sparse-aware init)",
          "finetune": "Sol-F (from Init-F)", "lottery": "lottery ticket (Sol-D's init, k = 0)"}
COLORS = {"scratch": "#d62728", "sparse_aware": "#2ca02c", "finetune": "#1f77b4",
          "lottery": "#9467bd"}


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True               # configs/study.py: on in the quick preset only
  s.sparsity = 0.0               # 0 = the middle of config.sparsities
  s.every = 1                    # record ||mask * g|| every n-th step of the stage's runs
  s.early_epochs = 1             # "early": the recorded steps of the first n epochs
  s.seeds = ()                   # () = every study seed
  return s


def validate(study) -> None:
  g = study.gradient_flow
  check(float(g.sparsity) == 0.0 or 0.0 < float(g.sparsity) < 1.0,
        "study gradient_flow.sparsity must lie in (0, 1) (or 0: the middle of sparsities)")
  check(int(g.every) >= 1, "study gradient_flow.every must be >= 1")
  check(int(g.early_epochs) >= 1, "study gradient_flow.early_epochs must be >= 1")


def plan(study) -> set:
  return ex.plan(study, NAME)


def adjust_run(study, spec, config) -> None:
  """Records the gradient norm of the table's Sol-S and Sol-F at the stage's sparsity (a
  runtime field: their identities do not change)."""
  if ("gradient_flow" not in study or not study.gradient_flow.enabled or spec.family != "clean"
      or spec.regime not in ("scratch", "finetune")
      or round(spec.sparsity, 6) != ex.stage_sparsity(study, NAME)
      or int(spec.seed) not in runs_lib.stage_seeds(study, NAME)):
    return
  config.grad_norm_every = int(study.gradient_flow.every)


def sparse_aware_name(sparsity: float, seed: int) -> str:
  return f"gf-sparse_aware-{sparsity:.2f}-seed{seed}"


def own_runs(ctx) -> dict:
  return _variants(ctx.config, ctx.clean, ctx.cache)


def _variants(study, runs, cache) -> dict:
  """``{name: Run}``: per seed, Sol-S with the sparse-aware init and the one-shot k = 0 ticket."""
  from snnjax.studies.stages import lottery  # pylint: disable=import-outside-toplevel
  sp = ex.stage_sparsity(study, NAME)
  out = {}
  for seed in runs_lib.stage_seeds(study, NAME):
    refs = ex.references(runs, sp, seed, NAME)
    spec, scratch = refs["scratch"]
    out[sparse_aware_name(sp, seed)] = ex.variant(
        cache, study, sparse_aware_name(sp, seed), spec, scratch.config, refs["dense"][1],
        **{"mask.init": "sparse_aware"})
    ticket = lottery.oneshot(study, cache, refs, sp, seed, rewind=0)
    out[ticket.workdir.rsplit("/", 1)[-1].rsplit("-", 1)[0]] = ticket
  return out


def curve(workdir: str) -> dict:
  """``{"step": [...], "value": [...], "epoch": [...]}``: every recorded gradient norm of a run."""
  out = {"step": [], "value": [], "epoch": []}
  for r in RunDir(workdir).epoch_records():
    g = r.get("grad_norm")
    if g:
      out["step"] += list(g["step"])
      out["value"] += list(g["value"])
      out["epoch"] += [r["epoch"]] * len(g["step"])
  return out


def early(c: dict, epochs: int) -> dict | None:
  """Mean, standard error and count of the recorded norms of the first ``epochs`` epochs, and
  the norm at step 0 (the init)."""
  values = [v for v, e in zip(c["value"], c["epoch"]) if e <= epochs and v is not None]
  if not values:
    return None
  arr = np.asarray(values, np.float64)
  init = c["value"][0] if c["step"] and c["step"][0] == 0 else None
  return {"mean": float(arr.mean()), "stderr": float(arr.std(ddof=1) / np.sqrt(arr.size))
          if arr.size > 1 else None, "count": int(arr.size), "init": init}


def compute(ctx) -> dict:
  study = ctx.config
  g = study.gradient_flow
  sp = ex.stage_sparsity(study, NAME)
  variants = _variants(study, ctx.clean, ctx.cache)
  trained = ex.train(list(variants.values()), ctx.datasets, NAME)
  out = {"sparsity": sp, "settings": cache_lib.to_json(g), "per_seed": {}, "runs": trained}
  num_test = 0
  for seed in runs_lib.stage_seeds(study, NAME):
    refs = ex.references(ctx.clean, sp, seed, NAME)
    num_test = int(len(ctx.dataset(refs["scratch"][1]).y_test))
    from snnjax.studies.stages import lottery  # pylint: disable=import-outside-toplevel
    members = {"scratch": refs["scratch"][1], "finetune": refs["finetune"][1],
               "sparse_aware": variants[sparse_aware_name(sp, seed)],
               "lottery": lottery.oneshot(study, ctx.cache, refs, sp, seed, rewind=0)}
    entry = {}
    for name, run in members.items():
      c = curve(run.workdir)
      entry[name] = {"curve": c, "early": early(c, int(g.early_epochs)), **ex.final(run),
                     "run": os.path.basename(run.workdir)}
    out["per_seed"][f"seed{seed}"] = entry
  out["num_test"] = num_test
  out["comparisons"] = comparisons(out["per_seed"], num_test)
  return out


def _early_cell(per_seed: dict, name: str) -> dict | None:
  entries = [e[name]["early"] for e in per_seed.values() if e[name]["early"] is not None]
  if len(entries) != len(per_seed) or not entries:
    return None
  return {"mean": float(np.mean([x["mean"] for x in entries])),
          "values": [x["mean"] for x in entries],
          "stderr": (float(np.sqrt(np.mean([x["stderr"] ** 2 for x in entries])) / np.sqrt(len(entries)))
                     if all(x["stderr"] is not None for x in entries) else None)}


def _above(a: dict, b: dict) -> dict:
  """Whether cell b lies above cell a beyond the noise (seed ranges, else 2 standard errors)."""
  higher = b["mean"] > a["mean"]
  if len(a["values"]) > 1 and len(b["values"]) > 1:
    beyond, noise = min(b["values"]) > max(a["values"]) or max(b["values"]) < min(a["values"]), \
        "seed spread"
  else:
    noise = "sampling noise"
    beyond = (None if a["stderr"] is None or b["stderr"] is None else
              bool(abs(b["mean"] - a["mean"]) > 2 * np.hypot(a["stderr"], b["stderr"])))
  return {"a": a["mean"], "b": b["mean"], "ratio": b["mean"] / a["mean"] if a["mean"] else None,
          "higher": higher, "beyond_noise": beyond, "noise": noise}


def comparisons(per_seed: dict, num_test: int) -> dict:
  out = {}
  cells = {name: _early_cell(per_seed, name) for name in CURVES}
  if cells["scratch"] and cells["sparse_aware"]:
    out["raise"] = _above(cells["scratch"], cells["sparse_aware"])
  if cells["scratch"] and cells["lottery"]:
    out["lottery"] = _above(cells["scratch"], cells["lottery"])
  acc = {name: ex.cell([e[name]["test_accuracy"] for e in per_seed.values()])
         for name in ("scratch", "finetune", "sparse_aware")}
  if all(acc.values()):
    c = findings_lib.compare_toward(acc["finetune"], acc["scratch"], acc["sparse_aware"],
                                    binomial_n=num_test)
    gap = c["finetune"] - c["scratch"]
    c["fraction_closed"] = (c["rigl"] - c["scratch"]) / gap if gap > 0 else None
    out["gap"] = c
  out["early"] = {k: v for k, v in cells.items()}
  return out


def _above_text(c: dict, a: str, b: str) -> str:
  note = ("noise unknown" if c["beyond_noise"] is None else
          f"{'beyond' if c['beyond_noise'] else 'within'} {c['noise']}")
  return f"early ||mask g||: {b} {c['b']:.4g} vs {a} {c['a']:.4g} (x{c['ratio']:.3g}, {note})"


def figure(result: dict, path: str) -> str:
  seed_key = sorted(result["per_seed"])[0]
  entry = result["per_seed"][seed_key]
  fig, ax = figures.plt.subplots(1, 1, figsize=(8, 4.2))
  for name in CURVES:
    c = entry[name]["curve"]
    if c["step"]:
      ax.plot(c["step"], c["value"], color=COLORS[name], lw=1, label=LABELS[name])
  ax.set_xlabel("step")
  ax.set_ylabel("||mask * g|| (mini-batch gradient, before the step)")
  figures.log_axis(ax)
  ax.grid(alpha=0.3)
  ax.legend(loc="best", fontsize=8)
  ax.set_title(f"Gradient flow at sparsity {result['sparsity']:.2f} ({seed_key})")
  return figures.save(fig, path)


def report(rc, result) -> list[str]:
  if not result:
    return []
  path = figure(result, os.path.join(rc.outdir, "gradient_flow.png"))
  g = result["settings"]
  md = ["## Gradient flow and the sparse-aware init (Evci et al. 2022)", "",
        f"Sparsity {result['sparsity']:.2f}. The sparse-aware init draws each unit's kept weights "
        "from N(0, 2 / n_j), n_j its active inputs (He for the active fan-in; a unit with no "
        "active input keeps zeros); everything else is the table's Sol-S. Recorded: the masked "
        f"mini-batch gradient norm ||mask * g|| every {g['every']} step(s), before each update "
        f"(step 0: at the init); 'early' is the mean over the first {g['early_epochs']} "
        "epoch(s).", "",
        "| run | ||mask g|| at init | early mean | test acc | train acc |", "|---|---|---|---|---|"]
  for seed_key, entry in sorted(result["per_seed"].items()):
    for name in CURVES:
      e = entry[name]
      early_ = e["early"] or {}
      md.append(f"| {LABELS[name]} ({seed_key}) | {fmt(early_.get('init'), 4)} | "
                f"{fmt(early_.get('mean'), 4)} | {fmt(e['test_accuracy'], 4)} | "
                f"{fmt(e['train_accuracy'], 4)} |")
  return md + ex.section_end(path, "gradient flow", findings(rc, result), result["runs"])


def findings(rc, result) -> list[dict]:
  if not rc.config.get(NAME, {}).get("enabled", False):
    return []
  c = (result or {}).get("comparisons", {})
  study = "not in the study (Evci et al. 2022)"
  out = []
  r = c.get("raise")
  out.append(findings_lib.finding(
      "gradient_flow_raise", "the sparse-aware init raises Sol-S's early gradient norm", study,
      _above_text(r, "dense init", "sparse-aware") if r else "-",
      "not measured" if not r else ("reproduced" if r["higher"] and r["beyond_noise"] is not False
                                    and r["beyond_noise"] is not None else
                                    "not reproduced" if r["beyond_noise"] else
                                    "within seed spread" if r["noise"] == "seed spread"
                                    else "within sampling noise")))
  gap = c.get("gap")
  ours = "-" if not gap else (
      f"test acc F {gap['finetune']:.4f}, S {gap['scratch']:.4f}, sparse-aware "
      f"{gap['rigl']:.4f} ({'closer to' if gap['toward'] else 'not closer to'} F"
      + (f", {gap['fraction_closed']:.0%} of the gap" if gap['fraction_closed'] is not None else "")
      + f"; {'beyond' if gap['beyond_noise'] else 'within' if gap['beyond_noise'] is False else 'noise unknown:'} {gap['noise']})")
  out.append(findings_lib.finding(
      "gradient_flow_gap", "the sparse-aware init closes part of the Sol-S / Sol-F gap", study,
      ours, findings_lib.verdict_toward([gap] if gap else [])))
  lt = c.get("lottery")
  out.append(findings_lib.finding(
      "gradient_flow_lottery", "the lottery init's early gradient norm is not above Sol-S's "
      "(tickets do not win by gradient flow)", study,
      _above_text(lt, "Sol-S", "ticket") if lt else "-",
      "not measured" if not lt else ("not reproduced" if lt["higher"] and lt["beyond_noise"]
                                     else "reproduced")))
  return out


def estimate(costs) -> float:
  return 0.0  # the variants' training is in the dry run's solutions line


STAGE = Stage(name=NAME, default_settings=default_settings, validate=validate, plan=plan,
              compute=compute, report=report, findings=findings, estimate=estimate,
              adjust_run=adjust_run, own_runs=own_runs)
