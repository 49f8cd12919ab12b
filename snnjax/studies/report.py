"""Stage 8: ``DIR/report/`` with ``report.md``, PNG figures and ``results.json``.

The report embeds the figures, the table (our numbers with standard errors or seed spread, the
study's beside them where the setups match, an arrow where Sol-S exceeds Sol-F), the regimes,
the sanity check, the analyses, the configs used, versions, the device and wall times, and a plain
list of which of the study's findings this run reproduced.
"""

from __future__ import annotations

import os
import platform
import sys

import jax

from snnjax.studies import figures
from snnjax.studies import findings as findings_lib
from snnjax.studies import sanity as sanity_lib
from snnjax.studies import stages
from snnjax.train import config_io

UP = "↑"
# Result-file prefixes per stage name (see ``study.py``).
_STAGE_PREFIX = {"table": "measure", "fisher_trend": "trend"}


def environment() -> dict:
  """Versions and device of this process."""
  import flax  # pylint: disable=import-outside-toplevel
  import numpy  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  import snnjax  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  return {"python": sys.version.split()[0], "platform": platform.platform(),
          "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
          "numpy": numpy.__version__, "snnjax": snnjax.__version__,
          "backend": jax.default_backend(), "devices": [str(d) for d in devices],
          "device_kind": devices[0].device_kind if devices else None,
          "cpu_count": os.cpu_count()}


def _cell(cell, digits=4, err=True) -> str:
  if cell is None:
    return "-"
  mean = cell["mean"]
  text = f"{mean:.{digits}g}" if abs(mean) >= 1 or mean == 0 else f"{mean:.{digits}f}"
  if err:
    if cell.get("spread") is not None:
      text += f" ± {cell['spread']:.2g} (sd, {len(cell['values'])} seeds)"
    elif cell.get("stderr") is not None:
      text += f" ± {cell['stderr']:.2g}"
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
      text = _cell(r[metric], err=metric in ("tr_f", "tr_h", "jacobian")
                   or r[metric] is None or r[metric].get("spread") is not None)
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


def _fmt(x, digits=3) -> str:
  if x is None:
    return "-"
  if isinstance(x, float):
    return f"{x:.{digits}f}" if abs(x) < 1000 else f"{x:.4g}"
  return str(x)


def closing_gap_markdown(result: dict, outdir: str) -> list[str]:
  """The "Closing the gap" section: choices, a table of the variants beside Sol-S / Sol-F, the
  verdict per remedy, the figure and the variants' runs (Markdown lines)."""
  path = figures.closing_gap_figure(result, os.path.join(outdir, "closing_gap.png"))
  md = ["## Closing the gap", "",
        "Two remedies the study proposes for the Sol-S / Sol-F gap, run at one sparsity and "
        "compared with the table's Sol-S and Sol-F (same seeds). Choices:", ""]
  md += [f"- {line}" for line in result["choices"]]
  md += ["", "| solution | test acc | train error | Tr(F) | Tr(H) | gap closed |",
         "|---|---|---|---|---|---|"]
  verdicts = result["verdicts"]
  for r in result["rows"]:
    cells = []
    for metric in ("test_accuracy", "train_error", "tr_f", "tr_h"):
      cell = r[metric]
      if cell is None:
        cells.append("-")
        continue
      err = cell["sd"] if cell["sd"] is not None else cell.get("stderr")
      mean = cell["mean"]
      text = f"{mean:.4g}" if abs(mean) >= 1 else f"{mean:.4f}"
      if err is not None:
        text += f" ± {err:.2g}"
      cells.append(text)
    v = verdicts.get(r["name"])
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
  md += [f"- **{v['label']}**: {v['text']}." for v in verdicts.values()]
  for key, sc in sorted(result.get("scores", {}).items()):
    sm = sc["summary"]
    md.append(f"- Scores ({key}, `{sc['path']}`): {sm['num_examples']} examples, mean (the "
              f"Init-S Tr(F) of the train set) {sm['mean']:.4g}, median {sm['median']:.4g}, "
              f"10-90% {sm['q10']:.4g}-{sm['q90']:.4g}.")
  md += ["", f"![closing the gap]({os.path.basename(path)})", "",
         "| run | work dir | this session, s | train s | train acc | test acc |",
         "|---|---|---|---|---|---|"]
  for name, r in sorted(result["runs"].items()):
    md.append(f"| {name} | `runs/{os.path.basename(r['workdir'])}` | {r['wall_s']:.1f} | "
              f"{r['train_s']:.1f} | {_fmt(r['final'].get('train_accuracy'))} | "
              f"{_fmt(r['final'].get('test_accuracy'))} |")
  md.append("")
  return md


def write_report(config, results: dict, outdir: str) -> str:
  """Writes ``outdir/report.md``, the figures and ``results.json``; returns the report path."""
  os.makedirs(outdir, exist_ok=True)
  env = environment()
  results = dict(results)
  results["environment"] = env
  setups_match = config.preset == "paper"
  results["findings"] = findings_lib.evaluate_findings(results, setups_match)
  md = [f"# Generalization and memorization in sparse networks: study report "
        f"(preset `{config.preset}`)", ""]
  md += [f"Reproduce: `python scripts/study.py --config configs/study.py:{config.preset} "
         f"--workdir {results.get('workdir', 'DIR')}` (finished runs and results are reused).",
         ""]
  md += [f"Device: {env['backend']} ({env['device_kind']}, {len(env['devices'])} device(s), "
         f"{env['cpu_count']} CPU cores). Versions: python {env['python']}, jax {env['jax']}, "
         f"flax {env['flax']}, optax {env['optax']}, numpy {env['numpy']}, snnjax "
         f"{env['snnjax']}.", ""]
  if not setups_match:
    md += [f"The study's numbers are for {findings_lib.STUDY['setup']}; this preset's setup "
           "differs, so only the direction of each finding is compared.", ""]
  if config.get("departures"):
    md += ["## Departures from the study's protocol", ""]
    md += [f"- {line}" for line in config.departures]
    md.append("")

  seeds = len(config.seeds)
  md += ["## Findings", "",
         (f"The table's verdicts ({seeds} seeds) need the study's direction at every sparsity "
          "*and* a gap beyond the spread between seeds: every seed's Sol-S value beyond every "
          "seed's Sol-F value (the ranges over seeds do not overlap). **not reproduced**: the "
          "opposite direction beyond the spread at some sparsity. **within seed spread**: "
          "neither (some gap, of either sign, is not beyond the spread). Ranges over seeds are "
          "shown as low-high." if seeds > 1 else
          "Verdicts compare means (one seed); they do not test significance: with one seed an "
          "accuracy difference of a few test examples is noise. Several seeds (`config.seeds`) "
          "give the spread."), "",
         "| finding | study | ours | status |", "|---|---|---|---|"]
  for f in results["findings"]:
    md.append(f"| {f['claim']} | {f['study']} | {f['ours']} | **{f['status']}** |")
  md.append("")

  if "table" in results:
    rows = results["table"]["rows"]
    path = figures.table_figure(rows, os.path.join(outdir, "table.png"))
    md += ["## The table", "", table_markdown(rows, setups_match), "",
           "Train error on the whole train split, test accuracy on the whole test split "
           "(eval-mode BatchNorm). ± is the estimator's standard error with one seed (none for "
           "exact values), the standard deviation over seeds with several. **bold ↑**: Sol-S "
           "above Sol-F at the same sparsity.", "", "Measurement protocol:", ""]
    md += [f"- {line}" for line in results["table"]["settings_text"]]
    md += ["", f"![table]({os.path.basename(path)})", ""]

  if "regimes" in results:
    md += ["## Regimes", "",
           f"A sparse solution is in the **optimization regime** when its train error exceeds "
           f"its Sol-D's (same seed) by more than {results['regimes']['threshold']:g} "
           "(absolute), else in the **generalization regime**.", "",
           "| solution | seed | train error | Sol-D train error | gap | regime |",
           "|---|---|---|---|---|---|"]
    for r in results["regimes"]["runs"]:
      md.append(f"| {r['label']} | {r['seed']} | {r['train_error']:.4f} | "
                f"{r['dense_train_error']:.4f} | {r['gap']:+.4f} | {r['classification']} |")
    md.append("")

  if results.get("sanity"):
    md += ["## Sanity check: Tr(H) = Tr(F) for ReLU nets with eval-mode BatchNorm", "",
           "Both on the same training examples, all trainable params, active coordinates; "
           "Tr(H) by Hutchinson, Tr(F) the exact true-Fisher trace. They should agree within "
           f"the Hutchinson standard error (criterion: |z| <= {sanity_lib.Z_AGREE:g}, z = "
           "(Tr(H) - Tr(F)) / stderr).", "",
           "| solution | examples | Tr(H) ± stderr (probes) | exact Tr(F) | z | agree |",
           "|---|---|---|---|---|---|"]
    for name, r in results["sanity"].items():
      h = r["tr_h"]
      md.append(f"| {r['label']} | {h['num_examples']} | {h['value']:.4g} ± "
                f"{h['stderr']:.2g} ({h['num_probes']}) | {r['tr_f_exact']['value']:.4g} | "
                f"{r['z']:+.2f} | {'yes' if r['agree'] else 'NO'} |")
    md.append("")

  if results.get("fisher_trend"):
    path = figures.fisher_trend_figure(results["fisher_trend"], results["fisher_trend_runs"],
                                       os.path.join(outdir, "fisher_trend.png"))
    ft = config.fisher_trend
    md += ["## Fisher trend", "",
           f"Tr(F) ({ft.kind}, {ft.params}, {ft.num_examples} fixed train examples) at the init "
           f"and every {ft.every_epochs} epochs, measured from the kept checkpoints.", "",
           f"![fisher trend]({os.path.basename(path)})", ""]

  if results.get("label_noise"):
    path = figures.label_noise_figure(results["label_noise"],
                                      os.path.join(outdir, "label_noise.png"))
    ln = config.label_noise
    md += ["## Label noise and memorization", "",
           f"Sparsity {ln.sparsity:.2f}, {ln.rate:.0%} symmetric label noise (`{ln.kind}`); "
           "curves per epoch, eval mode.", "",
           f"![label noise]({os.path.basename(path)})", "",
           "| solution | seed | noisy fraction | train acc (noisy labels) | clean train acc | "
           "noisy: correct | noisy: memorized | noisy: other | clean test acc |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name, r in sorted(results["label_noise"].items()):
      f = r["final"]
      md.append(f"| {r['label']} | {r['seed']} | {_fmt(f['effective_noise_rate'])} | "
                f"{_fmt(f['train_accuracy'])} | {_fmt(f['clean_accuracy'])} | "
                f"{_fmt(f.get('noisy_correct'))} | {_fmt(f.get('noisy_memorized'))} | "
                f"{_fmt(f.get('noisy_other'))} | {_fmt(f['test_accuracy'])} |")
    md.append("")

  if results.get("disagreement"):
    path = figures.disagreement_figure(results["disagreement"],
                                       os.path.join(outdir, "disagreement.png"))
    md += ["## Disagreement between Sol-S and Sol-F", "",
           f"Sparsity {config.disagreement.sparsity:.2f}; `clean`: the balanced train set, "
           f"`longtail`: a long-tailed train set (imbalance ratio "
           f"{config.disagreement.imbalance_ratio:g}) with its own Sol-D / Sol-F / Sol-S. Classes "
           "by true label.", "",
           "| setup | split | disagree | Sol-S right | Sol-F right | neither | Sol-S acc | "
           "Sol-F acc | tail share (disagree / examples) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for key, r in sorted(results["disagreement"].items()):
      for split in ("train", "test"):
        s = r[split]
        md.append(f"| {key} | {split} | {s['num_disagree']} / {s['num_examples']} | "
                  f"{_fmt(s['scratch_correct'])} | {_fmt(s['finetune_correct'])} | "
                  f"{_fmt(s['neither_correct'])} | {_fmt(s['scratch_accuracy'])} | "
                  f"{_fmt(s['finetune_accuracy'])} | {_fmt(s['tail_share_of_disagreements'], 2)}"
                  f" / {_fmt(s['tail_share_of_examples'], 2)} |")
    md += ["", f"![disagreement]({os.path.basename(path)})", ""]

  if results.get("interpolation"):
    seed_key = sorted(results["interpolation"])[0]
    lines = results["interpolation"][seed_key]
    p1 = figures.interpolation_figure(lines, os.path.join(outdir, "interpolation.png"))
    p2 = figures.cosine_figure(lines, results.get("num_classes", 10),
                               os.path.join(outdir, "interpolation_cosines.png"))
    it = config.interpolation
    md += ["## Interpolation", "",
           f"theta(alpha) = (1 - alpha) start + alpha Sol-F within the mask, sparsity "
           f"{it.sparsity:.2f} ({seed_key}); BatchNorm statistics recomputed on the training "
           "inputs at every alpha (endpoints included). Cosines: per-example negative gradient "
           "(cross-entropy, true labels, active coordinates) against Sol-F - start, on "
           f"{it.num_examples} train examples. The study's direction Sol-F - theta(alpha) equals "
           "(1 - alpha)(Sol-F - start): the same cosines for alpha < 1.", "",
           f"![interpolation]({os.path.basename(p1)})", "",
           f"![cosines]({os.path.basename(p2)})", "",
           "| line | endpoints exact | same mask | train loss monotone on [0, 1] | Sol-F test acc "
           "(recomputed / stored BN stats) | cosine mean (median) per alpha |",
           "|---|---|---|---|---|---|"]
    for name, line in sorted(lines.items()):
      end_acc = line["test_accuracy"][line["alphas"].index(1.0)] if 1.0 in line["alphas"] else None
      cos = ", ".join(f"{a}: {c['summary'].get('mean', float('nan')):.3f} "
                      f"({c['summary'].get('median', float('nan')):.3f})"
                      for a, c in sorted(line["cosines"].items(), key=lambda kv: float(kv[0])))
      md.append(f"| {name} | {line['endpoints_exact']} | {line['same_mask']} | "
                f"{line['monotone_train_loss_01']} | {_fmt(end_acc)} / "
                f"{_fmt(line['end_stored_stats']['test_accuracy'])} | {cos} |")
    md.append("")

  if results.get("closing_gap"):
    md += closing_gap_markdown(results["closing_gap"], outdir)

  compute = {}
  for name, seconds in results.get("cache", {}).get("compute_times_s", {}).items():
    stage = name.split("-")[0]
    compute[stage] = compute.get(stage, 0.0) + seconds
  # Training: the epochs' steps of every run (evaluation and checkpoints excluded).
  compute["solutions"] = sum(r.get("train_s", 0.0) for r in results.get("runs", {}).values())
  md += ["## Wall times", "", "This session (cached results and finished runs are reused, so a "
         "rerun is fast); compute: the time the stage's results took when they were computed (for "
         "`solutions`: the training steps of the study's runs, evaluation excluded; the "
         "closing-the-gap variants are trained inside `closing_gap`).",
         "", "| stage | this session, s | compute, s |", "|---|---|---|"]
  for k, v in results.get("wall_times_s", {}).items():
    md.append(f"| {k} | {v:.1f} | {_fmt(compute.get(_STAGE_PREFIX.get(k, k)), 1)} |")
  md += ["", "Training runs (train s: the epochs' training steps, evaluation excluded):", "",
         "| run | work dir | this session, s | train s | train acc | test acc |",
         "|---|---|---|---|---|---|"]
  for name, r in sorted(results.get("runs", {}).items()):
    final = r["final"]
    md.append(f"| {name} | `runs/{os.path.basename(r['workdir'])}` | {r['wall_s']:.1f} | "
              f"{r.get('train_s', 0.0):.1f} | {_fmt(final.get('train_accuracy'))} | "
              f"{_fmt(final.get('test_accuracy'))} |")
  md += ["", f"Results computed this session: {len(results.get('cache', {}).get('computed', []))},"
         f" reused from the cache: {len(results.get('cache', {}).get('reused', []))}.", ""]

  md += ["## Configs used", "", "Study config:", "", "```json",
         config_io.format_config(config), "```", "",
         "Training configs: each run's `config.json` in its work dir under `runs/`.", ""]

  report_path = os.path.join(outdir, "report.md")
  with open(report_path, "w") as f:
    f.write("\n".join(md) + "\n")
  results["study_config"] = stages.to_json(config)
  stages.write_json(os.path.join(outdir, "results.json"), results)
  return report_path
