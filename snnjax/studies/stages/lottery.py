"""The lottery-ticket stage: tickets with rewinding, linear mode connectivity and instability
(Frankle et al., ICML 2020; Evci et al., AAAI 2022: tickets re-learn the pruning solution).

Per seed, at the stage's sparsity s, beside the table's Sol-D, Sol-F and Sol-S (runs of
``regime=lottery``, ``snnjax.train.starting_point``; each a run with its own identity, cached and
resumable like every run):

* **one-shot tickets**: Sol-D's global magnitude mask at s (Sol-F's very mask) on Sol-D's weights
  at step k: k = 0 (its init: the original lottery ticket) and an early k = round(
  ``rewind_fraction`` x Sol-D's steps) (at least 1), saved by Sol-D itself (``save_steps``, set on
  the table's Sol-D by this stage; not part of its identity);
* **IMP with rewinding** (``imp_rounds`` = n >= 2): round r prunes the previous round's solution
  globally by magnitude to sparsity 1 - (1 - s)^(r / n) (the same fraction of the remaining
  weights each round; round 1 prunes Sol-D), nested in its mask, and rewinds the survivors to
  Sol-D's step k; round n is at s;
* **instability pairs**: a copy of Sol-S and of the rewound (k) ticket with another data order
  (``order_seed`` = seed + ``ORDER_OFFSET``: the same init and mask, other shuffles and
  augmentation).

Every rewound run trains the sparse runs' schedule from the rewound weights, with fresh momentum
(open_lth continues the dense schedule from iteration k instead).

Along the segment between two solutions (``snnjax.interpolate``: the union of their masks,
BatchNorm statistics recomputed at every point, ``alphas``) it reports the barriers (max over
alpha in [0, 1] of the test error / loss above the chord between the endpoints; Frankle et al.
report the error), the L2 distance and the functional distance (fraction of test predictions
that differ) of: Sol-S vs Sol-F, each ticket vs Sol-F, and the two instability pairs.
"Linearly connected" means a test-error barrier of at most ``barrier_threshold`` (Frankle et al.
call a network stable when its instability is within 2%).
"""

from __future__ import annotations

import os

import ml_collections

import snnjax
from snnjax.errors import UserError, check
from snnjax.studies import cache as cache_lib
from snnjax.studies import competing as ex
from snnjax.studies import figures
from snnjax.studies import findings as findings_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies.markdown import fmt
from snnjax.studies.stage import Stage

NAME = "lottery"
ORDER_OFFSET = 10_000
PAIRS = {  # name: (a, b, label)
    "scratch_vs_finetune": ("scratch", "finetune", "Sol-S vs Sol-F"),
    "ticket0_vs_finetune": ("ticket0", "finetune", "ticket (k = 0) vs Sol-F"),
    "ticketk_vs_finetune": ("ticketk", "finetune", "rewound ticket (k) vs Sol-F"),
    "imp_vs_finetune": ("imp", "finetune", "IMP ticket (k) vs Sol-F"),
    "scratch_instability": ("scratch", "scratch_order", "Sol-S vs Sol-S, other data order"),
    "ticketk_instability": ("ticketk", "ticketk_order", "rewound ticket vs itself, other data order"),
}


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True               # configs/study.py: on in the quick preset only
  s.sparsity = 0.0               # 0 = the middle of config.sparsities
  s.rewind_fraction = 0.03       # early k: this fraction of Sol-D's steps (Frankle et al.: 1-5%)
  s.imp_rounds = 2               # IMP rounds to the sparsity (1: the one-shot tickets only)
  s.alphas = (0.0, 0.25, 0.5, 0.75, 1.0)
  s.bn_examples = 0              # training inputs for the BatchNorm recomputation (0 = all)
  s.barrier_threshold = 0.02     # "linearly connected": a test-error barrier at most this
  s.seeds = ()                   # () = every study seed
  return s


def validate(study) -> None:
  g = study.lottery
  check(float(g.sparsity) == 0.0 or 0.0 < float(g.sparsity) < 1.0,
        "study lottery.sparsity must lie in (0, 1) (or 0: the middle of sparsities)")
  check(0.0 < float(g.rewind_fraction) < 1.0, "study lottery.rewind_fraction must lie in (0, 1)")
  check(1 <= int(g.imp_rounds) <= 8, "study lottery.imp_rounds must lie in [1, 8]")
  alphas = [float(a) for a in g.alphas]
  check(len(alphas) >= 2 and all(0.0 <= a <= 1.0 for a in alphas),
        "study lottery.alphas must be at least two points in [0, 1]")
  check(int(g.bn_examples) >= 0, "study lottery.bn_examples must be >= 0")
  check(0.0 <= float(g.barrier_threshold) < 1.0, "study lottery.barrier_threshold must lie in [0, 1)")


def plan(study) -> set:
  return ex.plan(study, NAME)


def rewind_step(study, dense_config) -> int:
  """k: ``rewind_fraction`` of Sol-D's optimizer steps, rounded, at least 1."""
  return max(1, round(float(study.lottery.rewind_fraction) * ex.total_steps(dense_config)))


def adjust_run(study, spec, config) -> None:
  """The table's Sol-D of the stage's seeds saves its state at step k (a runtime field)."""
  if ("lottery" not in study or not study.lottery.enabled or spec.family != "clean"
      or spec.regime != "dense" or int(spec.seed) not in runs_lib.stage_seeds(study, NAME)):
    return
  config.save_steps = (rewind_step(study, config),)


def _name(kind: str, sparsity: float, seed: int) -> str:
  return f"lth-{kind}-{sparsity:.2f}-seed{seed}"


def oneshot(study, cache, refs: dict, sparsity: float, seed: int, *, rewind: int,
            order_seed: int = -1) -> runs_lib.Run:
  """The one-shot ticket rewound to ``rewind`` (Sol-F's config, regime lottery, on Sol-D)."""
  spec, finetune = refs["finetune"]
  kind = "oneshot-k0" if rewind == 0 else "oneshot-k"
  if order_seed >= 0:
    kind += "-order"
  return ex.variant(cache, study, _name(kind, sparsity, seed), spec, finetune.config,
                    refs["dense"][1], regime="lottery", **{"mask.rewind_step": int(rewind)},
                    order_seed=int(order_seed))


def imp_rounds(study, cache, refs: dict, sparsity: float, seed: int, k: int) -> list:
  """The IMP rounds 1..n (each on the previous; round 1 on Sol-D), rewound to k."""
  n = int(study.lottery.imp_rounds)
  spec, finetune = refs["finetune"]
  out, parent = [], refs["dense"][1]
  for r in range(1, n + 1):
    sp = sparsity if r == n else round(1.0 - (1.0 - sparsity) ** (r / n), 6)
    run = ex.variant(cache, study, _name(f"imp{r}of{n}", sparsity, seed),
                     runs_lib.RunSpec("clean", "finetune", sp, seed), finetune.config, parent,
                     regime="lottery", sparsity=float(sp), **{"mask.rewind_step": int(k)})
    out.append(run)
    parent = run
  return out


def members(study, runs, cache, seed: int) -> dict:
  """``{role: Run}`` of one seed: the references, the tickets, the IMP rounds and the copies."""
  sp = ex.stage_sparsity(study, NAME)
  refs = ex.references(runs, sp, seed, NAME)
  k = rewind_step(study, refs["dense"][1].config)
  scratch_spec, scratch = refs["scratch"]
  out = {"finetune": refs["finetune"][1], "scratch": scratch,
         "ticket0": oneshot(study, cache, refs, sp, seed, rewind=0),
         "ticketk": oneshot(study, cache, refs, sp, seed, rewind=k),
         "ticketk_order": oneshot(study, cache, refs, sp, seed, rewind=k,
                                  order_seed=seed + ORDER_OFFSET),
         "scratch_order": ex.variant(cache, study, _name("scratch-order", sp, seed), scratch_spec,
                                     scratch.config, refs["dense"][1],
                                     order_seed=int(seed) + ORDER_OFFSET)}
  rounds = imp_rounds(study, cache, refs, sp, seed, k) if int(study.lottery.imp_rounds) > 1 else []
  for r, run in enumerate(rounds, 1):
    out[f"imp_round{r}"] = run
  out["imp"] = rounds[-1] if rounds else out["ticketk"]
  return out


def own_runs(ctx) -> dict:
  out = {}
  for seed in runs_lib.stage_seeds(ctx.config, NAME):
    for role, run in members(ctx.config, ctx.clean, ctx.cache, seed).items():
      if role not in ("finetune", "scratch"):
        out[runs_lib.run_name(run)] = run
  return out


def _segment(ctx, a: runs_lib.Run, b: runs_lib.Run, settings) -> dict:
  inputs = {"a": a.hash, "b": b.hash, "alphas": list(settings.alphas),
            "bn_examples": int(settings.bn_examples)}

  def compute():
    r = snnjax.interpolate(a.workdir, b.workdir, alphas=tuple(settings.alphas),
                           dataset=ctx.dataset(a), bn_examples=int(settings.bn_examples))
    keep = ("alphas", "test_accuracy", "test_loss", "train_accuracy", "train_loss", "barrier",
            "l2_distance", "test_disagreement", "same_mask", "mask_density")
    return {k: r[k] for k in keep}
  return ctx.cache.cached(f"lottery-segment-{runs_lib.run_name(a)}-{runs_lib.run_name(b)}",
                          inputs, compute)


def compute(ctx) -> dict:
  study = ctx.config
  g = study.lottery
  sp = ex.stage_sparsity(study, NAME)
  out = {"sparsity": sp, "settings": cache_lib.to_json(g), "per_seed": {}, "runs": {}}
  num_test = 0
  for seed in runs_lib.stage_seeds(study, NAME):
    m = members(study, ctx.clean, ctx.cache, seed)
    own = [r for role, r in m.items() if role not in ("finetune", "scratch", "imp")]
    own.sort(key=lambda r: (r.config.regime != "lottery", r.config.sparsity))
    out["runs"].update(ex.train(own, ctx.datasets, NAME))
    num_test = int(len(ctx.dataset(m["scratch"]).y_test))
    entry = {"rewind_step": int(m["ticketk"].config.mask.rewind_step),
             "dense_steps": ex.total_steps(ex.references(ctx.clean, sp, seed, NAME)["dense"][1].config),
             "final": {role: ex.final(run) for role, run in m.items()},
             "sparsity_of": {role: float(run.config.sparsity) for role, run in m.items()},
             "segments": {}}
    for pair, (a, b, _) in PAIRS.items():
      if pair == "imp_vs_finetune" and int(g.imp_rounds) <= 1:
        continue
      entry["segments"][pair] = _segment(ctx, m[a], m[b], g)
    out["per_seed"][f"seed{seed}"] = entry
  out["num_test"] = num_test
  out["comparisons"] = comparisons(out, float(g.barrier_threshold))
  return out


def estimate(costs) -> float:
  """The segments' evaluations (the variants' training is in the dry run's solutions line):
  per alpha a BatchNorm recomputation and the train and test sets evaluated."""
  g = costs.config.lottery
  seconds = 0.0
  for seed in runs_lib.stage_seeds(costs.config, NAME):
    try:
      refs = ex.references(costs.clean, ex.stage_sparsity(costs.config, NAME), seed, NAME)
    except UserError:  # the table's runs are not planned at this sparsity and seed
      continue
    spec, scratch = refs["scratch"]
    if costs.has(NAME, scratch.hash):
      continue
    d, _, f = costs.unit(spec.name)
    bn = int(g.bn_examples) or d.num_train
    pairs = len(PAIRS) - (1 if int(g.imp_rounds) <= 1 else 0)
    seconds += pairs * len(g.alphas) * (costs.TRAIN_MODE_F * bn + d.num_train + d.num_test) * f
  return seconds


def _barriers(result: dict, pair: str, q: str = "test_error") -> list[float]:
  return [e["segments"][pair]["barrier"][q]["height"] for e in result["per_seed"].values()
          if pair in e["segments"]]


def comparisons(result: dict, threshold: float) -> dict:
  per = result["per_seed"].values()
  acc = {role: ex.cell([e["final"][role]["test_accuracy"] for e in per])
         for role in ("finetune", "scratch", "ticket0", "ticketk", "imp")}
  n = int(result["num_test"])
  out = {"accuracy": {role: ex.compare_same(acc["finetune"], acc[role], binomial_n=n)
                      for role in ("ticket0", "ticketk", "imp", "scratch")}}
  b = {pair: _barriers(result, pair) for pair in PAIRS}
  out["barriers"] = b
  out["connected"] = {
      "ticket": bool(b["ticketk_vs_finetune"]) and max(b["ticketk_vs_finetune"]) <= threshold,
      "scratch": bool(b["scratch_vs_finetune"]) and max(b["scratch_vs_finetune"]) <= threshold}
  out["stable"] = {
      "ticket": bool(b["ticketk_instability"]) and max(b["ticketk_instability"]) <= threshold,
      "scratch": bool(b["scratch_instability"]) and max(b["scratch_instability"]) <= threshold}
  dist = {pair: [e["segments"][pair]["l2_distance"] for e in per if pair in e["segments"]]
          for pair in PAIRS}
  out["l2"] = dist
  out["closer"] = (bool(dist["ticketk_vs_finetune"]) and bool(dist["scratch_vs_finetune"]) and all(
      t < s for t, s in zip(dist["ticketk_vs_finetune"], dist["scratch_vs_finetune"])))
  return out


def figure(result: dict, path: str) -> str:
  seed_key = sorted(result["per_seed"])[0]
  segs = result["per_seed"][seed_key]["segments"]
  fig, axes = figures.plt.subplots(1, 2, figsize=(12, 4.2))
  for pair, seg in segs.items():
    label = PAIRS[pair][2]
    axes[0].plot(seg["alphas"], [1 - a for a in seg["test_accuracy"]], marker="o", ms=3, label=label)
    axes[1].plot(seg["alphas"], seg["test_loss"], marker="o", ms=3, label=label)
  axes[0].set_ylabel("test error")
  axes[1].set_ylabel("test loss (nats)")
  for ax in axes:
    ax.set_xlabel("alpha (0 = first, 1 = second)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)
  fig.suptitle(f"Linear interpolation at sparsity {result['sparsity']:.2f} ({seed_key})")
  return figures.save(fig, path)


def report(rc, result) -> list[str]:
  if not result:
    return []
  path = figure(result, os.path.join(rc.outdir, "lottery.png"))
  g = result["settings"]
  md = ["## Lottery tickets with rewinding, linear mode connectivity (Frankle et al. 2020)", "",
        f"Sparsity {result['sparsity']:.2f}; masks by global magnitude pruning of Sol-D (one-shot) "
        f"or IMP in {g['imp_rounds']} round(s); kept weights rewound to Sol-D's step k (0: its "
        f"init); rewound runs train the sparse schedule with fresh momentum. Barriers along the "
        f"segment (alphas {', '.join(str(a) for a in g['alphas'])}; union of the masks; "
        "BatchNorm statistics recomputed at every point): the most the test error (loss) rises "
        f"above the chord. Linearly connected: test-error barrier <= {g['barrier_threshold']}.", "",
        "| seed | k (of Sol-D's steps) | Sol-F | Sol-S | ticket k=0 | ticket k | IMP ticket k |",
        "|---|---|---|---|---|---|---|"]
  for key, e in sorted(result["per_seed"].items()):
    f = e["final"]
    md.append(f"| {key} | {e['rewind_step']} of {e['dense_steps']} | "
              + " | ".join(fmt(f[r]["test_accuracy"], 4)
                           for r in ("finetune", "scratch", "ticket0", "ticketk", "imp")) + " |")
  md += ["", "Test accuracy at the end of training.", "",
         "| segment | seed | test-error barrier | test-loss barrier | L2 distance | test predictions that differ |",
         "|---|---|---|---|---|---|"]
  for key, e in sorted(result["per_seed"].items()):
    for pair, seg in e["segments"].items():
      b = seg["barrier"]
      md.append(f"| {PAIRS[pair][2]} | {key} | {fmt(b['test_error']['height'], 4)} | "
                f"{fmt(b['test_loss']['height'], 4)} | {fmt(seg['l2_distance'], 3)} | "
                f"{fmt(seg['test_disagreement'], 4)} |")
  return md + ex.section_end(path, "interpolation", findings(rc, result), result["runs"])


def _list(values) -> str:
  return ", ".join(f"{v:.4f}" for v in values) if values else "-"


def findings(rc, result) -> list[dict]:
  if not rc.config.get(NAME, {}).get("enabled", False):
    return []
  c = (result or {}).get("comparisons")
  study = "not in the study (Frankle et al. 2020; Evci et al. 2022)"
  if not c:
    return [findings_lib.finding(f"lottery_{n}", claim, study, "-", "not measured")
            for n, claim in (("accuracy", "rewound tickets match Sol-F's accuracy"),
                             ("connected", "rewound tickets are linearly connected to Sol-F and "
                                           "Sol-S is not"),
                             ("stability", "the rewound ticket is stable to SGD noise and Sol-S "
                                           "is not"),
                             ("distance", "rewound tickets end closer to Sol-F than Sol-S does"))]
  acc = [c["accuracy"]["ticketk"]] + ([c["accuracy"]["imp"]] if "imp" in c["accuracy"] else [])
  b = c["barriers"]
  conn, stable = c["connected"], c["stable"]
  return [
      findings_lib.finding(
          "lottery_accuracy", "rewound tickets match Sol-F's accuracy", study,
          "; ".join(ex.describe_same(x, "Sol-F", w) for x, w in zip(acc, ("ticket k", "IMP k"))),
          ex.verdict_same(acc)),
      findings_lib.finding(
          "lottery_connected", "rewound tickets are linearly connected to Sol-F and Sol-S is not",
          study, f"test-error barrier to Sol-F: ticket k {_list(b['ticketk_vs_finetune'])}, "
                 f"Sol-S {_list(b['scratch_vs_finetune'])} (per seed)",
          findings_lib.verdict(conn["ticket"] and not conn["scratch"])),
      findings_lib.finding(
          "lottery_stability", "the rewound ticket is stable to SGD noise and Sol-S is not "
          "(instability: the barrier between two data orders)", study,
          f"instability: ticket k {_list(b['ticketk_instability'])}, Sol-S "
          f"{_list(b['scratch_instability'])} (per seed)",
          findings_lib.verdict(stable["ticket"] and not stable["scratch"])),
      findings_lib.finding(
          "lottery_distance", "rewound tickets end closer to Sol-F than Sol-S does (they re-learn "
          "the pruning solution)", study,
          f"L2 to Sol-F: ticket k {_list(c['l2']['ticketk_vs_finetune'])}, Sol-S "
          f"{_list(c['l2']['scratch_vs_finetune'])}", findings_lib.verdict(c["closer"])),
  ]


STAGE = Stage(name=NAME, default_settings=default_settings, validate=validate, plan=plan,
              compute=compute, report=report, findings=findings, adjust_run=adjust_run,
              own_runs=own_runs, estimate=estimate)
