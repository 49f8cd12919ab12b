"""The memorization stage: Feldman-Zhang memorization scores against what each solution fits.

A subset ensemble (``config.memorization.scores``: K models of the clean Sol-D's training config,
each on a random fraction of the training set, one vmapped program through
:mod:`snnjax.train.ensemble`) gives every training example its memorization score mem(i) with a
standard error (:mod:`snnjax.studies.memorization_scores`). Against those scores, for the clean
solutions at one sparsity and seed (Sol-D, Sol-F, Sol-S and, with ``config.sol_r``, Sol-R:
``runs.sparse_regimes``):

* the score distribution of the training set;
* the scores of the examples Sol-F fits (predicts their training label, eval mode) and a sparse-
  from-scratch solution does not, against all examples (difference of means, bootstrap interval);
* Spearman's rank correlation, with a bootstrap interval over examples, between mem(i) and each
  solution's per-example true-Fisher trace (``fisher_scores.fisher_scores``: the table's Tr(F)
  restricted to one example) and per-example loss;
* the class distribution of the top-scored examples;
* with ``scores.test_examples`` J > 0, each of the first J test examples' most influential
  training example (infl(i, j) with its standard error);
* with ``noisy_scores`` and the label-noise stage's runs: a second ensemble on the noisy training
  set, and the scores of the noisy examples each noisy solution memorizes (predicts the noisy
  label) against those it gets right (the true label).
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np
from scipy import stats

from snnjax.errors import check
from snnjax.studies import cache as cache_lib
from snnjax.studies import figures
from snnjax.studies import findings as findings_lib
from snnjax.studies import fisher_scores
from snnjax.studies import memorization_scores as scores_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies.markdown import fmt
from snnjax.studies.stage import Stage
from snnjax.train import config_io
from snnjax.train.run_dir import RunDir
from snnjax.train.step import cross_entropy

SCRATCH_LIKE = ("scratch", "rigl", "set")  # sparse regimes that do not start from Sol-D's weights
MIN_GROUP = 10  # fewer examples in "Sol-F fits, Sol-S does not": the finding is not measured


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True
  s.sparsity = 0.0              # the solutions' sparsity (0 = the study's highest)
  s.seed = -1                   # the solutions' seed (-1 = the first study seed)
  s.scores = scores_lib.default_settings()
  s.noisy_scores = True         # also score the label-noise stage's noisy training set
  s.fisher = fisher_scores.default_settings()
  s.top_fraction = 0.05         # "top-scored": this fraction of the training set
  s.bootstrap = 1000            # bootstrap resamples of the examples
  s.bootstrap_seed = 0
  return s


def validate(config) -> None:
  m = config.memorization
  check(0.0 <= float(m.sparsity) < 1.0, "study memorization.sparsity must lie in [0, 1)")
  check(0.0 < float(m.top_fraction) <= 0.5, "study memorization.top_fraction must lie in (0, 0.5]")
  config_io.check_int(m.bootstrap, "study memorization.bootstrap", 10, config_io.MAX_PROBES)
  config_io.check_int(m.scores.num_models, "study memorization.scores.num_models", 4, 10_000)
  scores_lib.validate_settings(m.scores, "study memorization.scores")
  fisher_scores.validate_settings(m.fisher)


def _sparsity(config) -> float:
  m = config.memorization
  return round(float(m.sparsity) if float(m.sparsity) else max(float(s) for s in config.sparsities), 6)


def _seed(config) -> int:
  return int(config.memorization.seed) if int(config.memorization.seed) >= 0 else int(config.seeds[0])


def sparse_regimes(config) -> tuple[str, ...]:
  """The study's sparse regimes (Sol-F, Sol-S and, with ``config.sol_r``, Sol-R)."""
  return runs_lib.sparse_regimes(config)


def plan(config) -> set:
  sp, seed = _sparsity(config), _seed(config)
  out = {runs_lib.RunSpec("clean", "dense", 0.0, seed)}
  out |= {runs_lib.RunSpec("clean", r, sp, seed) for r in sparse_regimes(config)}
  return out


# ----------------------------------------------------------------------------- statistics


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  """Spearman's rank correlation (average ranks for ties); NaN when either is constant."""
  a, b = stats.rankdata(a), stats.rankdata(b)
  if a.std() == 0 or b.std() == 0:
    return float("nan")
  return float(np.corrcoef(a, b)[0, 1])


def bootstrap_interval(fn, arrays, *, num: int, seed: int, level: float = 0.95) -> list[float]:
  """The ``level`` percentile interval of ``fn(*resampled arrays)`` over ``num`` resamples of the
  examples (rows, with replacement, seeded); NaN resamples left out."""
  rng = np.random.default_rng(seed)
  n = len(arrays[0])
  values = []
  for _ in range(num):
    idx = rng.integers(0, n, n)
    values.append(fn(*(a[idx] for a in arrays)))
  values = np.asarray(values, float)
  values = values[np.isfinite(values)]
  if not values.size:
    return [float("nan"), float("nan")]
  q = (1.0 - level) / 2.0
  return [float(np.quantile(values, q)), float(np.quantile(values, 1.0 - q))]


def compare_groups(mem: np.ndarray, group: np.ndarray, *, num: int, seed: int) -> dict:
  """mean mem over ``group`` (N,) bool against all examples and against the rest, with the
  bootstrap interval of (mean over group - mean over the rest); examples without a score (NaN:
  in every subset or in none) are left out, of the group's ``count`` too."""
  group = np.asarray(group, bool)
  ok = np.isfinite(mem)
  mem, group = mem[ok], group[ok]
  out = {"count": int(group.sum()), "mean_all": float(mem.mean()) if mem.size else None,
         "mean_group": float(mem[group].mean()) if group.any() else None,
         "mean_rest": float(mem[~group].mean()) if (~group).any() else None,
         "difference": None, "interval": None}
  if group.any() and (~group).any():
    out["difference"] = out["mean_group"] - out["mean_rest"]
    def diff(m, g):
      return m[g].mean() - m[~g].mean() if g.any() and (~g).any() else np.nan
    out["interval"] = bootstrap_interval(diff, (mem, group), num=num, seed=seed)
  return out


def _correlation(mem, values, settings):
  ok = np.isfinite(mem) & np.isfinite(values)
  pair = (mem[ok], values[ok])
  return {"rho": spearman(*pair), "interval": bootstrap_interval(
      spearman, pair, num=int(settings.bootstrap), seed=int(settings.bootstrap_seed))}


# ----------------------------------------------------------------------------- compute


def _score(ctx, train_config, dataset, what: str) -> dict:
  s = ctx.config.memorization.scores
  inputs = {"config": cache_lib.run_hash(train_config), "settings": s.to_dict()}
  return ctx.cache.cached(f"memorization-scores-{what}", inputs,
                          lambda: scores_lib.train_and_score(train_config, dataset, s, log=True))


def per_example(solution, dataset, fisher_settings) -> dict:
  """A solution's per-example quantities on the training set: ``fits`` (predicts the training
  label), ``loss`` (cross-entropy on it), ``fisher`` (true-Fisher trace), ``prediction``."""
  logits = solution.predict(dataset.x_train)
  loss = np.asarray(cross_entropy(logits, dataset.y_train))
  preds = logits.argmax(1)
  return {"fits": (preds == dataset.y_train).astype(int).tolist(), "loss": loss.tolist(),
          "prediction": preds.astype(int).tolist(),
          "fisher": np.asarray(fisher_scores.fisher_scores(solution, dataset.x_train,
                                                           fisher_settings)).tolist()}


def _solution_quantities(ctx, spec, run, dataset) -> dict:
  settings = ctx.config.memorization.fisher
  return ctx.cache.cached(f"memorization-{spec.name}", {"run": run.hash, "fisher": settings.to_dict()},
                          lambda: per_example(RunDir(run.workdir).solution(), dataset, settings))


def _noisy_part(ctx, m) -> dict | None:
  noisy_runs = {s: r for s, r in ctx.runs.items() if s.family == "noisy"}
  dense = [(s, r) for s, r in sorted(noisy_runs.items()) if s.regime == "dense"]
  if not (m.noisy_scores and dense):
    return None
  seed = min(s.seed for s, _ in dense)
  dense_spec, dense_run = next((s, r) for s, r in dense if s.seed == seed)
  dataset = ctx.dataset(dense_run)
  scores = _score(ctx, dense_run.config, dataset, "noisy")
  mem = np.asarray(scores["mem"], float)
  noisy = np.asarray(dataset.noisy, bool)
  out = {"num_noisy": int(noisy.sum()), "mean_noisy": float(np.nanmean(mem[noisy])),
         "mean_clean": float(np.nanmean(mem[~noisy])), "solutions": {}}
  for spec, run in sorted(noisy_runs.items()):
    if spec.seed != seed:
      continue
    def predict(run=run):
      return RunDir(run.workdir).solution().predict(dataset.x_train).argmax(1).astype(int).tolist()
    preds = np.asarray(ctx.cache.cached(f"memorization-{spec.name}", {"run": run.hash}, predict))
    memorized = noisy & (preds == dataset.y_train)
    correct = noisy & (preds == dataset.y_train_true)
    other = noisy & ~memorized & ~correct
    out["solutions"][spec.regime] = {
        "label": spec.label, "memorized": int(memorized.sum()), "correct": int(correct.sum()),
        "other": int(other.sum()),
        "mean_memorized": float(np.nanmean(mem[memorized])) if memorized.any() else None,
        "mean_correct": float(np.nanmean(mem[correct])) if correct.any() else None,
        "mean_other": float(np.nanmean(mem[other])) if other.any() else None}
  out["mem_noisy"] = mem[noisy].tolist()
  return out


def compute(ctx) -> dict:
  """Scores, per-solution quantities and the comparisons described in the module doc."""
  m = ctx.config.memorization
  sp, seed = _sparsity(ctx.config), _seed(ctx.config)
  dense_spec = runs_lib.RunSpec("clean", "dense", 0.0, seed)
  dense_run = ctx.runs[dense_spec]
  dataset = ctx.dataset(dense_run)
  scores = _score(ctx, dense_run.config, dataset, "clean")
  mem = np.asarray(scores["mem"], float)
  num, bseed = int(m.bootstrap), int(m.bootstrap_seed)
  sols = {}
  for regime in ("dense",) + sparse_regimes(ctx.config):
    spec = dense_spec if regime == "dense" else runs_lib.RunSpec("clean", regime, sp, seed)
    if spec in ctx.runs:
      q = _solution_quantities(ctx, spec, ctx.runs[spec], dataset)
      sols[regime] = {"label": spec.label, "train_accuracy": float(np.mean(q["fits"])),
                      "fisher": _correlation(mem, np.asarray(q["fisher"], float), m),
                      "loss": _correlation(mem, np.asarray(q["loss"], float), m), "_q": q}
  gaps = {}
  if "finetune" in sols:
    fits_f = np.asarray(sols["finetune"]["_q"]["fits"], bool)
    for regime in SCRATCH_LIKE:
      if regime in sols:
        fits_s = np.asarray(sols[regime]["_q"]["fits"], bool)
        gaps[regime] = compare_groups(mem, fits_f & ~fits_s, num=num, seed=bseed)
        gaps[regime]["label"] = sols[regime]["label"]
        gaps[regime]["mem_group"] = mem[fits_f & ~fits_s].tolist()
  k_top = max(1, int(round(float(m.top_fraction) * dataset.num_train)))
  order = np.argsort(-np.nan_to_num(mem, nan=-np.inf), kind="stable")
  top = order[:k_top]
  classes = {"top_counts": np.bincount(dataset.y_train[top], minlength=dataset.num_classes).tolist(),
             "class_sizes": np.bincount(dataset.y_train, minlength=dataset.num_classes).tolist(),
             "num_top": k_top, "class_names": list(dataset.class_names or [])}
  finite = mem[np.isfinite(mem)]
  summary = {"num_train": int(dataset.num_train), "num_unscored": int((~np.isfinite(mem)).sum()),
             "mean": float(finite.mean()),
             "median": float(np.median(finite)),
             "quantiles": {str(q): float(np.quantile(finite, q)) for q in (0.1, 0.25, 0.75, 0.9)},
             "fraction_above_half": float(np.mean(finite > 0.5)),
             "mean_se": float(np.nanmean(np.asarray(scores["se"], float))),
             "test_accuracy": scores["test_accuracy"],
             "held_out_accuracy": scores["held_out_accuracy"],
             "in_subset_accuracy": scores["in_subset_accuracy"],
             "train_seconds": scores["train_seconds"], "num_models": scores["num_models"],
             "fraction": scores["fraction"]}
  for r in sols.values():
    del r["_q"]
  influence = []
  if "infl" in scores:  # settings.scores.test_examples > 0: each test example's top influence
    infl = np.asarray(scores["infl"], float)
    infl_se = np.asarray(scores["infl_se"], float)
    for j in range(infl.shape[1]):
      i = int(np.nanargmax(infl[:, j])) if np.isfinite(infl[:, j]).any() else 0
      influence.append({"test": j, "train": i, "infl": float(infl[i, j]), "se": float(infl_se[i, j]),
                        "same_label": bool(dataset.y_train[i] == dataset.y_test[j])})
  return {"sparsity": sp, "seed": seed, "summary": summary, "mem": mem.tolist(),
          "se": scores["se"], "solutions": sols, "gaps": gaps, "classes": classes,
          "top_indices": top[:20].tolist(), "influence": influence, "noisy": _noisy_part(ctx, m)}


# ----------------------------------------------------------------------------- report


def memorization_figure(result: dict, path: str) -> str:
  mem = np.asarray(result["mem"], float)
  noisy = result.get("noisy")
  panels = 3 + (noisy is not None)
  fig, axes = figures.plt.subplots(1, panels, figsize=(4.6 * panels, 3.8))
  bins = np.linspace(-0.5, 1.0, 31)
  ax = axes[0]
  ax.hist(mem[np.isfinite(mem)], bins=bins, density=True, color="#777777", alpha=0.6,
          label="all training examples")
  for regime, g in sorted(result["gaps"].items()):
    if g["mem_group"]:
      ax.hist(g["mem_group"], bins=bins, density=True, histtype="step", lw=2,
              color=figures.COLORS.get(regime, None),
              label=f"Sol-F fits, {g['label'].split()[0]} does not ({g['count']})")
  ax.set_xlabel("memorization score mem(i)")
  ax.set_ylabel("density")
  ax.set_title("score distribution")
  ax.legend(loc="best")
  ax = axes[1]
  names = sorted(result["solutions"])
  for i, regime in enumerate(names):
    r = result["solutions"][regime]
    for j, (key, marker) in enumerate((("fisher", "o"), ("loss", "s"))):
      lo, hi = r[key]["interval"]
      x = i + (j - 0.5) * 0.3
      ax.errorbar([x], [r[key]["rho"]], yerr=[[r[key]["rho"] - lo], [hi - r[key]["rho"]]],
                  fmt=marker, color=figures.COLORS.get(regime, None),
                  label=("per-example Tr(F)" if key == "fisher" else "per-example loss") if i == 0 else None)
  ax.axhline(0.0, color="k", lw=0.6)
  ax.set_xticks(range(len(names)), [result["solutions"][n]["label"].split()[0] for n in names])
  ax.set_ylabel("Spearman rho with mem(i) (95% bootstrap)")
  ax.set_title("scores vs per-example Tr(F) and loss")
  ax.legend(loc="best")
  ax = axes[2]
  c = result["classes"]
  sizes = np.asarray(c["class_sizes"], float)
  k = np.arange(len(sizes))
  ax.bar(k - 0.2, np.asarray(c["top_counts"]) / max(1, c["num_top"]), 0.4, label="top-scored")
  ax.bar(k + 0.2, sizes / sizes.sum(), 0.4, color="#999999", label="training set")
  ax.set_xlabel("class")
  ax.set_ylabel("fraction")
  ax.set_title(f"classes of the top {c['num_top']} scores")
  ax.legend(loc="best")
  if noisy is not None:
    ax = axes[3]
    regimes = sorted(noisy["solutions"])
    for j, (key, name) in enumerate((("mean_memorized", "memorized"), ("mean_correct", "correct"))):
      vals = [noisy["solutions"][r][key] for r in regimes]
      ax.bar(np.arange(len(regimes)) + (j - 0.5) * 0.4,
             [np.nan if v is None else v for v in vals], 0.4, label=f"noisy, {name}")
    ax.axhline(noisy["mean_noisy"], color="k", ls="--", lw=0.8, label="all noisy examples")
    ax.set_xticks(range(len(regimes)), [noisy["solutions"][r]["label"].split()[0] for r in regimes])
    ax.set_ylabel("mean mem(i) (noisy-set ensemble)")
    ax.set_title("noisy examples: memorized vs correct")
    ax.legend(loc="best")
  return figures.save(fig, path)


def _interval(iv) -> str:
  return "-" if not iv else f"[{fmt(iv[0])}, {fmt(iv[1])}]"


def report(rc, result) -> list[str]:
  if not result:
    return []
  path = memorization_figure(result, os.path.join(rc.outdir, "memorization.png"))
  s = result["summary"]
  md = ["## Memorization scores (Feldman & Zhang)", "",
        f"{s['num_models']} models of Sol-D's training config, each on a random {s['fraction']:.0%} "
        f"of the {s['num_train']} training examples (one vmapped ensemble, "
        f"{s['train_seconds']:.0f} s); mem(i) = P[correct | i in] - P[correct | i out]. Mean "
        f"score {fmt(s['mean'])} (median {fmt(s['median'])}, {s['fraction_above_half']:.1%} above "
        f"0.5, mean standard error {fmt(s['mean_se'])}); the models' accuracy on their own subset "
        f"{fmt(s['in_subset_accuracy'])}, on held-out training examples "
        f"{fmt(s['held_out_accuracy'])}, on the test set {fmt(s['test_accuracy'])}; "
        f"{s.get('num_unscored', 0)} examples in every subset or in none have no score. Solutions at "
        f"sparsity {result['sparsity']:.2f}, seed {result['seed']}.", "",
        f"![memorization]({os.path.basename(path)})", "",
        "| examples | count | mean mem | mean mem, the rest | difference (95% bootstrap) |",
        "|---|---|---|---|---|", f"| all | {s['num_train']} | {fmt(s['mean'])} | - | - |"]
  for _, g in sorted(result["gaps"].items()):
    md.append(f"| Sol-F fits, {g['label'].split()[0]} does not | {g['count']} | "
              f"{fmt(g['mean_group'])} | {fmt(g['mean_rest'])} | {fmt(g['difference'])} "
              f"{_interval(g['interval'])} |")
  md += ["", "| solution | train acc | Spearman(mem, Tr(F)_i) | Spearman(mem, loss_i) |",
         "|---|---|---|---|"]
  for _, r in sorted(result["solutions"].items()):
    md.append(f"| {r['label']} | {fmt(r['train_accuracy'])} | {fmt(r['fisher']['rho'])} "
              f"{_interval(r['fisher']['interval'])} | {fmt(r['loss']['rho'])} "
              f"{_interval(r['loss']['interval'])} |")
  c = result["classes"]
  md += ["", f"Classes of the top {c['num_top']} scores: "
         + ", ".join(f"{k}: {n}" for k, n in enumerate(c["top_counts"])) + "."]
  if result.get("influence"):
    md += ["", "Influence (Feldman & Zhang's infl(i, j)) on the first test examples: the most "
           "influential training example of each.", "",
           "| test example | training example | infl (se) | same label |", "|---|---|---|---|"]
    for r in result["influence"]:
      md.append(f"| {r['test']} | {r['train']} | {fmt(r['infl'])} ({fmt(r['se'])}) | "
                f"{'yes' if r['same_label'] else 'no'} |")
  noisy = result.get("noisy")
  if noisy is not None:
    md += ["", f"Noisy training set ({noisy['num_noisy']} noisy labels; its own ensemble): mean "
           f"score of the noisy examples {fmt(noisy['mean_noisy'])}, of the clean ones "
           f"{fmt(noisy['mean_clean'])}.", "",
           "| noisy solution | memorized (count, mean mem) | correct (count, mean mem) | other |",
           "|---|---|---|---|"]
    for _, r in sorted(noisy["solutions"].items()):
      md.append(f"| {r['label']} | {r['memorized']}, {fmt(r['mean_memorized'])} | "
                f"{r['correct']}, {fmt(r['mean_correct'])} | {r['other']} |")
  return md + [""]


def findings(rc, result) -> list[dict]:
  """The examples Sol-S fails to fit and Sol-F fits have higher scores than the rest."""
  claim = "the examples Sol-S fails to fit and Sol-F fits have higher memorization scores"
  g = (result or {}).get("gaps", {}).get("scratch")
  if not g or g["interval"] is None:
    ours = "-" if not g else (
        f"no such example: Sol-S fits every training example Sol-F fits (train accuracy "
        f"{result['solutions']['scratch']['train_accuracy']:.3f})" if g["count"] == 0 else
        f"all {g['count']} examples are such examples: nothing to compare them with")
    return [findings_lib.finding("memorization_scores", claim, "the study's argument", ours,
                                 "not measured")]
  lo, hi = g["interval"]
  ours = (f"{g['count']} such examples: mean mem {g['mean_group']:.3f} vs {g['mean_rest']:.3f} for "
          f"the rest, difference {g['difference']:+.3f} (95% bootstrap [{lo:+.3f}, {hi:+.3f}])")
  if g["count"] < MIN_GROUP:  # a bootstrap over a handful of examples says little
    status = "not measured"
    ours += f"; fewer than {MIN_GROUP} examples: too few to decide"
  else:
    status = ("reproduced" if lo > 0 else "not reproduced" if hi < 0 else "within sampling noise")
  return [findings_lib.finding(
      "memorization_scores", claim,
      "the study's argument (sparse-from-scratch fails on atypical, memorized examples)", ours,
      status)]


def estimate(costs) -> float:
  """Seconds: the ensembles (K models on ``fraction`` of the training set each, Sol-D's epochs)
  and the clean solutions' per-example Fisher traces (dry-run estimate, cache aware)."""
  seconds = 0.0
  m = costs.config.memorization
  noisy_seeds = [s.seed for s in costs.runs if s.family == "noisy" and s.regime == "dense"]
  for spec, run in costs.runs.items():
    if spec.regime != "dense":
      continue
    clean = spec.family == "clean" and spec.seed == _seed(costs.config)
    noisy = (spec.family == "noisy" and m.noisy_scores and noisy_seeds
             and spec.seed == min(noisy_seeds))
    if not (clean or noisy):
      continue
    d, g, _ = costs.unit(spec.name)
    what = "clean" if clean else "noisy"
    if not costs.has(f"memorization-scores-{what}", run.hash):
      seconds += int(m.scores.num_models) * float(m.scores.fraction) * d.num_train * int(
          m.scores.num_epochs or run.config.num_epochs) * g
    if clean:
      seconds += (1 + len(sparse_regimes(costs.config))) * d.num_train * costs.fisher_g(
          m.fisher.kind, m.fisher.num_samples, d.num_classes) * g
  return seconds


STAGE = Stage(name="memorization", default_settings=default_settings, validate=validate,
              plan=plan, compute=compute, report=report, findings=findings, estimate=estimate)
