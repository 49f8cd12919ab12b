"""The label-noise stage: memorization (Sol-D, Sol-F and Sol-S trained on noisy labels).

Per epoch (eval-mode BatchNorm, the whole training set unless the run's ``train_eval_size`` says
otherwise), read from each run's ``metrics.jsonl``: accuracy on the labels trained on
(``train_accuracy``, noisy ones included), clean test accuracy, accuracy on the clean training
examples and, over the noisy examples, the fractions ``correct`` (predicts the true label),
``memorized`` (predicts the noisy label) and ``other`` (neither), which sum to 1. The final
breakdown is also recomputed from the final checkpoint (``final``), over the whole training set.
The stage owns the ``noisy`` family of runs (settings ``config.label_noise``).
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from snnjax.errors import check
from snnjax.studies import figures
from snnjax.studies import findings as findings_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies.markdown import fmt
from snnjax.studies.stage import Stage
from snnjax.train import evaluate
from snnjax.train.run_dir import RunDir

CURVE_KEYS = ("train_accuracy", "test_accuracy", "train_clean_accuracy", "train_noisy_correct",
              "train_noisy_memorized", "train_noisy_other")


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True
  s.sparsity = 0.95
  s.rate = 0.3                  # fraction of training labels replaced
  s.kind = "uniform"            # uniform (the study's) | flip (always a different class)
  s.seeds = ()                  # () = every study seed
  return s


def validate(config) -> None:
  ln = config.label_noise
  check(0.0 < float(ln.sparsity) < 1.0, "study label_noise.sparsity must lie in (0, 1)")
  check(0.0 < float(ln.rate) < 1.0, "study label_noise.rate must lie in (0, 1)")
  check(ln.kind in ("uniform", "flip"), "study label_noise.kind must be uniform or flip")


def plan(config) -> set:
  return runs_lib.sparse_runs([config.label_noise.sparsity],
                              runs_lib.stage_seeds(config, "label_noise"), family="noisy",
                              regimes=runs_lib.sparse_regimes(config))


def adjust_run(study, spec, config) -> None:
  if spec.family == "noisy":
    config.dataset.label_noise = float(study.label_noise.rate)
    config.dataset.noise_kind = str(study.label_noise.kind)


def read_curves(workdir: str) -> dict:
  """``{"epoch": [...], key: [...]}`` for the keys of :data:`CURVE_KEYS` (None where missing)."""
  records = [r for r in RunDir(workdir).epoch_records() if "train_accuracy" in r]
  out = {"epoch": [r["epoch"] for r in records]}
  for k in CURVE_KEYS:
    out[k] = [r.get(k) for r in records]
  return out


def final_breakdown(solution, dataset, *, batch_size: int = 500) -> dict:
  """The memorization breakdown of ``solution`` over the whole (noisy) training set."""
  preds = solution.predict(dataset.x_train, batch_size=batch_size).argmax(1)
  out = evaluate.label_noise_breakdown(preds, dataset.y_train, dataset.y_train_true,
                                       dataset.noisy)
  out["train_accuracy"] = float(np.mean(preds == dataset.y_train))
  out["num_train"] = int(dataset.num_train)
  out["effective_noise_rate"] = float(np.mean(dataset.noisy))
  out["test_accuracy"] = solution.evaluate(dataset.x_test, dataset.y_test,
                                           batch_size=batch_size)["accuracy"]
  return out


def compute(ctx) -> dict:
  """``{run name: {"label", "regime", "seed", "curves", "final"}}`` for the noisy runs."""
  out = {}
  for spec, run in sorted(ctx.runs.items()):
    if spec.family != "noisy":
      continue
    def compute_one(run=run):
      return {"curves": read_curves(run.workdir),
              "final": final_breakdown(RunDir(run.workdir).solution(), ctx.dataset(run))}
    result = ctx.cache.cached(f"label_noise-{spec.name}", {"run": run.hash}, compute_one)
    out[spec.name] = {"label": spec.label, "regime": spec.regime, "seed": spec.seed, **result}
  return out


def label_noise_figure(results: dict, path: str) -> str:
  """Per-epoch curves of the noisy runs: train accuracy on the noisy labels, clean test accuracy,
  clean-train accuracy, and on the noisy examples the correct / memorized fractions."""
  panels = [("train_accuracy", "train accuracy on the (noisy) labels trained on"),
            ("test_accuracy", "test accuracy (clean labels)"),
            ("train_clean_accuracy", "accuracy on clean train examples"),
            ("train_noisy", "noisy train examples: fraction")]
  fig, axes = figures.plt.subplots(1, 4, figsize=(17, 3.8))
  multi_seed = len({r["seed"] for r in results.values()}) > 1
  for ax, (key, ylabel) in zip(axes, panels):
    for name, r in sorted(results.items()):
      c = r["curves"]
      color = figures.COLORS[r["regime"]]
      if multi_seed:
        r = {**r, "label": f"{r['label']} seed {r['seed']}"}
      if key == "train_noisy":
        ax.plot(c["epoch"], c["train_noisy_memorized"], color=color, ls="-",
                label=f"{r['label']}: memorized (noisy label)")
        ax.plot(c["epoch"], c["train_noisy_correct"], color=color, ls="--",
                label=f"{r['label']}: correct (true label)")
      else:
        ax.plot(c["epoch"], c[key], color=color, label=r["label"])
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction")
    ax.set_title(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
  return figures.save(fig, path)


def report(rc, result) -> list[str]:
  if not result:
    return []
  path = label_noise_figure(result, os.path.join(rc.outdir, "label_noise.png"))
  ln = rc.config.label_noise
  md = ["## Label noise and memorization", "",
        f"Sparsity {ln.sparsity:.2f}, {ln.rate:.0%} symmetric label noise (`{ln.kind}`); "
        "curves per epoch, eval mode.", "",
        f"![label noise]({os.path.basename(path)})", "",
        "| solution | seed | noisy fraction | train acc (noisy labels) | clean train acc | "
        "noisy: correct | noisy: memorized | noisy: other | clean test acc |",
        "|---|---|---|---|---|---|---|---|---|"]
  for _, r in sorted(result.items()):
    f = r["final"]
    md.append(f"| {r['label']} | {r['seed']} | {fmt(f['effective_noise_rate'])} | "
              f"{fmt(f['train_accuracy'])} | {fmt(f['clean_accuracy'])} | "
              f"{fmt(f.get('noisy_correct'))} | {fmt(f.get('noisy_memorized'))} | "
              f"{fmt(f.get('noisy_other'))} | {fmt(f['test_accuracy'])} |")
  return md + [""]


def _memorized_gap(f: dict, s: dict) -> dict:
  """Sol-S minus Sol-F memorized fraction of one seed, with twice its binomial standard error."""
  n = max(1.0, f["num_train"] * f["effective_noise_rate"])
  se = (sum(x["noisy_memorized"] * (1 - x["noisy_memorized"]) for x in (f, s)) / n) ** 0.5
  return {"diff": s["noisy_memorized"] - f["noisy_memorized"], "two_se": 2 * se, "n": n}


def findings(rc, result) -> list[dict]:
  """Sol-S memorizes fewer noisy labels than Sol-F, per seed against the binomial noise; and
  whether Sol-D is in the memorization regime at all (memorizes >= 0.9 of the noisy labels)."""
  result = result or {}
  by_seed: dict = {}
  for r in result.values():
    by_seed.setdefault(r.get("seed", 0), {})[r["regime"]] = r["final"]
  seeds = sorted(s for s, v in by_seed.items() if "finetune" in v and "scratch" in v)
  claim = "with 30% label noise, Sol-S memorizes fewer noisy labels than Sol-F (end of training)"
  study = ("the study's argument (sparse-from-scratch fits hard / atypical examples less); the "
           "poster's CIFAR-10 numbers are not in our notes")
  if not seeds:
    return [findings_lib.finding("label_noise_memorization", claim, "poster", "-",
                                 "not measured")]
  parts, below, above = [], 0, 0
  for seed in seeds:
    f, s = by_seed[seed]["finetune"], by_seed[seed]["scratch"]
    g = _memorized_gap(f, s)
    below += g["diff"] < -g["two_se"]
    above += g["diff"] > g["two_se"]
    parts.append(f"seed {seed}: memorized F {f['noisy_memorized']:.3f} vs S "
                 f"{s['noisy_memorized']:.3f} ({g['diff']:+.3f}, 2 x binomial stderr "
                 f"{g['two_se']:.3f}, {g['n']:.0f} noisy examples); correct F "
                 f"{f['noisy_correct']:.3f} vs S {s['noisy_correct']:.3f}; clean test acc F "
                 f"{f['test_accuracy']:.3f} vs S {s['test_accuracy']:.3f}")
  status = ("reproduced" if below == len(seeds) else "not reproduced" if above == len(seeds)
            else "within sampling noise")
  rows = [findings_lib.finding("label_noise_memorization", claim, study, "; ".join(parts),
                               status)]
  dense = {seed: v["dense"] for seed, v in sorted(by_seed.items()) if "dense" in v}
  if dense:
    fractions = ", ".join(f"seed {k}: {v['noisy_memorized']:.3f}" for k, v in dense.items())
    rows.append(findings_lib.finding(
        "label_noise_regime",
        "with 30% label noise, Sol-D memorizes most noisy labels (>= 0.9: the regime in which "
        "memorization can be compared)",
        "the poster's premise (networks memorize noisy labels)", f"Sol-D memorized {fractions}",
        findings_lib.verdict(all(v["noisy_memorized"] >= 0.9 for v in dense.values()))))
  return rows


def estimate(costs) -> float:
  seconds = 0.0
  for spec, run in costs.runs.items():
    if spec.family == "noisy" and not costs.has(f"label_noise-{spec.name}", run.hash):
      d, _, f = costs.unit(spec.name)
      seconds += (d.num_train + d.num_test) * f
  return seconds


STAGE = Stage(name="label_noise", default_settings=default_settings, validate=validate,
              plan=plan, compute=compute, report=report, findings=findings, estimate=estimate,
              adjust_run=adjust_run)
