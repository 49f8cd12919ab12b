"""The table: each clean solution measured with the study's protocol, aggregated over seeds.

Per row (a regime and sparsity): train error, test accuracy, Tr(F), Tr(H) and the Jacobian norm
(:func:`snnjax.studies.measure.measure_solution`; settings ``config.measure``). Each cell is
:func:`snnjax.studies.seeds.over_seeds` of the seeds' values. Its findings: Sol-S above Sol-F in
each metric (test accuracy: below) against the spread between seeds, Tr(F) / Tr(H) rising with
sparsity, Sol-D the flattest.
"""

from __future__ import annotations

import os

from snnjax.studies import cache as cache_lib
from snnjax.studies import figures
from snnjax.studies import findings as findings_lib
from snnjax.studies import measure as measure_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies import seeds
from snnjax.studies.stage import Stage
from snnjax.train.run_dir import RunDir

METRICS = ("train_error", "test_accuracy", "tr_f", "tr_h", "jacobian")
ESTIMATES = ("tr_f", "tr_h", "jacobian")
UP = "\u2191"
CLAIMS = (
    ("test_accuracy", "Sol-S has lower test accuracy than Sol-F at every sparsity"),
    ("train_error", "Sol-S fits the training set worse than Sol-F (higher train error)"),
    ("tr_f", "Tr(F) of Sol-S exceeds that of Sol-F at every sparsity"),
    ("tr_h", "Tr(H) of Sol-S exceeds that of Sol-F at every sparsity"),
    ("jacobian", "the Jacobian norm of Sol-S exceeds that of Sol-F at every sparsity"))


def plan(config) -> set:
  return runs_lib.sparse_runs(config.sparsities, config.seeds,
                              regimes=runs_lib.sparse_regimes(config))


def measure_runs(runs, settings, cache: cache_lib.StageCache, datasets) -> dict:
  """``{run name: measure_solution(...) result}`` for ``runs`` (a dict RunSpec -> Run), cached per
  run by (run hash, settings)."""
  out = {}
  for spec, run in sorted(runs.items()):
    def compute(run=run, spec=spec):
      return measure_lib.measure_solution(
          RunDir(run.workdir).solution(), datasets.get(run.config.dataset), settings,
          log=lambda m, n=spec.name: cache_lib.log(f"table: {n}: {m}"))
    out[spec.name] = cache.cached(f"measure-{spec.name}",
                                  {"run": run.hash, "settings": settings}, compute)
  return out


def _value(m: dict, metric: str) -> tuple[float | None, float | None]:
  if metric in ESTIMATES:
    est = m.get(metric)
    return (None, None) if est is None else (est["value"], est["stderr"])
  return m[metric], None


def aggregate(specs, measured: dict) -> list[dict]:
  """Rows of the table, one per (regime, sparsity) of the clean runs, dense first; each metric a
  :func:`seeds.over_seeds` cell (None where not measured)."""
  groups: dict[tuple, list] = {}
  for spec in specs:
    if spec.family == "clean":
      groups.setdefault((spec.regime, spec.sparsity), []).append(spec)
  order = {"dense": 0, "finetune": 1, "scratch": 2, "rigl": 3}
  rows = []
  for (regime, sparsity), members in sorted(groups.items(),
                                            key=lambda kv: (kv[0][1], order[kv[0][0]])):
    row = {"regime": regime, "sparsity": sparsity, "label": members[0].label,
           "seeds": [s.seed for s in members], "runs": [s.name for s in members]}
    for metric in METRICS:
      pairs = [_value(measured[s.name], metric) for s in members]
      pairs = [(v, e) for v, e in pairs if v is not None]
      row[metric] = seeds.over_seeds([v for v, _ in pairs], [e for _, e in pairs])
    rows.append(row)
  return rows


def scratch_vs_finetune(rows: list[dict]) -> dict:
  """Per sparsity and metric, whether Sol-S exceeds Sol-F (means): ``{sparsity: {metric: bool}}``."""
  by = {(r["regime"], r["sparsity"]): r for r in rows}
  out = {}
  for (regime, sparsity), r in by.items():
    if regime != "scratch" or ("finetune", sparsity) not in by:
      continue
    f = by[("finetune", sparsity)]
    out[f"{sparsity:.2f}"] = {
        m: (r[m] is not None and f[m] is not None and r[m]["mean"] > f[m]["mean"])
        for m in METRICS}
  return out


def compute(ctx) -> dict:
  measured = measure_runs(ctx.clean, ctx.config.measure, ctx.cache, ctx.datasets)
  rows = aggregate(list(ctx.clean), measured)
  return {"rows": rows, "per_run": measured, "scratch_above_finetune": scratch_vs_finetune(rows),
          "settings": cache_lib.to_json(ctx.config.measure),
          "plus_minus": measure_lib.plus_minus(ctx.config.measure),
          "settings_text": measure_lib.describe_settings(ctx.config.measure)}


def cell_text(cell, digits=4, err=True) -> str:
  """``mean ± sd (sd, k seeds)`` or ``mean ± stderr`` (or ``-``)."""
  if cell is None:
    return "-"
  mean = cell["mean"]
  text = f"{mean:.{digits}g}" if abs(mean) >= 1 or mean == 0 else f"{mean:.{digits}f}"
  if err:
    if cell.get("sd") is not None:
      text += f" ± {cell['sd']:.2g} (sd, {len(cell['values'])} seeds)"
    elif cell.get("stderr") is not None:
      text += f" ± {cell['stderr']:.2g} (stderr)"
  return text


def table_markdown(rows: list[dict], setups_match: bool) -> str:
  """The study's table as Markdown; ↑ marks a Sol-S value above Sol-F's at the same sparsity."""
  metrics = [("train_error", "train error"), ("test_accuracy", "test acc"), ("tr_f", "Tr(F)"),
             ("tr_h", "Tr(H)"), ("jacobian", "Jacobian")]
  head = "| solution | sparsity | " + " | ".join(m[1] for m in metrics) + " |"
  lines = [head, "|" + "---|" * (len(metrics) + 2)]
  by = {(r["regime"], r["sparsity"]): r for r in rows}
  for r in rows:
    cells = []
    for metric, _ in metrics:
      text = cell_text(r[metric], err=metric in ESTIMATES or r[metric] is None
                       or r[metric].get("sd") is not None)
      f = by.get(("finetune", r["sparsity"]))
      if (r["regime"] == "scratch" and f and r[metric] and f[metric]
          and r[metric]["mean"] > f[metric]["mean"]):
        text = f"**{text}** {UP}"
      if setups_match:
        ref = findings_lib.study_value(metric, r["regime"], r["sparsity"])
        if ref is not None:
          text += f" (study {ref:g})"
      cells.append(text)
    lines.append(f"| {r['label'].split(' ')[0]} | {r['sparsity']:.2f} | " + " | ".join(cells)
                 + " |")
  return "\n".join(lines)


def table_figure(rows: list[dict], path: str) -> str:
  """Train error, test accuracy, Tr(F), Tr(H), Jacobian vs sparsity for Sol-F / Sol-S (Sol-D as a
  horizontal line); error bars: spread over seeds, or the estimator's stderr with one seed."""
  panels = [("train_error", "train error (fraction)", False),
            ("test_accuracy", "test accuracy (fraction)", False),
            ("tr_f", "Tr(F) (per-example mean)", True),
            ("tr_h", "Tr(H) (mean loss)", True),
            ("jacobian", "E ||J||_F^2 (logits / input)", True)]
  fig, grid = figures.plt.subplots(2, 3, figsize=(14, 7.5))
  axes = grid.ravel()
  for ax, (metric, ylabel, log) in zip(axes, panels):
    for regime in ("finetune", "scratch", "rigl"):
      pts = [(r["sparsity"], r[metric]) for r in rows if r["regime"] == regime and r[metric]]
      if not pts:
        continue
      xs = [p[0] for p in pts]
      ys = [p[1]["mean"] for p in pts]
      es = [seeds.error_bar(p[1]) or 0.0 for p in pts]
      ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=figures.COLORS[regime],
                  label=figures.NAMES[regime])
    for r in rows:
      if r["regime"] == "dense" and r[metric]:
        ax.axhline(r[metric]["mean"], color=figures.COLORS["dense"], ls="--", label=figures.NAMES["dense"])
    if log and all(r[metric] is None or r[metric]["mean"] > 0 for r in rows):
      figures.log_axis(ax)
    ax.set_xlabel("sparsity (fraction of prunable weights removed)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  handles, labels = axes[0].get_legend_handles_labels()
  axes[-1].axis("off")
  axes[-1].legend(handles, labels, loc="center", fontsize=10,
                  title="error bars: sd over seeds, or stderr (1 seed)")
  fig.suptitle("Sparse solutions: fit, accuracy and curvature")
  return figures.save(fig, path)


def report(rc, result) -> list[str]:
  rows = result["rows"]
  path = table_figure(rows, os.path.join(rc.outdir, "table.png"))
  md = ["## The table", "", table_markdown(rows, rc.setups_match), "",
        "Train error on the whole train split, test accuracy on the whole test split "
        "(eval-mode BatchNorm). Each ± says what it is: `(sd, k seeds)` the standard deviation "
        "over k seeds; `(stderr)` (one seed) the estimator's standard error, which covers: "
        + measure_lib.plus_minus_line(rc.config.measure).removeprefix("±: ") + " **bold ↑**: "
        "Sol-S above Sol-F at the same sparsity.", "", "Measurement protocol:", ""]
  md += [f"- {line}" for line in result["settings_text"]]
  return md + ["", f"![table]({os.path.basename(path)})", ""]


def _study_pairs(metric) -> str:
  if metric == "train_error":
    return "Sol-S train acc .976 (0.92), .944 (0.94), .905 (0.96); Sol-F ~1.0"
  return "; ".join(f"{s:.2f}: F {findings_lib.study_value(metric, 'finetune', s)} vs "
                   f"S {findings_lib.study_value(metric, 'scratch', s)}"
                   for s in (0.90, 0.94, 0.96))


def findings(rc, result) -> list[dict]:
  """Sol-S vs Sol-F per metric against the seed spread; curvature rising with sparsity; Sol-D
  the flattest."""
  rows = (result or {}).get("rows", [])
  out = []
  for metric, claim in CLAIMS:
    comparisons = findings_lib.compare_over_seeds(rows, metric,
                                                  scratch_higher=metric != "test_accuracy")
    if not comparisons:
      out.append(findings_lib.finding(metric, claim, _study_pairs(metric), "-", "not measured"))
      continue
    out.append(findings_lib.finding(metric, claim, _study_pairs(metric),
                                    findings_lib.describe_comparisons(comparisons),
                                    findings_lib.verdict_over_seeds(comparisons)))
    out[-1]["comparisons"] = comparisons
  means = lambda metric: {(r["regime"], r["sparsity"]): r[metric]["mean"] for r in rows
                          if r[metric] is not None}
  for metric, label in (("tr_f", "Tr(F)"), ("tr_h", "Tr(H)")):
    m = means(metric)
    sparsities = sorted({s for (reg, s) in m if reg == "scratch" and ("finetune", s) in m})
    pairs = [(s, m[("finetune", s)], m[("scratch", s)]) for s in sparsities]
    if len(pairs) >= 2:
      rising = all(b[1] >= a[1] and b[2] >= a[2] for a, b in zip(pairs, pairs[1:]))
      ours = "; ".join(f"{s:.2f}: F {f:.3g}, S {sc:.3g}" for s, f, sc in pairs)
      out.append(findings_lib.finding(f"{metric}_rises",
                                      f"{label} rises with sparsity (Sol-F and Sol-S)",
                                      "yes (table above)", ours, findings_lib.verdict(rising)))
    dense = [v for (reg, _), v in m.items() if reg == "dense"]
    sparse = [v for (reg, _), v in m.items() if reg != "dense"]
    if dense and sparse:
      study = findings_lib.STUDY[metric]
      out.append(findings_lib.finding(
          f"{metric}_dense_lowest", f"Sol-D has the smallest {label}",
          f"Sol-D {study['dense']}, sparse >= {min(study['finetune'].values())}",
          f"Sol-D {dense[0]:.3g}, sparse min {min(sparse):.3g}",
          findings_lib.verdict(dense[0] < min(sparse))))
  return out


def estimate(costs) -> float:
  seconds = 0.0
  for spec, run in costs.clean.items():
    if not costs.has(f"measure-{spec.name}", run.hash):
      seconds += costs.measure_seconds(costs.config.measure, spec.name)
  return seconds


STAGE = Stage(name="table", settings_key="measure", default_settings=measure_lib.default_settings,
              validate=lambda config: measure_lib.validate_settings(config.measure), plan=plan,
              compute=compute, report=report, findings=findings, estimate=estimate)
