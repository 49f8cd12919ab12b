"""The dynamic-sparsity stage: does RigL from Init-S (Sol-R) move Sol-S toward Sol-F?

Sol-R (``study.sol_r``; ``configs/rigl95.py``) starts from exactly Sol-S's Init-S and mask and trains
as many epochs, its mask changing every ``dst.update_every`` steps (``snnjax.train.dst``). The stage
reads what the other stages measured of Sol-F, Sol-S and Sol-R and adds:

* how much of the mask changed over training, per prunable layer: per epoch, the fraction of the
  layer's active weights that are not active in the initial mask (``mask_change`` of each epoch
  record; ``mask_change_all`` over all prunable weights), for every Sol-R run (figure and table);
* per metric (test accuracy, Tr(F), Tr(H), the Jacobian norm: the table's; memorization: the
  fraction of noisy labels memorized in the label-noise stage) and sparsity: whether Sol-R lies
  closer to Sol-F than Sol-S does, ``|R - F| < |S - F|`` on the means over seeds, and whether the
  difference ``R - S`` exceeds the noise: the spread between seeds (the ranges over seeds do not
  overlap) with several seeds, else 2 standard errors (the estimators' for Tr(F) / Tr(H) / the
  Jacobian; binomial over the test set or the noisy examples for the accuracies and fractions).

Settings ``config.dynamic_sparsity``: ``update_every`` (> 0 overrides the Sol-R runs'
``dst.update_every``, for setups whose runs have few steps; 0 keeps the training config's).
"""

from __future__ import annotations

import os

import ml_collections

from snnjax.errors import check
from snnjax.studies import figures
from snnjax.studies import findings as findings_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies.markdown import fmt
from snnjax.studies.stage import Stage
from snnjax.train.run_dir import RunDir

REGIME = "rigl"
METRICS = (("test_accuracy", "test accuracy"), ("tr_f", "Tr(F)"), ("tr_h", "Tr(H)"),
           ("jacobian", "the Jacobian norm"), ("memorized", "memorized noisy labels"))


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True
  s.update_every = 0            # > 0: the Sol-R runs' dst.update_every (0 = their config's)
  return s


def validate(config) -> None:
  check(int(config.dynamic_sparsity.update_every) >= 0,
        "study dynamic_sparsity.update_every must be >= 0 (0 = the training config's)")


def plan(config) -> set:
  if not bool(config.get("sol_r", False)):
    return set()
  return runs_lib.sparse_runs(config.sparsities, config.seeds,
                              regimes=runs_lib.sparse_regimes(config))


def adjust_run(study, spec, config) -> None:
  every = int(study.dynamic_sparsity.update_every) if "dynamic_sparsity" in study else 0
  if spec.regime == REGIME and every > 0:
    config.dst.update_every = every


def mask_curves(workdir: str) -> dict:
  """``{"epoch", "mask_updates", "mask_change_all", "mask_change": {layer: [...]}}`` per epoch
  of a dynamic-sparse run's ``metrics.jsonl``, from epoch 0 (the initial mask: no change)."""
  records = [r for r in RunDir(workdir).epoch_records() if "mask_change" in r]
  layers = list(records[0]["mask_change"]) if records else []
  # Epoch 0: the initial mask itself.
  records = [{"epoch": 0, "mask_updates": 0, "mask_change_all": 0.0,
              "mask_change": dict.fromkeys(layers, 0.0)}] + records
  return {"epoch": [r["epoch"] for r in records],
          "mask_updates": [r["mask_updates"] for r in records],
          "mask_change_all": [r["mask_change_all"] for r in records],
          "mask_change": {k: [r["mask_change"].get(k) for r in records] for k in layers}}


def table_comparisons(rows: list[dict], metric: str, num_test: int) -> list[dict]:
  """Per sparsity with Sol-F, Sol-S and Sol-R rows in the table: ``findings.compare_toward`` of
  ``metric`` (binomial noise over ``num_test`` examples for the test accuracy)."""
  by = {(row["regime"], row["sparsity"]): row for row in rows}
  out = []
  for (regime, sp), row in sorted(by.items(), key=lambda kv: kv[0][1]):
    f, s = by.get(("finetune", sp)), by.get(("scratch", sp))
    if regime != REGIME or f is None or s is None or None in (f[metric], s[metric], row[metric]):
      continue
    n = num_test if metric == "test_accuracy" else 0
    out.append({"sparsity": sp, **findings_lib.compare_toward(f[metric], s[metric], row[metric], binomial_n=n)})
  return out


def memorization_comparisons(label_noise: dict | None, sparsity: float) -> list[dict]:
  """The label-noise stage's memorized fraction (end of training) of Sol-F, Sol-S, Sol-R."""
  by: dict[str, list] = {}
  for r in (label_noise or {}).values():
    by.setdefault(r["regime"], []).append(r["final"])
  if not all(k in by for k in ("finetune", "scratch", REGIME)):
    return []
  cells = {}
  for regime, finals in by.items():
    values = [x["noisy_memorized"] for x in finals if x.get("noisy_memorized") is not None]
    cells[regime] = {"mean": sum(values) / len(values), "values": values, "stderr": None}
  n = int(min(x["num_train"] * x["effective_noise_rate"] for x in by[REGIME]))
  return [{"sparsity": sparsity, **findings_lib.compare_toward(
      cells["finetune"], cells["scratch"], cells[REGIME], binomial_n=n)}]


def compute(ctx) -> dict:
  """``{"runs": {name: {...mask curves}}, "comparisons": {metric: [...]}, "dst": settings}``."""
  rigl = {s: r for s, r in ctx.runs.items() if s.regime == REGIME}
  if not rigl:
    return {}
  out = {"runs": {}, "dst": None}
  for spec, run in sorted(rigl.items()):
    out["runs"][spec.name] = {"label": spec.label, "family": spec.family,
                              "sparsity": spec.sparsity, "seed": spec.seed,
                              **mask_curves(run.workdir)}
    out["dst"] = out["dst"] or run.config.dst.to_dict()
  clean = [r for s, r in rigl.items() if s.family == "clean"]
  num_test = int(len(ctx.dataset(clean[0]).y_test)) if clean else 0
  rows = (ctx.results.get("table") or {}).get("rows", [])
  out["comparisons"] = {m: table_comparisons(rows, m, num_test) for m, _ in METRICS[:-1]}
  out["comparisons"]["memorized"] = memorization_comparisons(
      ctx.results.get("label_noise"), float(ctx.config.label_noise.sparsity))
  return out


def mask_figure(result: dict, path: str) -> str:
  """Per Sol-R run: the fraction of each layer's active weights not in the initial mask, per
  epoch (all prunable weights dashed)."""
  runs = result["runs"]
  fig, axes = figures.plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 3.8), squeeze=False)
  for ax, (name, r) in zip(axes[0], sorted(runs.items())):
    for layer, values in r["mask_change"].items():
      ax.plot(r["epoch"], values, marker=".", label=layer)
    ax.plot(r["epoch"], r["mask_change_all"], color="black", ls="--", label="all prunable")
    ax.set_xlabel("epoch")
    ax.set_ylabel("active weights not in the initial mask (fraction)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{name}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)
  fig.suptitle("Sol-R: how much of the mask RigL changed")
  return figures.save(fig, path)


def _cmp_text(c: dict) -> str:
  noise = ("noise unknown" if c["beyond_noise"] is None else
           f"{'beyond' if c['beyond_noise'] else 'within'} {c['noise']}")
  return (f"{c['sparsity']:.2f}: F {c['finetune']:.4g}, S {c['scratch']:.4g}, R {c['rigl']:.4g} "
          f"(R {'closer to' if c['toward'] else 'not closer to'} F; R - S "
          f"{c['rigl'] - c['scratch']:+.3g}, {noise})")


def report(rc, result) -> list[str]:
  if not result:
    return []
  path = mask_figure(result, os.path.join(rc.outdir, "dynamic_sparsity.png"))
  d = result["dst"] or {}
  md = ["## Dynamic sparse training (Sol-R)", "",
        "Sol-R: RigL from Sol-S's Init-S and mask, as many epochs; every "
        f"{d.get('update_every')} steps until {d.get('end_fraction')} of training each prunable "
        f"layer drops its lowest-|w| active weights and grows as many where the dense gradient "
        f"is largest (drop fraction {d.get('drop_fraction')}, {d.get('decay')} decay).", "",
        "| run | mask updates | changed, all prunable | changed per layer (end) |",
        "|---|---|---|---|"]
  for name, r in sorted(result["runs"].items()):
    layers = ", ".join(f"{k} {fmt(v[-1] if v else None)}" for k, v in r["mask_change"].items())
    md.append(f"| {name} | {r['mask_updates'][-1] if r['mask_updates'] else 0} | "
              f"{fmt(r['mask_change_all'][-1] if r['mask_change_all'] else None)} | {layers} |")
  md += ["", "Changed: the fraction of the active weights not active in the initial mask.", "",
         f"![mask change]({os.path.basename(path)})", "",
         "| metric | Sol-F vs Sol-S vs Sol-R |", "|---|---|"]
  for metric, label in METRICS:
    cs = result["comparisons"].get(metric, [])
    md.append(f"| {label} | {'; '.join(_cmp_text(c) for c in cs) if cs else '-'} |")
  return md + [""]


def findings(rc, result) -> list[dict]:
  """Per metric: Sol-R lies closer to Sol-F than Sol-S does (at every sparsity)."""
  if not bool(rc.config.get("sol_r", False)):
    return []
  comparisons = (result or {}).get("comparisons", {})
  out = []
  for metric, label in METRICS:
    cs = comparisons.get(metric, [])
    out.append(findings_lib.finding(
        f"dynamic_sparsity_{metric}",
        f"dynamic sparse training (RigL from Init-S, Sol-R) moves Sol-S toward Sol-F in {label}",
        "not in the study (RigL: Evci et al. 2020)",
        "; ".join(_cmp_text(c) for c in cs) if cs else "-", findings_lib.verdict_toward(cs)))
  return out


STAGE = Stage(name="dynamic_sparsity", default_settings=default_settings, validate=validate,
              plan=plan, compute=compute, report=report, findings=findings,
              needs=("table", "label_noise"), adjust_run=adjust_run)
