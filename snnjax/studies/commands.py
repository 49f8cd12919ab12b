"""Command lines of ``scripts/study.py``, ``scripts/measure.py`` and ``scripts/interpolate.py``.

Bad input prints one ``error: <message>`` line on stderr and returns 2, before anything is written.

  python scripts/study.py --config configs/study.py:quick --workdir runs/study-quick
  python scripts/study.py --config configs/study.py:quick --config.seeds=0,1 --workdir DIR
  python scripts/study.py --config configs/study.py:cifar10_cpu --workdir DIR --dry-run
  python scripts/study.py --config configs/study.py:quick --workdir DIR --workers 2  # 2 processes
  python scripts/measure.py --workdir runs/finetune90-quick [--workdir ...] [--checkpoint PATH ...]
  python scripts/measure.py --workdir DIR --config configs/study.py:quick --config.fisher.kind=exact
  python scripts/interpolate.py runs/scratch90-quick/init runs/scratch90-quick --out DIR/
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from snnjax import xla_cpu
from snnjax.errors import UserError
from snnjax.train import cli as train_cli

def study_flags(argv: list[str]) -> flags.FlagValues:
  """Fresh flags for one ``argv`` (see ``snnjax.train.cli.train_flags``)."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "Study config file (configs/study.py:preset).",
                                  flag_values=flag_values, lock_config=False, sys_argv=list(argv))
  flags.DEFINE_string("workdir", None, "Study directory (runs, results, report).",
                      flag_values=flag_values)
  flags.DEFINE_list("stages", None, "Stages to run (default: all).", flag_values=flag_values)
  flags.DEFINE_bool("dry_run", False, "Print the plan (every run, what DIR already holds) and an "
                    "estimated wall time from step times measured here; train nothing.",
                    flag_values=flag_values)
  return flag_values


def _quiet_libraries() -> None:
  """Orbax logs a warning per read-only checkpoint opened; keep stderr for progress lines."""
  absl_logging.set_verbosity(absl_logging.ERROR)


def _first_line(e: BaseException) -> str:
  """One line for ``e``; a config file's own error (after a traceback) is appended."""
  lines = [l for l in str(e).strip().splitlines() if l.strip()]
  if not lines:
    return type(e).__name__
  if any(l.startswith("Traceback") for l in lines):
    return f"{lines[0].rstrip(':')}: {lines[-1].strip()}"
  return lines[0]


def parse_study(argv: list[str]):
  """``(config, workdir, stages, dry_run)`` from ``argv`` (program name first), or UserError."""
  argv = ["--dry_run" if a == "--dry-run" else a for a in argv]  # both spellings
  spec = train_cli.config_file_arg(argv)
  if spec is not None:
    # an unknown field: named, with the closest known ones ("did you mean")
    train_cli.check_override_fields(argv, _check_study_config(spec))
  flag_values = study_flags(argv)
  try:
    rest = flag_values(argv)
  except KeyError as e:
    raise train_cli.override_error(e) from e
  except (flags.Error, FileNotFoundError, ImportError, AttributeError, TypeError, ValueError) as e:
    if train_cli.caused_by_key_error(e):
      raise train_cli.override_error(e) from e
    raise UserError(_first_line(e)) from e
  if len(rest) > 1:
    raise UserError(f"unexpected argument {rest[1]!r} (settings are --config.FIELD=VALUE)")
  if flag_values["config"].value is None:
    raise UserError("--config is required, e.g. --config configs/study.py:quick")
  if not flag_values.workdir:
    raise UserError("--workdir is required, e.g. --workdir runs/study-quick")
  from snnjax.train import config_io  # pylint: disable=import-outside-toplevel
  config_io.check_path(flag_values.workdir, "--workdir")
  if config_io.is_run_dir(flag_values.workdir):
    raise UserError(f"--workdir {flag_values.workdir} is a training run's work dir (config.json, "
                    "checkpoints/), not a study directory: give the study its own --workdir")
  stages = tuple(flag_values.stages) if flag_values.stages else None
  from snnjax.studies.study import STAGES  # pylint: disable=import-outside-toplevel
  unknown = sorted(set(stages or ()) - set(STAGES))
  if unknown:  # also for --dry_run, which plans every stage
    raise UserError(f"unknown stages {unknown}; choose from {STAGES}")
  return flag_values.config, flag_values.workdir, stages, bool(flag_values.dry_run)


def _load_config_file(spec: str):
  """``config_io.load_config_spec(spec)``; whatever a user's file raises, or a ``get_config``
  that returns no ConfigDict, becomes one UserError line."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from snnjax.train import config_io  # pylint: disable=import-outside-toplevel
  try:
    config = config_io.load_config_spec(spec)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (a user's file may raise anything)
    raise UserError(f"cannot load config {spec}: {type(e).__name__}: {_first_line(e)}") from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(f"{spec}: get_config() returned {type(config).__name__}, not a ConfigDict")
  return config


def _check_study_config(spec: str):
  """Loads ``spec`` once (and returns it): a file that raises, returns no ConfigDict, or holds a
  training config gets its own one-line error (before absl's flag parser wraps it in a
  traceback)."""
  if not os.path.isfile(spec.partition(":")[0]):
    raise UserError(f"config file not found: {spec.partition(':')[0]}")
  config = _load_config_file(spec)
  if "seeds" not in config or "measure" not in config:
    hint = " (a training config? use scripts/train.py)" if "regime" in config else ""
    raise UserError(f"{spec} is not a study config (no field seeds/measure){hint}")
  return config


def study_main(argv: list[str] | None = None) -> int:
  """``scripts/study.py``: runs the study; prints the report path on stdout."""
  from snnjax.studies.study import report_dir, run_study  # pylint: disable=import-outside-toplevel
  from snnjax.studies import workers as workers_lib  # pylint: disable=import-outside-toplevel
  argv = sys.argv if argv is None else argv
  if train_cli.wants_help(argv, study_flags(argv), __doc__):
    return 0
  xla_cpu.tune()
  _quiet_libraries()
  try:
    argv, workers = workers_lib.split_workers_flag(list(argv))
    config, workdir, stages, dry_run = parse_study(argv)
    if workers > 1 and not dry_run:  # every check above passed: the workers start from here
      code = workers_lib.run_workers(argv, workers)
      if code == 0:
        print(os.path.join(report_dir(config, workdir), "report.md"))
      return code
    if dry_run:
      import jax  # pylint: disable=import-outside-toplevel
      from snnjax.studies import dry_run as dry_run_lib  # pylint: disable=import-outside-toplevel
      plan = dry_run_lib.plan_study(config, workdir)
      print(dry_run_lib.format_plan(plan, backend=jax.default_backend(),
                                    device_count=jax.device_count()))
      return 0
    run_study(config, workdir, stages_to_run=stages)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(os.path.join(report_dir(config, workdir), "report.md"))
  return 0


def exit_cli(code: int) -> None:
  """``sys.exit(code)`` for the scripts; after an error (2) without the interpreter's finalization:
  reads that tensorstore still has in flight after a failed checkpoint restore would print
  tracebacks ("RuntimeError: Event loop is closed") after the one error line. Nothing is written
  after an error, so nothing is lost by skipping it."""
  sys.stdout.flush()
  sys.stderr.flush()
  if code == 2:
    os._exit(2)  # pylint: disable=protected-access
  sys.exit(code)


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise UserError(message.splitlines()[0])


def _measure_parser() -> argparse.ArgumentParser:
  from snnjax.studies import measure as measure_lib  # pylint: disable=import-outside-toplevel
  p = _Parser(
      prog="measure.py", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
      description=(
          "Measure trained solutions (train error, test accuracy, Tr(H), Tr(F), Jacobian norm)\n"
          "with the study's protocol; every setting can be overridden with --config.FIELD=VALUE."),
      epilog="measurement settings (--config.FIELD=VALUE overrides; the defaults shown, "
             "`--config.hessian.enabled=false` skips Tr(H)):\n"
             + "\n".join(train_cli.field_lines(measure_lib.default_settings())))
  p.add_argument("--workdir", action="append", default=[],
                 help="a training run's work dir (its final checkpoint), or a study directory "
                      "(every run under its runs/); repeatable")
  p.add_argument("--checkpoint", action="append", default=[],
                 help="WORKDIR/init, WORKDIR/checkpoints/<step>, ...; repeatable")
  p.add_argument("--config", default=None,
                 help="a study config whose `measure` settings to start from "
                      "(configs/study.py:quick; default: the study's protocol)")
  p.add_argument("--out", default=None,
                 help="output prefix for .md and .json (default: measure next to the first input)")
  p.add_argument("--quiet", action="store_true", help="no progress lines")
  return p


def parse_measure(argv: list[str]):
  """``(args, overrides)`` from ``argv`` (program name first): the flags, and the
  ``--config.FIELD=VALUE`` overrides of the measurement settings (in order)."""
  args, rest = _measure_parser().parse_known_args(argv[1:])
  overrides = []
  for arg in rest:
    attaches = (overrides and not arg.startswith("-") and "=" not in overrides[-1]
                and train_cli.is_override(overrides[-1]))
    if train_cli.is_override(arg) or attaches:
      overrides.append(arg)
    else:
      raise UserError(f"unrecognized argument {arg} (measurement settings are "
                      "--config.FIELD=VALUE overrides, e.g. --config.fisher.kind=exact; see --help)")
  return args, overrides


def measure_settings(config_spec: str | None, overrides: list[str]):
  """The measurement settings: ``measure.default_settings()`` (or the ``measure`` field of the
  study config ``config_spec``), then ``overrides`` (``--config.FIELD=VALUE``, fields relative to
  the settings: ``--config.hessian.max_probes=20``); validated."""
  from snnjax.studies import measure as measure_lib  # pylint: disable=import-outside-toplevel
  if config_spec:
    study = _load_config_file(config_spec)
    if "measure" not in study:
      raise UserError(f"{config_spec} has no `measure` settings (use a study config)")
    settings = study.measure
  else:
    settings = measure_lib.default_settings()
  settings = train_cli.override_config(settings, overrides)
  measure_lib.validate_settings(settings)
  return settings


def _measure_markdown(rows: list[dict], settings_text: list[str], settings=None) -> str:
  """The measure.md table; each estimate's column says what its ± covers
  (``measure.plus_minus``; the protocol's last line says it in full)."""
  from snnjax.studies import measure as measure_lib  # pylint: disable=import-outside-toplevel
  pm = measure_lib.plus_minus(settings or measure_lib.default_settings())

  def est(e):
    if e is None:
      return "-"
    text = f"{e['value']:.5g}"
    return text + (f" ± {e['stderr']:.2g}" if e.get("stderr") is not None else "")

  def head(key, name):
    return f"{name} ± {pm[key]['short']}" if pm[key] else f"{name} (exact, no ±)"
  lines = ["| solution | regime | sparsity | step | train error | test acc | "
           f"{head('tr_f', 'Tr(F)')} | {head('tr_h', 'Tr(H)')} | {head('jacobian', 'Jacobian')} |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    m = r["measurement"]
    lines.append(f"| `{r['path']}` | {r['regime']} | {r['sparsity']:.2f} | {r['step']} | "
                 f"{m['train_error']:.4f} | {m['test_accuracy']:.4f} | {est(m['tr_f'])} | "
                 f"{est(m['tr_h'])} | {est(m['jacobian'])} |")
  return "\n".join(lines + ["", "Protocol:", ""] + [f"- {t}" for t in settings_text]) + "\n"


def expand_workdir(path: str) -> list[str]:
  """``[path]`` for a run's work dir; every run under ``path/runs`` for a study directory."""
  if os.path.isfile(os.path.join(path, "config.json")):
    return [path]
  runs_dir = os.path.join(path, "runs")
  if os.path.isdir(runs_dir):
    found = sorted(os.path.join(runs_dir, d) for d in os.listdir(runs_dir)
                   if os.path.isfile(os.path.join(runs_dir, d, "config.json")))
    if found:
      return found
  raise UserError(f"{path} is neither a run's work dir (no config.json) nor a study directory "
                  "(no runs/*/config.json)")


def measure_out(out: str | None, first_path: str, *, name: str = "measure",
                suffixes: tuple = (".md", ".json")) -> str:
  """The output prefix (``PREFIX.md``, ``PREFIX.json``): ``--out`` (a directory, ``DIR/``, gets
  ``DIR/<name>``) or ``<name>`` next to the first input; its directory must be creatable."""
  from snnjax.train import config_io  # pylint: disable=import-outside-toplevel
  if not out:
    out = os.path.join(os.path.abspath(first_path), name)
  elif out.endswith(os.sep) or os.path.isdir(out):
    out = os.path.join(out, name)
  out = os.path.abspath(out)
  config_io.check_path(os.path.dirname(out), "--out")
  for suffix in suffixes:
    if os.path.isdir(out + suffix):
      raise UserError(f"--out: {out + suffix} is a directory")
  return out


def measure_main(argv: list[str] | None = None) -> int:
  """``scripts/measure.py``: measures solutions, writes ``OUT.md`` and ``OUT.json``."""
  argv = sys.argv if argv is None else argv
  xla_cpu.tune()
  _quiet_libraries()
  try:
    args, overrides = parse_measure(argv)
    settings = measure_settings(args.config, overrides)  # bad settings fail before any loading
    for p in list(args.workdir) + list(args.checkpoint):
      if not os.path.exists(p):
        raise UserError(f"no work dir or checkpoint at {p}")
    paths = [r for w in args.workdir for r in expand_workdir(w)] + list(args.checkpoint)
    if not paths:
      raise UserError("give at least one --workdir DIR or --checkpoint PATH")
    out = measure_out(args.out, paths[0])
    from snnjax.train.run_dir import RunDir  # pylint: disable=import-outside-toplevel
    for w in [r for w in args.workdir for r in expand_workdir(w)]:
      run = RunDir(w)
      if run.final_metrics() is None:  # verified: a finished run's solution restores intact
        raise UserError(f"{w} is not finished (trained {run.trained_epochs} epochs); finish it "
                        "with scripts/train.py, or measure a checkpoint of it with --checkpoint "
                        f"{w}/checkpoints/STEP")
    from snnjax import data as data_lib  # pylint: disable=import-outside-toplevel
    from snnjax.studies import measure as measure_lib  # pylint: disable=import-outside-toplevel
    from snnjax.train.solution import load_solution  # pylint: disable=import-outside-toplevel
    solutions = [load_solution(p) for p in paths]  # all load (or fail) before measuring
    datasets = {}
    for sol in solutions:  # a diverged run (NaN params) is refused before anything is written
      measure_lib.check_finite_solution(sol)
      key = json.dumps(sol.config.dataset.to_dict(), sort_keys=True, default=str)
      if key not in datasets:
        datasets[key] = data_lib.load_dataset(sol.config.dataset)
      measure_lib.check_solution_dataset(sol, datasets[key])
    if os.path.dirname(out):
      os.makedirs(os.path.dirname(out), exist_ok=True)
    log = (lambda m: None) if args.quiet else (lambda m: print(f"[measure] {m}", file=sys.stderr,
                                                                flush=True))
    rows = []
    for i, (path, sol) in enumerate(zip(paths, solutions)):
      log(f"[{i + 1}/{len(paths)}] {path} ({sol.config.regime}, sparsity {sol.config.sparsity})")
      dataset = datasets[json.dumps(sol.config.dataset.to_dict(), sort_keys=True, default=str)]
      m = measure_lib.measure_solution(sol, dataset, settings, log=lambda s: log(f"  {s}"))
      rows.append({"path": path, "checkpoint": sol.path, "regime": sol.config.regime,
                   "sparsity": float(sol.config.sparsity), "step": sol.step, "epoch": sol.epoch,
                   "measurement": m})
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from snnjax.studies import cache as cache_lib  # pylint: disable=import-outside-toplevel
  text = measure_lib.describe_settings(settings)
  with open(out + ".md", "w") as f:
    f.write(_measure_markdown(rows, text, settings))
  cache_lib.write_json(out + ".json", {"settings": settings, "settings_text": text,
                                       "plus_minus": measure_lib.plus_minus(settings), "rows": rows})
  print(json.dumps({"markdown": out + ".md", "json": out + ".json"}))
  return 0


def pilot_main(argv: list[str] | None = None) -> int:
  """``scripts/pilot.py``: trains the convergence pilot's candidates, writes OUT/pilot.{json,png}."""
  argv = sys.argv if argv is None else argv
  xla_cpu.tune()
  _quiet_libraries()
  parser = argparse.ArgumentParser(prog="pilot.py", description=(
      "Dense candidates on real CIFAR-10: train error, test accuracy and memorized noisy labels "
      "against images processed and wall time."))
  parser.add_argument("--workdir", required=True, help="one work dir per candidate under it")
  parser.add_argument("--out", required=True, help="folder for pilot.json and pilot.png")
  parser.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
  parser.add_argument("--npz", default=None, help="CIFAR-10 npz (default ../shared/data/cifar10.npz)")
  parser.add_argument("--collect-only", action="store_true", help="train nothing; redraw")
  parser.add_argument("--time-steps", action="store_true",
                      help="also time each architecture's train step (run on an idle machine): "
                           "the summary's idle cost to fit")
  try:
    try:
      args = parser.parse_args(argv[1:])
    except SystemExit as e:
      return 0 if e.code == 0 else 2
    from snnjax.studies import pilot  # pylint: disable=import-outside-toplevel
    from snnjax.train import config_presets  # pylint: disable=import-outside-toplevel
    chosen = pilot.select([n for n in args.only.split(",") if n])
    npz = args.npz or config_presets.CIFAR10_NPZ
    if not args.collect_only and not os.path.isfile(npz):
      raise UserError(f"no CIFAR-10 npz at {npz} (see ../shared/data/README-cifar10.md)")
    os.makedirs(args.out, exist_ok=True)
    from snnjax.studies import cache as cache_lib  # pylint: disable=import-outside-toplevel
    for c in ([] if args.collect_only else chosen):
      print(f"[pilot] {c.name}: {c.about}", file=sys.stderr, flush=True)
      pilot.train(c, args.workdir, npz)
      result = pilot.collect(args.workdir)
      cache_lib.write_json(os.path.join(args.out, "pilot.json"), result)
    result = pilot.collect(args.workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  timings_path = os.path.join(args.out, "step_seconds.json")
  if args.time_steps:
    cache_lib.write_json(timings_path, pilot.step_seconds_per_image(
        [c for c in pilot.CANDIDATES if c.name in result["runs"]], npz, args.workdir))
  timings = cache_lib.read_json(timings_path) if os.path.isfile(timings_path) else None
  result["summary"] = pilot.summarize(result, timings)
  cache_lib.write_json(os.path.join(args.out, "pilot.json"), result)
  with open(os.path.join(args.out, "pilot.md"), "w") as f:
    f.write("\n".join(pilot.markdown(result["summary"])) + "\n")
  pilot.plot(result, os.path.join(args.out, "pilot.png"))
  print(json.dumps({"json": os.path.join(args.out, "pilot.json"),
                    "figure": os.path.join(args.out, "pilot.png")}))
  return 0


def budget_main(argv: list[str] | None = None) -> int:
  """``scripts/budget_sweep.py``: the budget study at several sparse epochs, then one summary."""
  argv = sys.argv if argv is None else argv
  xla_cpu.tune()
  _quiet_libraries()
  parser = argparse.ArgumentParser(prog="budget_sweep.py", description=(
      "The Sol-F / Sol-S comparison at several sparse-run budgets (a <preset>_budget study "
      "config); writes DIR/budget-sweep.md and .json."))
  parser.add_argument("--config", required=True, help="e.g. configs/study.py:cifar10_fit_budget")
  parser.add_argument("--workdir", required=True, help="the base study's directory")
  parser.add_argument("--epochs", required=True, help="comma-separated sparse epochs, e.g. 10,20,40")
  parser.add_argument("--seeds", default="", help="comma-separated seeds (default: the config's)")
  parser.add_argument("--summary-only", action="store_true", help="train nothing; summarize")
  try:
    try:
      args = parser.parse_args(argv[1:])
    except SystemExit as e:
      return 0 if e.code == 0 else 2
    try:
      epochs = [int(e) for e in args.epochs.split(",") if e.strip()]
      seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as e:
      raise UserError(f"--epochs and --seeds take comma-separated integers ({e})") from None
    if not epochs or any(not 1 <= e <= 100_000 for e in epochs):
      raise UserError(f"--epochs must name epochs in [1, 100000], got {args.epochs!r}")
    if any(not 0 <= s < 2**31 for s in seeds):
      raise UserError(f"--seeds must be in [0, 2^31), got {args.seeds!r}")
    _check_study_config(args.config)
    config = _load_config_file(args.config)
    if not int(config.get("sparse_epochs", 0)):
      raise UserError(f"{args.config} is not a budget config (sparse_epochs is 0); use a "
                      "configs/study.py:<preset>_budget preset")
    from snnjax.studies import budget  # pylint: disable=import-outside-toplevel
    from snnjax.studies import study as study_lib  # pylint: disable=import-outside-toplevel
    for e in ([] if args.summary_only else epochs):  # every budget's config validates first
      study_lib.validate(budget.sweep_config(config, e, seeds))
    summary = (budget.summarize(args.workdir, epochs) if args.summary_only
               else budget.run_sweep(config, args.workdir, epochs, seeds=seeds))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from snnjax.studies import cache as cache_lib  # pylint: disable=import-outside-toplevel
  out = os.path.join(args.workdir, "budget-sweep")
  cache_lib.write_json(out + ".json", summary)
  with open(out + ".md", "w") as f:
    f.write("\n".join(budget.markdown(summary)) + "\n")
  print(json.dumps({"markdown": out + ".md", "json": out + ".json"}))
  return 0


def _interpolate_parser() -> argparse.ArgumentParser:
  from snnjax.studies import interpolate as interp  # pylint: disable=import-outside-toplevel
  p = _Parser(
      prog="interpolate.py", allow_abbrev=False,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description=(
          "Loss and accuracy (train and test) along theta(alpha) = (1 - alpha) a + alpha b between\n"
          "two checkpoints, the barrier heights above the chord between the endpoints, their L2\n"
          "distance and test disagreement; writes OUT.json and OUT.png.\n"
          "A and B: a work dir (its last checkpoint), WORKDIR/init (Init-S, Init-F, Sol-D's init)\n"
          "or WORKDIR/checkpoints/STEP."),
      epilog="  python scripts/interpolate.py runs/scratch90-quick/init runs/scratch90-quick\n"
             "  python scripts/interpolate.py runs/dense-quick runs/finetune90-quick --mask b\n"
             "  python scripts/interpolate.py RUN RUN --step-a 220 --bn stored --alphas 0,0.5,1")
  p.add_argument("a", help="checkpoint at alpha = 0")
  p.add_argument("b", help="checkpoint at alpha = 1")
  p.add_argument("--step-a", type=int, default=None, help="a kept checkpoint step of A's work dir")
  p.add_argument("--step-b", type=int, default=None, help="a kept checkpoint step of B's work dir")
  p.add_argument("--alphas", default=",".join(f"{x:g}" for x in interp.DEFAULT_ALPHAS),
                 help="comma-separated alphas (0 and 1 are always added); default %(default)s")
  p.add_argument("--mask", default="union", choices=interp.MASKS,
                 help="where the segment lives: the union of the two masks (default), their "
                      "intersection, or one endpoint's mask")
  p.add_argument("--bn", default="recompute", choices=interp.BN_MODES,
                 help="BatchNorm statistics at each point: recomputed on the training inputs "
                      "(default), the endpoints' stored ones interpolated, or one endpoint's")
  p.add_argument("--train-examples", type=int, default=None,
                 help="training examples evaluated (default: as A's metrics.jsonl; 0 = all)")
  p.add_argument("--train-labels", default="trained", choices=interp.TRAIN_LABELS,
                 help="labels of the train metrics: trained on (default, as metrics.jsonl) or true")
  p.add_argument("--bn-examples", type=int, default=0,
                 help="training inputs whose statistics --bn recompute uses (0 = all)")
  p.add_argument("--seed", type=int, default=0, help="seed of the example subsets")
  p.add_argument("--out", default=None,
                 help="output prefix for .json and .png (default: interpolation in A's work dir; "
                      "DIR/ gives DIR/interpolation)")
  p.add_argument("--quiet", action="store_true", help="no progress lines")
  return p


def interpolate_main(argv: list[str] | None = None) -> int:
  """``scripts/interpolate.py``: evaluates a segment, writes ``OUT.json`` and ``OUT.png``."""
  argv = sys.argv if argv is None else argv
  try:
    parser = _interpolate_parser()
    if any(a in ("-h", "--help") for a in argv[1:]):
      parser.print_help()
      return 0
    args = parser.parse_args(argv[1:])
    try:
      alphas = [float(x) for x in args.alphas.split(",") if x.strip()]
    except ValueError as e:
      raise UserError(f"--alphas must be comma-separated numbers, got {args.alphas!r}") from e
    xla_cpu.tune()
    _quiet_libraries()
    from snnjax.studies import interpolate as interp  # pylint: disable=import-outside-toplevel
    sol_a = interp.load_endpoint(args.a, args.step_a)  # both load (or fail) before writing
    sol_b = interp.load_endpoint(args.b, args.step_b)
    out = measure_out(args.out, os.path.dirname(os.path.dirname(sol_a.path)),
                      name="interpolation", suffixes=(".json", ".png"))
    log = (lambda m: None) if args.quiet else (lambda m: print(f"[interpolate] {m}",
                                                                file=sys.stderr, flush=True))
    result = interp.interpolate(sol_a, sol_b, alphas=alphas, mask=args.mask, bn=args.bn,
                                train_examples=args.train_examples,
                                train_labels=args.train_labels, bn_examples=args.bn_examples,
                                seed=args.seed, log=log)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from snnjax.studies import cache as cache_lib  # pylint: disable=import-outside-toplevel
  if os.path.dirname(out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
  cache_lib.write_json(out + ".json", result)
  interp.plot(result, out + ".png")
  b = result["barrier"]
  print(f"[interpolate] barrier heights: train loss {b['train_loss']['height']:.4g}, test loss "
        f"{b['test_loss']['height']:.4g}, test error {b['test_error']['height']:.4g}; L2 distance "
        f"{result['l2_distance']:.4g}; test disagreement {result['test_disagreement']:.4f}",
        file=sys.stderr)
  print(json.dumps({"json": out + ".json", "figure": out + ".png"}))
  return 0
