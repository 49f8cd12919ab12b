"""The masks-at-initialization stage: SNIP, GraSP and SynFlow masks trained like Sol-S, and the
layerwise-shuffle control of every mask source (Frankle et al. 2021, "Pruning Neural Networks at
Initialization: Why Are We Missing the Mark?").

Per seed, at the stage's sparsity, each source's mask is found on the very Init-S the table's Sol-S
starts from (same seed) and trained with Sol-S's config (schedule, epochs): ``mask.source`` =
``snip`` / ``grasp`` (scored on ``score_examples`` training examples) or ``synflow`` (data-free,
``synflow_rounds`` rounds on an exponential schedule), ``scope`` global (default) or layerwise
(``snnjax.sparsity.init_scores``). The control: the same run with each prunable layer's mask
permuted at random (``mask.shuffle``: every layer keeps its count, so its density), for every
source and for Sol-S's own mask (Sol-F's, ``prune_dense``). If the shuffled mask trains as well as
its source, the layer densities, not the positions, carry what the source found: the gap between
Sol-S and Sol-F is then in the weights, not in which connections are kept.
"""

from __future__ import annotations

import os

import ml_collections

from snnjax import sparsity
from snnjax.errors import check
from snnjax.studies import cache as cache_lib
from snnjax.studies import competing as ex
from snnjax.studies import figures
from snnjax.studies import findings as findings_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies.markdown import fmt
from snnjax.studies.stage import Stage
from snnjax.train.run_dir import RunDir

NAME = "masks_at_init"
SOURCES = sparsity.init_scores.SOURCES
REFERENCE = "prune_dense"   # Sol-S's own mask (Sol-F's: magnitude pruning of Sol-D)
LABELS = {"prune_dense": "Sol-S (Sol-F's mask)", "snip": "SNIP", "grasp": "GraSP",
          "synflow": "SynFlow"}


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True               # configs/study.py: on in the quick preset only
  s.sparsity = 0.0               # 0 = the middle of config.sparsities
  s.sources = SOURCES
  s.scope = "global"             # global | layerwise
  s.score_examples = 256         # snip / grasp minibatch
  s.synflow_rounds = 100
  s.shuffle_reference = True     # also shuffle Sol-S's own mask
  s.seeds = ()
  return s


def validate(study) -> None:
  g = study.masks_at_init
  check(float(g.sparsity) == 0.0 or 0.0 < float(g.sparsity) < 1.0,
        "study masks_at_init.sparsity must lie in (0, 1) (or 0: the middle of sparsities)")
  sources = tuple(g.sources)
  check(set(sources) <= set(SOURCES) and len(set(sources)) == len(sources),
        f"study masks_at_init.sources must name some of {SOURCES} once each, got {sources}")
  check(g.scope in ("global", "layerwise"), "study masks_at_init.scope must be global or layerwise")
  check(int(g.score_examples) >= 1, "study masks_at_init.score_examples must be >= 1")
  check(1 <= int(g.synflow_rounds) <= 10_000, "study masks_at_init.synflow_rounds must lie in [1, 10000]")


def plan(study) -> set:
  return ex.plan(study, NAME)


def _name(source: str, shuffled: bool, sparsity_: float, seed: int) -> str:
  return f"mai-{source}{'-shuffled' if shuffled else ''}-{sparsity_:.2f}-seed{seed}"


def variants(study, runs, cache, seed: int) -> dict:
  """``{(source, shuffled): Run}`` of one seed (the table's Sol-S is ``(prune_dense, False)``)."""
  g = study.masks_at_init
  sp = ex.stage_sparsity(study, NAME)
  refs = ex.references(runs, sp, seed, NAME)
  spec, scratch = refs["scratch"]
  out = {(REFERENCE, False): scratch}
  for source in tuple(g.sources):
    for shuffled in (False, True):
      out[(source, shuffled)] = ex.variant(
          cache, study, _name(source, shuffled, sp, seed), spec, scratch.config, None,
          **{"mask.source": source, "mask.shuffle": shuffled, "mask.scope": str(g.scope),
             "mask.score_examples": int(g.score_examples),
             "mask.synflow_rounds": int(g.synflow_rounds)})
  if bool(g.shuffle_reference):
    out[(REFERENCE, True)] = ex.variant(
        cache, study, _name(REFERENCE, True, sp, seed), spec, scratch.config, refs["dense"][1],
        **{"mask.shuffle": True})
  return out


def own_runs(ctx) -> dict:
  out = {}
  for seed in runs_lib.stage_seeds(ctx.config, NAME):
    for key, run in variants(ctx.config, ctx.clean, ctx.cache, seed).items():
      if key != (REFERENCE, False):
        out[runs_lib.run_name(run)] = run
  return out


def _densities(run) -> dict:
  mask = RunDir(run.workdir).init_solution().mask
  return {k: v[2] for k, v in sparsity.layer_densities(mask).items()}


def compute(ctx) -> dict:
  study = ctx.config
  sp = ex.stage_sparsity(study, NAME)
  out = {"sparsity": sp, "settings": cache_lib.to_json(study.masks_at_init), "per_seed": {},
         "runs": {}}
  num_test = 0
  for seed in runs_lib.stage_seeds(study, NAME):
    vs = variants(study, ctx.clean, ctx.cache, seed)
    out["runs"].update(ex.train([r for k, r in vs.items() if k != (REFERENCE, False)],
                                ctx.datasets, NAME))
    num_test = int(len(ctx.dataset(vs[(REFERENCE, False)]).y_test))
    out["per_seed"][f"seed{seed}"] = {
        f"{source}{'-shuffled' if shuffled else ''}": {
            "source": source, "shuffled": shuffled, **ex.final(run), "densities": _densities(run)}
        for (source, shuffled), run in vs.items()}
  out["num_test"] = num_test
  out["comparisons"] = comparisons(out)
  return out


def comparisons(result: dict) -> dict:
  """Per source with a shuffled run: test accuracy of the shuffled mask vs the source's."""
  per = list(result["per_seed"].values())
  out = {}
  for key in per[0] if per else []:
    if key.endswith("-shuffled"):
      source = key[:-len("-shuffled")]
      a = ex.cell([e[source]["test_accuracy"] for e in per])
      b = ex.cell([e[key]["test_accuracy"] for e in per])
      out[source] = ex.compare_same(a, b, binomial_n=int(result["num_test"]))
  return out


def figure(result: dict, path: str) -> str:
  seed_key = sorted(result["per_seed"])[0]
  entry = result["per_seed"][seed_key]
  sources = [s for s in LABELS if s in entry]
  fig, ax = figures.plt.subplots(1, 1, figsize=(8, 4))
  for i, source in enumerate(sources):
    for j, key in enumerate((source, f"{source}-shuffled")):
      if key in entry and entry[key]["test_accuracy"] is not None:
        ax.bar(i + 0.38 * j, entry[key]["test_accuracy"], 0.36,
               color="#1f77b4" if j == 0 else "#aec7e8", label=("as found", "shuffled per layer")[j]
               if i == 0 else None)
  ax.set_xticks([i + 0.19 for i in range(len(sources))])
  ax.set_xticklabels([LABELS[s] for s in sources], fontsize=8)
  values = [e["test_accuracy"] for e in entry.values() if e["test_accuracy"] is not None]
  if values:
    ax.set_ylim(max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.02))
  ax.set_ylabel("test accuracy")
  ax.grid(alpha=0.3, axis="y")
  ax.legend(loc="best")
  ax.set_title(f"Masks found at init vs their layerwise shuffles ({seed_key}, sparsity "
               f"{result['sparsity']:.2f})")
  return figures.save(fig, path)


def report(rc, result) -> list[str]:
  if not result:
    return []
  path = figure(result, os.path.join(rc.outdir, "masks_at_init.png"))
  g = result["settings"]
  md = ["## Masks found at initialization and the shuffle control (Frankle et al. 2021)", "",
        f"Sparsity {result['sparsity']:.2f}, {g['scope']} scores on Sol-S's Init-S: SNIP |g w| "
        f"and GraSP -w (H g) on {g['score_examples']} training examples (BatchNorm in train mode; "
        f"no GraSP temperature), SynFlow |w dR/dw| data-free in {g['synflow_rounds']} rounds "
        "(exponential schedule). Each mask is trained like Sol-S; 'shuffled' permutes each "
        "prunable layer's mask at random (its count kept).", "",
        "| mask | seed | test acc | train acc | layer densities |", "|---|---|---|---|---|"]
  for key, entry in sorted(result["per_seed"].items()):
    for name, e in entry.items():
      dens = ", ".join(f"{k.split('/')[0]} {v:.3f}" for k, v in e["densities"].items())
      label = LABELS[e["source"]] + (", shuffled" if e["shuffled"] else "")
      md.append(f"| {label} | {key} | {fmt(e['test_accuracy'], 4)} | "
                f"{fmt(e['train_accuracy'], 4)} | {dens} |")
  return md + ex.section_end(path, "masks at init", findings(rc, result), result["runs"])


def findings(rc, result) -> list[dict]:
  if not rc.config.get(NAME, {}).get("enabled", False):
    return []
  c = (result or {}).get("comparisons", {})
  study = "not in the study (Frankle et al. 2021)"
  sources = tuple(rc.config.masks_at_init.sources) + (
      (REFERENCE,) if rc.config.masks_at_init.shuffle_reference else ())
  out = []
  for source in sources:
    cmp_ = c.get(source)
    out.append(findings_lib.finding(
        f"masks_at_init_shuffle_{source}",
        f"a layerwise-shuffled {LABELS[source]} mask trains as well as the mask itself", study,
        ex.describe_same(cmp_, "as found", "shuffled") if cmp_ else "-",
        ex.verdict_same([cmp_] if cmp_ else [])))
  return out


STAGE = Stage(name=NAME, default_settings=default_settings, validate=validate, plan=plan,
              compute=compute, report=report, findings=findings, own_runs=own_runs)
