"""The report: ``DIR/report/`` with ``report.md``, the stages' figures and ``results.json``.

The report's header (how to reproduce it, the device and versions, departures from the study's
protocol), the findings table (every stage's rows), then each stage's section in registry order,
wall times and the configs used. The sections and findings come from the stages themselves
(:mod:`snnjax.studies.stage`).
"""

from __future__ import annotations

import os
import platform
import sys

import jax

from snnjax.studies import cache as cache_lib
from snnjax.studies import findings as findings_lib
from snnjax.studies import stages as stages_lib
from snnjax.studies.markdown import fmt, runs_table
from snnjax.studies.stage import ReportContext
from snnjax.train import config_io

# Result-file prefixes per stage name, where they differ from the name.
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


def evaluate_findings(config, results: dict, setups_match: bool, outdir: str = "") -> list[dict]:
  """Every stage's rows of the findings table (a stage that did not run says "not measured" for
  what it would have tested, or nothing)."""
  rc = ReportContext(config, results, outdir, setups_match)
  out = []
  for stage in stages_lib.REGISTRY:
    out.extend(stage.findings(rc, results.get(stage.name)))
  for f in out:
    f["setups_match"] = setups_match
  return out


def _findings_section(config, found: list[dict]) -> list[str]:
  seeds = len(config.seeds)
  md = ["## Findings", "",
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
  for f in found:
    md.append(f"| {f['claim']} | {f['study']} | {f['ours']} | **{f['status']}** |")
  return md + [""]


def _wall_times_section(results: dict) -> list[str]:
  compute = {}
  for name, seconds in results.get("cache", {}).get("compute_times_s", {}).items():
    stage = name.split("-")[0]
    compute[stage] = compute.get(stage, 0.0) + seconds
  # Training: the epochs' steps of every run (evaluation and checkpoints excluded).
  compute["solutions"] = sum(r.get("train_s", 0.0) for r in results.get("runs", {}).values())
  md = ["## Wall times", "", "This session (cached results and finished runs are reused, so a "
         "rerun is fast); compute: the time the stage's results took when they were computed (for "
         "`solutions`: the training steps of the study's runs, evaluation excluded; the "
         "closing-the-gap variants are trained inside `closing_gap`).",
         "", "| stage | this session, s | compute, s |", "|---|---|---|"]
  for k, v in results.get("wall_times_s", {}).items():
    md.append(f"| {k} | {v:.1f} | {fmt(compute.get(_STAGE_PREFIX.get(k, k)), 1)} |")
  md += ["", "Training runs (train s: the epochs' training steps, evaluation excluded):", ""]
  md += runs_table(results.get("runs", {}))
  md += ["", f"Results computed this session: {len(results.get('cache', {}).get('computed', []))},"
         f" reused from the cache: {len(results.get('cache', {}).get('reused', []))}.", ""]
  return md


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def portable(value, workdir: str):
  """``value`` (JSON-able) with this machine's absolute paths made relative: the study directory
  relative to the current directory (``DIR`` when it lies outside it), the repository's and the
  current directory's own paths relative to them. Reports name no path of the machine that ran
  them, so a committed report reads the same from any clone."""
  shown = os.path.relpath(os.path.abspath(workdir)) if workdir else "DIR"
  if shown.startswith(".."):
    shown = "DIR"
  prefixes = [(os.path.abspath(workdir), shown)] if workdir else []
  prefixes += [(REPO_ROOT + os.sep, ""), (os.getcwd() + os.sep, ""), (REPO_ROOT, ".")]

  def fix(v):
    if isinstance(v, str):
      for prefix, replacement in prefixes:
        v = v.replace(prefix, replacement)
      return v
    if isinstance(v, dict):
      return {k: fix(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
      return [fix(x) for x in v]
    return v

  return fix(value)


def write_report(config, results: dict, outdir: str) -> str:
  """Writes ``outdir/report.md``, the figures and ``results.json`` (with :func:`portable` paths);
  returns the report path."""
  os.makedirs(outdir, exist_ok=True)
  env = environment()
  results = dict(results)
  results["environment"] = env
  setups_match = config.preset == "paper"
  results["findings"] = evaluate_findings(config, results, setups_match, outdir)
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
  md += _findings_section(config, results["findings"])
  rc = ReportContext(config, results, outdir, setups_match)
  for stage in stages_lib.REGISTRY:
    if results.get(stage.name) is not None:
      md += stage.report(rc, results[stage.name])
  md += _wall_times_section(results)

  md += ["## Configs used", "", "Study config:", "", "```json",
         config_io.format_config(config), "```", "",
         "Training configs: each run's `config.json` in its work dir under `runs/`.", ""]

  workdir = results.get("workdir", "")
  report_path = os.path.join(outdir, "report.md")
  with open(report_path, "w") as f:
    f.write(portable("\n".join(md), workdir) + "\n")
  results["study_config"] = cache_lib.to_json(config)
  cache_lib.write_json(os.path.join(outdir, "results.json"), portable(results, workdir))
  return report_path
