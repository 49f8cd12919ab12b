"""The closing-the-gap stage between Sol-S and Sol-F (Fisher penalty early; data scheduling).

The study proposes two remedies for the gap in test accuracy (and in Tr(F)) between a sparse net
trained from scratch (Sol-S) and the pruned-and-finetuned one (Sol-F), without fixing them:

* **Fisher penalty early** (``fisher_penalty``): "regularize Fisher information early in training,
  remove it later", sign and lambda unspecified. Here lambda > 0 is a *penalty*: the objective is
  cross-entropy + lambda * ||mask * g||^2, g the mini-batch gradient of the cross-entropy at labels
  sampled from the model (Jastrzebski et al. 2021; ``snnjax.train.step.fisher_penalty``), for the
  first ``fisher_until`` fraction of the epochs, then plain training.
* **Data scheduling**, described two opposite ways, both run: ``low_first`` (the blog: train first
  on the examples with the lowest per-example Fisher trace, picked from a random pool) and
  ``high_first`` (the paper: hardest first). For the first ``schedule_until`` fraction of the epochs
  every batch is the lowest / highest-scored ``batch_size`` of a random pool of ``pool_factor *
  batch_size`` examples (``snnjax.train.curriculum``); afterwards plain shuffled batches. The score
  of an example is its true-Fisher trace at Init-S (``snnjax.studies.fisher_scores``), the very init
  the scheduled run starts from.

Each variant is the plain Sol-S run of the table (same seed, hence the same Init-S; the same mask,
magnitude pruning of the same Sol-D; the same schedule and epochs) with one change. Runs go to
``DIR/runs/gap-<variant>-<sparsity>-seed<s>-<config hash>``; the scores file is part of the
scheduled runs' configs (``curriculum.scores_path``), so new scores give new runs. Each variant is
measured with the table's protocol (``config.measure``; Tr(H) optional) and compared with the
table's Sol-S and Sol-F at that sparsity (and, with ``study.sol_r``, beside the table's Sol-R: RigL
from the same Init-S and mask, shown as one more way of training the sparse net, with its own
gap-closed verdict; its findings belong to the dynamic_sparsity stage). A remedy "closes part of the gap" when its test accuracy
(mean over seeds) lies above Sol-S's; the fraction closed is (variant - Sol-S) / (Sol-F - Sol-S).
"""

from __future__ import annotations

import copy
import os

import ml_collections
import numpy as np

from snnjax.errors import UserError, check
from snnjax.studies import cache as cache_lib
from snnjax.studies import figures
from snnjax.studies import fisher_scores as scores_lib
from snnjax.studies import measure as measure_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies import seeds as seeds_lib
from snnjax.studies.markdown import runs_table
from snnjax.studies.stage import Stage
from snnjax.studies.stages import table as table_lib
from snnjax.train import config_io
from snnjax.train.run_dir import RunDir

VARIANTS = ("fisher_penalty", "low_first", "high_first")
LABELS = {"fisher_penalty": "Sol-S + Fisher penalty early",
          "low_first": "Sol-S, low-Fisher examples first",
          "high_first": "Sol-S, high-Fisher examples first"}
SHORT_LABELS = {"fisher_penalty": "Fisher penalty\nearly", "low_first": "low-Fisher\nfirst",
                "high_first": "high-Fisher\nfirst", "scratch": "Sol-S", "finetune": "Sol-F",
                "rigl": "Sol-R\n(RigL)"}
REFERENCES = ("scratch", "finetune")     # the table's Sol-S and Sol-F at the stage's sparsity
DYNAMIC = "rigl"                         # the table's Sol-R, shown beside them when trained
METRICS = ("test_accuracy", "train_error", "tr_f", "tr_h")


def default_settings() -> ml_collections.ConfigDict:
  """The stage's settings (``config.closing_gap`` of a study config)."""
  s = ml_collections.ConfigDict()
  s.enabled = True
  s.sparsity = 0.0               # 0 = the middle of config.sparsities (0.94 by default)
  s.variants = VARIANTS
  s.fisher_weight = 0.1          # lambda > 0: a penalty, loss + lambda * ||g_sampled||^2
  s.fisher_until = 0.5           # fraction of the epochs penalized; then removed
  s.fisher_examples = 32         # examples of each batch in the penalty (0 = the whole batch)
  s.schedule_until = 0.5         # fraction of the epochs scheduled; then plain shuffled batches
  s.pool_factor = 2.0            # pool = pool_factor * batch_size random examples per step
  s.measure_tr_h = True          # Tr(H) of the variants too (the table's protocol)
  s.scores = scores_lib.default_settings()
  s.seeds = ()                   # () = every study seed
  return s


def validate(study: ml_collections.ConfigDict) -> None:
  """Raises ``UserError`` naming the first invalid ``closing_gap`` setting."""
  g = study.closing_gap
  check(float(g.sparsity) == 0.0 or 0.0 < float(g.sparsity) < 1.0,
        "study closing_gap.sparsity must lie in (0, 1) (or 0: the middle of sparsities)")
  variants = tuple(g.variants)
  check(len(variants) >= 1 and set(variants) <= set(VARIANTS),
        f"study closing_gap.variants must name some of {VARIANTS}, got {variants}")
  check(len(set(variants)) == len(variants), "study closing_gap.variants has a repeat")
  config_io.check_number(g.fisher_weight, "study closing_gap.fisher_weight (lambda > 0: a penalty "
                         "on the Fisher)", 0.0, config_io.MAX_FISHER_WEIGHT, low_open=True)
  for name in ("fisher_until", "schedule_until"):
    check(0.0 < float(g[name]) <= 1.0, f"study closing_gap.{name} must lie in (0, 1]")
  config_io.check_int(g.fisher_examples, "study closing_gap.fisher_examples", 0, config_io.MAX_COUNT)
  config_io.check_number(g.pool_factor, "study closing_gap.pool_factor", 1.0, 1e6)
  scores_lib.validate_settings(g.scores)


def until_epoch(num_epochs: int, fraction: float) -> int:
  """The first epoch *without* the remedy: ``round(fraction * num_epochs)``, at least 1."""
  return int(min(num_epochs, max(1, round(float(fraction) * num_epochs))))


def variant_config(base: ml_collections.ConfigDict, variant: str,
                   settings: ml_collections.ConfigDict, scores_path: str = ""
                   ) -> ml_collections.ConfigDict:
  """The training config of ``variant``: the plain Sol-S config ``base`` with one change."""
  if variant not in VARIANTS:
    raise UserError(f"unknown closing-the-gap variant {variant!r}; choose from {VARIANTS}")
  config = copy.deepcopy(base)
  if variant == "fisher_penalty":
    config.fisher_reg.weight = float(settings.fisher_weight)
    config.fisher_reg.until_epoch = until_epoch(config.num_epochs, settings.fisher_until)
    config.fisher_reg.num_examples = int(settings.fisher_examples)
  else:
    if not scores_path:
      raise UserError(f"the {variant} variant needs a scores file")
    config.curriculum.kind = variant
    config.curriculum.scores_path = scores_path
    config.curriculum.until_epoch = until_epoch(config.num_epochs, settings.schedule_until)
    config.curriculum.pool_factor = float(settings.pool_factor)
  return config


def describe(settings: ml_collections.ConfigDict, sparsity: float, num_epochs: int) -> list[str]:
  """The stage's choices in words, one line each (stated in the report)."""
  s = settings.scores
  score = ("exact expectation over the classes" if s.kind == "exact"
           else f"{s.num_samples} label(s) sampled from the model per example")
  fe = until_epoch(num_epochs, settings.fisher_until)
  se = until_epoch(num_epochs, settings.schedule_until)
  return [
      f"Sparsity {sparsity:.2f}; every variant is the table's Sol-S run (same seed, Init-S, mask "
      f"and optimizer schedule, {num_epochs} epochs) with one change.",
      f"Fisher penalty: lambda = {settings.fisher_weight:g} > 0, i.e. a penalty: loss + lambda * "
      f"||mask * grad CE(sampled labels)||^2 on {settings.fisher_examples or 'all'} examples of "
      f"each batch (Jastrzebski et al. 2021), epochs 1-{fe} of {num_epochs}, then removed.",
      f"Scheduling: epochs 1-{se} of {num_epochs}, each batch the lowest- (low_first, the blog's "
      f"description) or highest-scored (high_first, the paper's) part of a random pool of "
      f"{settings.pool_factor:g} x batch size training examples; then plain shuffled batches.",
      f"Scores: per-example true-Fisher trace at Init-S ({score}; "
      f"{measure_lib.h_params_words(s.params)}, active coordinates only; BatchNorm eval mode), "
      "over the whole training set, computed once and saved as .npy in the stage cache.",
      "Measured with the table's protocol (below it); Sol-S and Sol-F are the table's runs.",
  ]


def stage_sparsity(study: ml_collections.ConfigDict) -> float:
  """``closing_gap.sparsity``, or with 0 there the middle of ``study.sparsities``."""
  if float(study.closing_gap.sparsity) > 0.0:
    return round(float(study.closing_gap.sparsity), 6)
  ordered = sorted(round(float(s), 6) for s in study.sparsities)
  return ordered[len(ordered) // 2]


def plan(config) -> set:
  return runs_lib.sparse_runs([stage_sparsity(config)], config.seeds,
                              regimes=runs_lib.sparse_regimes(config))


def _reference_runs(runs, sparsity: float, seed: int) -> dict:
  by = {(s.family, s.regime, round(s.sparsity, 6), s.seed): (s, r) for s, r in runs.items()}
  out = {}
  for regime in REFERENCES:
    key = ("clean", regime, round(sparsity, 6), seed)
    if key not in by:
      raise UserError(f"closing the gap needs the clean {regime} run at sparsity "
                      f"{sparsity:.2f}, seed {seed}")
    out[regime] = by[key]
  if ("clean", DYNAMIC, round(sparsity, 6), seed) in by:
    out[DYNAMIC] = by[("clean", DYNAMIC, round(sparsity, 6), seed)]
  return out


def _variant_name(variant: str, sparsity: float, seed: int) -> str:
  return f"gap-{variant}-{sparsity:.2f}-seed{seed}"


def plan_variants(study, runs, cache: cache_lib.StageCache, datasets, *, log=cache_lib.log
                  ) -> dict[str, runs_lib.Run]:
  """``{run name: Run}`` of the variants (scores computed first where a schedule needs them).

  Returns:
    The variant runs keyed by name; ``run.spec`` is the plain Sol-S spec the variant modifies.
  """
  def scores(scratch):
    return scores_lib.cached_scores(cache, scratch.workdir, scratch.hash,
                                    datasets.get(scratch.config.dataset),
                                    study.closing_gap.scores, log=log)
  return _variant_runs(study, runs, cache, scores)


def planned_variants(study, runs, cache: cache_lib.StageCache) -> dict[str, runs_lib.Run]:
  """The variants' runs as :func:`plan_variants` makes them, without computing any scores (their
  files' paths are known in advance): for plans and cost estimates."""
  return _variant_runs(study, runs, cache, lambda scratch: scores_lib.scores_path(
      cache, scratch.hash, study.closing_gap.scores))


def _variant_runs(study, runs, cache, scores) -> dict[str, runs_lib.Run]:
  g = study.closing_gap
  sparsity = stage_sparsity(study)
  out = {}
  for seed in runs_lib.stage_seeds(study, "closing_gap"):
    seed = int(seed)
    scratch_spec, scratch = _reference_runs(runs, sparsity, seed)["scratch"]
    path = scores(scratch) if any(v != "fisher_penalty" for v in g.variants) else ""
    for variant in g.variants:
      config = variant_config(scratch.config, variant, g, path)
      name = _variant_name(variant, sparsity, seed)
      out[name] = runs_lib.make_run(cache, name, scratch_spec, config,
                                    runs[scratch_spec.dense()])
  return out


def _metrics(measured: dict) -> dict:
  out = {"test_accuracy": measured["test_accuracy"], "train_error": measured["train_error"]}
  for k in ("tr_f", "tr_h"):
    est = measured.get(k)
    out[k] = None if est is None else est["value"]
    out[f"{k}_stderr"] = None if est is None else est["stderr"]
  return out


def _test_curve(workdir: str) -> dict:
  """Per evaluated epoch: test accuracy and (penalized epochs) the mean Fisher penalty."""
  records = [r for r in RunDir(workdir).epoch_records() if "test_accuracy" in r]
  return {"epoch": [r["epoch"] for r in records],
          "test_accuracy": [r["test_accuracy"] for r in records],
          "fisher_penalty": [r.get("fisher_penalty") for r in records]}


def aggregate(per_seed: dict, names) -> list[dict]:
  """Rows ``{"name", "label", "short_label", metric: seeds.over_seeds cell}`` over the seeds of
  ``per_seed`` (``{seed key: {name: metrics}}``)."""
  rows = []
  for name in names:
    row = {"name": name, "label": _label(name), "short_label": SHORT_LABELS.get(name, name)}
    for metric in METRICS:
      entries = [s[name] for s in per_seed.values() if name in s]
      present = [e for e in entries if e[metric] is not None]
      row[metric] = seeds_lib.over_seeds([e[metric] for e in present],
                                         [e.get(f"{metric}_stderr") for e in present])
    rows.append(row)
  return rows


def _label(name: str) -> str:
  return {"scratch": "Sol-S (plain)", "finetune": "Sol-F",
          DYNAMIC: "Sol-R (RigL from Init-S)"}.get(name, LABELS.get(name, name))


def verdicts(rows: list[dict], num_test: int) -> dict:
  """Per variant: how much of the Sol-F - Sol-S test-accuracy gap it closed (means over seeds).

  ``status``: ``closed`` (at or above Sol-F), ``partly closed`` (above Sol-S, below Sol-F),
  ``not closed`` (at or below Sol-S) or ``no gap`` (Sol-S >= Sol-F on this run: nothing to close).
  ``tr_f_toward_finetune``: whether the variant's Tr(F) lies closer to Sol-F's than Sol-S's does.
  """
  by = {r["name"]: r for r in rows}
  s_acc, f_acc = by["scratch"]["test_accuracy"]["mean"], by["finetune"]["test_accuracy"]["mean"]
  gap = f_acc - s_acc
  out = {}
  for name, row in by.items():
    if name in REFERENCES:
      continue
    change = row["test_accuracy"]["mean"] - s_acc
    if gap <= 0:
      status, fraction = "no gap", None
    else:
      fraction = change / gap
      status = ("closed" if change >= gap else "partly closed" if change > 0 else "not closed")
    tr = {k: (by[k]["tr_f"] or {}).get("mean") for k in ("scratch", "finetune")}
    mine = (row["tr_f"] or {}).get("mean")
    toward = (None if None in (mine, tr["scratch"], tr["finetune"]) else
              abs(mine - tr["finetune"]) < abs(tr["scratch"] - tr["finetune"]))
    out[name] = {"label": row["label"], "gap": gap, "change": change, "fraction_closed": fraction,
                 "change_test_examples": int(round(change * num_test)),
                 "gap_test_examples": int(round(gap * num_test)), "status": status,
                 "tr_f": mine, "tr_f_scratch": tr["scratch"], "tr_f_finetune": tr["finetune"],
                 "tr_f_toward_finetune": toward, "text": _verdict_text(status, change, gap,
                                                                       fraction, num_test)}
  return out


def _verdict_text(status, change, gap, fraction, num_test) -> str:
  k = int(round(change * num_test))
  moved = f"test accuracy {change:+.4f} vs plain Sol-S ({k:+d} of {num_test} test examples)"
  if status == "no gap":
    return (f"no gap on this run (Sol-S is not below Sol-F: {-gap:+.4f}); {moved}; "
            "nothing to close")
  if status == "closed":
    return f"closed the gap ({fraction:.0%} of {gap:.4f}): {moved}"
  if status == "partly closed":
    return f"closed part of the gap ({fraction:.0%} of {gap:.4f}): {moved}"
  return f"did not close the gap ({gap:.4f}): {moved}"


def analyze(study, runs, cache: cache_lib.StageCache, datasets, *, measured: dict | None = None,
            log=cache_lib.log) -> dict:
  """Trains (or reuses) the variants, measures them and compares them with Sol-S and Sol-F.

  Args:
    study: the study config.
    runs: the study's ``{RunSpec: Run}`` (trained; must hold clean Sol-S / Sol-F at the stage's
      sparsity for every seed).
    cache: the study's cache.
    datasets: a ``runs_lib.DatasetCache``.
    measured: the table's ``{run name: measure result}`` when already computed (else measured
      here, with the same cache keys as the table).
  Returns:
    A JSON-able dict: ``sparsity``, ``settings``, ``choices`` (text), ``scores`` per seed (path,
    summary), ``runs`` (the variants' work dirs, hashes, training settings, final metrics),
    ``per_seed`` (metrics and test-accuracy curves of every variant and reference), ``rows``
    (over seeds) and ``verdicts``.
  """
  g = study.closing_gap
  sparsity = stage_sparsity(study)
  measured = dict(measured or {})
  settings = copy.deepcopy(study.measure)
  settings.hessian.enabled = bool(settings.hessian.enabled and g.measure_tr_h)
  settings.jacobian.enabled = False  # not compared here; Tr(F)'s examples and key do not change
  variants = plan_variants(study, runs, cache, datasets, log=log)
  out = {"sparsity": sparsity, "settings": cache_lib.to_json(g), "runs": {}, "per_seed": {},
         "scores": {}, "measure_settings": cache_lib.to_json(settings)}
  num_test = 0
  for seed in runs_lib.stage_seeds(study, "closing_gap"):
    seed = int(seed)
    key = f"seed{seed}"
    refs = _reference_runs(runs, sparsity, seed)
    missing = {spec: run for spec, run in refs.values() if spec.name not in measured}
    measured.update(table_lib.measure_runs(missing, study.measure, cache, datasets))
    entry = {}
    for regime, (spec, run) in refs.items():
      entry[regime] = {**_metrics(measured[spec.name]), "run": spec.name,
                       "curve": _test_curve(run.workdir)}
    for variant in g.variants:
      name = _variant_name(variant, sparsity, seed)
      run = variants[name]
      dataset = datasets.get(run.config.dataset)
      num_test = int(len(dataset.y_test))
      trained = runs_lib.train_all([run], datasets, log=log, what="closing_gap")[name]

      def compute(run=run, dataset=dataset, name=name):
        return measure_lib.measure_solution(
            RunDir(run.workdir).solution(), dataset, settings,
            log=lambda m: cache_lib.log(f"closing_gap: {name}: {m}"))
      result = cache.cached(f"closing_gap-measure-{name}",
                            {"run": run.hash, "settings": settings}, compute)
      entry[variant] = {**_metrics(result), "run": name, "curve": _test_curve(run.workdir)}
      out["runs"][name] = {
          "variant": variant, "seed": seed, "workdir": run.workdir, "hash": run.hash,
          "wall_s": trained["wall_s"], "train_s": trained["train_s"],
          "final": {k: trained["final"].get(k) for k in ("train_accuracy", "test_accuracy")},
          "fisher_reg": cache_lib.to_json(run.config.fisher_reg),
          "curriculum": cache_lib.to_json(run.config.curriculum)}
      path = run.config.curriculum.scores_path
      if path and key not in out["scores"]:
        out["scores"][key] = {"path": os.path.relpath(path, cache.directory),
                              "summary": scores_lib.summarize(np.load(path))}
    out["per_seed"][key] = entry
  with_r = all(DYNAMIC in entry for entry in out["per_seed"].values())
  names = list(REFERENCES) + ([DYNAMIC] if with_r else []) + list(g.variants)
  out["rows"] = aggregate(out["per_seed"], names)
  out["verdicts"] = verdicts(out["rows"], num_test)
  first = next(iter(variants.values()))
  out["choices"] = describe(g, sparsity, int(first.config.num_epochs))
  return out


def compute(ctx) -> dict:
  return analyze(ctx.config, ctx.clean, ctx.cache, ctx.datasets,
                 measured=ctx.results.get("table", {}).get("per_run"))


def own_runs(ctx) -> dict:
  """The variants' runs, for the dry run's list (no scores computed)."""
  return planned_variants(ctx.config, ctx.clean, ctx.cache)


def closing_gap_figure(result: dict, path: str) -> str:
  """The closing-the-gap variants beside plain Sol-S and Sol-F: test accuracy, train error and
  Tr(F) as bars (means over seeds; error bars: sd over seeds, or the estimator's stderr), Sol-S and
  Sol-F as horizontal lines; and test accuracy per epoch of every run (first seed)."""
  rows = {r["name"]: r for r in result["rows"]}
  variants = [r["name"] for r in result["rows"] if r["name"] not in ("scratch", "finetune")]
  colors = ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
  panels = [("test_accuracy", "test accuracy (fraction)"),
            ("train_error", "train error (fraction)"),
            ("tr_f", "Tr(F) (per-example mean)")]
  fig, axes = figures.plt.subplots(1, 4, figsize=(18, 4.4))
  for ax, (metric, ylabel) in zip(axes, panels):
    for j, name in enumerate(variants):
      cell = rows[name][metric]
      if cell is None:
        continue
      err = seeds_lib.error_bar(cell)
      ax.bar(j, cell["mean"], 0.6, yerr=err, capsize=3 if err else 0,
             color=colors[j % len(colors)])
    for ref in ("scratch", "finetune"):
      cell = rows[ref][metric]
      if cell is not None:
        ax.axhline(cell["mean"], color=figures.COLORS[ref], ls="--", label=rows[ref]["label"])
    ax.set_xticks(np.arange(len(variants)))
    ax.set_xticklabels([rows[n]["short_label"] for n in variants], fontsize=8)
    ax.set_xlabel("Sol-S variant")
    ax.set_ylabel(ylabel)
    values = [rows[n][metric]["mean"] for n in list(rows) if rows[n][metric] is not None]
    if values and metric != "tr_f":
      lo, hi = min(values), max(values)
      pad = max(0.1 * (hi - lo), 0.002)
      ax.set_ylim(max(0.0, lo - 3 * pad), hi + 3 * pad)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="best")
  ax = axes[3]
  seed_key = sorted(result["per_seed"])[0]
  entry = result["per_seed"][seed_key]
  for name in ("scratch", "finetune"):
    c = entry[name]["curve"]
    ax.plot(c["epoch"], c["test_accuracy"], color=figures.COLORS[name], ls="--", label=rows[name]["label"])
  for j, name in enumerate(variants):
    c = entry[name]["curve"]
    ax.plot(c["epoch"], c["test_accuracy"], color=colors[j % len(colors)], marker="o", ms=3,
            label=rows[name]["label"])
  ax.set_xlabel("epoch")
  ax.set_ylabel("test accuracy (fraction)")
  ax.set_title(f"test accuracy during training ({seed_key})")
  ax.grid(alpha=0.3)
  ax.legend(loc="best", fontsize=7)
  fig.suptitle(f"Closing the gap at sparsity {result['sparsity']:.2f}: Sol-S variants vs plain "
               "Sol-S and Sol-F (dashed)")
  return figures.save(fig, path)


def report(rc, result) -> list[str]:
  """The section: choices, a table of the variants beside Sol-S / Sol-F, the verdict per remedy,
  the figure and the variants' runs (Markdown lines)."""
  path = closing_gap_figure(result, os.path.join(rc.outdir, "closing_gap.png"))
  md = ["## Closing the gap", "",
        "Two remedies the study proposes for the Sol-S / Sol-F gap, run at one sparsity and "
        "compared with the table's Sol-S and Sol-F (same seeds). Choices:", ""]
  md += [f"- {line}" for line in result["choices"]]
  md += ["", "| solution | test acc | train error | Tr(F) | Tr(H) | gap closed |",
         "|---|---|---|---|---|---|"]
  verdict_of = result["verdicts"]
  for r in result["rows"]:
    cells = []
    for metric in ("test_accuracy", "train_error", "tr_f", "tr_h"):
      cell = r[metric]
      if cell is None:
        cells.append("-")
        continue
      err = seeds_lib.error_bar(cell)
      mean = cell["mean"]
      text = f"{mean:.4g}" if abs(mean) >= 1 else f"{mean:.4f}"
      if err is not None:
        text += f" ± {err:.2g}"
      cells.append(text)
    v = verdict_of.get(r["name"])
    closed = "-" if v is None else (
        v["status"] if v["fraction_closed"] is None
        else f"{v['status']} ({v['fraction_closed']:.0%})")
    md.append(f"| {r['label']} | " + " | ".join(cells) + f" | {closed} |")
  md += ["", "± is the standard deviation over seeds with several seeds, else the estimator's "
         "standard error. Gap closed: (variant - Sol-S) / (Sol-F - Sol-S) in test accuracy "
         "(means over seeds)."
         + (" With one seed a difference of a few test examples is within run-to-run noise: "
            "these are this run's outcomes, not established effects."
            if len(result["per_seed"]) == 1 else ""), ""]
  md += [f"- **{v['label']}**: {v['text']}." for v in verdict_of.values()]
  for key, sc in sorted(result.get("scores", {}).items()):
    sm = sc["summary"]
    md.append(f"- Scores ({key}, `{sc['path']}`): {sm['num_examples']} examples, mean (the "
              f"Init-S Tr(F) of the train set) {sm['mean']:.4g}, median {sm['median']:.4g}, "
              f"10-90% {sm['q10']:.4g}-{sm['q90']:.4g}.")
  md += ["", f"![closing the gap]({os.path.basename(path)})", ""]
  return md + runs_table(result["runs"]) + [""]


def estimate(costs) -> float:
  """Scores not on disk yet, and the variants' measurements not cached (their training is in
  the dry run's ``solutions`` line)."""
  gsets = costs.config.closing_gap
  seconds, scored = 0.0, set()
  for name, run in costs.own_runs("closing_gap").items():
    d, g, f = costs.unit(name)
    path = run.config.curriculum.scores_path
    if path and path not in scored and not os.path.exists(path):
      scored.add(path)
      seconds += d.num_train * g * costs.fisher_g(
          gsets.scores.kind, int(gsets.scores.get("num_samples", 1)), d.num_classes)
    if not costs.has(f"closing_gap-measure-{name}", run.hash):
      seconds += costs.measure_seconds(costs.config.measure, name,
                                       tr_h=bool(gsets.measure_tr_h))
  return seconds


def findings(rc, result) -> list[dict]:
  """One finding per remedy for the report's findings table (status: reproduced = the remedy
  raised Sol-S's test accuracy toward Sol-F's on this run)."""
  claims = {
      "fisher_penalty": ("a Fisher penalty early in training (removed later) closes (part of) "
                         "the Sol-S / Sol-F gap", "proposed (sign and lambda unspecified)"),
      "low_first": ("scheduling low-Fisher examples first closes (part of) the gap",
                    "proposed (the blog's description)"),
      "high_first": ("scheduling high-Fisher (hard) examples first closes (part of) the gap",
                     "proposed (the paper's description)")}
  out = []
  for name, v in (result or {}).get("verdicts", {}).items():
    if name not in claims:  # Sol-R: the dynamic_sparsity stage's findings
      continue
    claim, study_text = claims[name]
    status = {"closed": "reproduced", "partly closed": "reproduced", "not closed":
              "not reproduced", "no gap": "not measured"}[v["status"]]
    toward = {True: "closer to", False: "not closer to", None: "?"}[v["tr_f_toward_finetune"]]
    ours = (f"{v['text']}; Tr(F) {_num(v['tr_f'])} ({toward} Sol-F's {_num(v['tr_f_finetune'])}"
            f" than Sol-S's {_num(v['tr_f_scratch'])})")
    out.append({"name": f"closing_gap_{name}", "claim": claim, "study": study_text,
                "ours": ours, "status": status})
  return out


def _num(x) -> str:
  return "-" if x is None else f"{x:.4g}"


STAGE = Stage(name="closing_gap", default_settings=default_settings, validate=validate,
              plan=plan, compute=compute, report=report, findings=findings, estimate=estimate,
              own_runs=own_runs, needs=())
