"""The regimes stage: generalization vs optimization regime of each sparse solution.

A sparse solution is in the *generalization regime* when its train error is near the dense one
(it fits the training set as well as Sol-D; any test gap is a generalization gap) and in the
*optimization regime* when its train error is far above it (it fails to fit: an optimization
gap). "Near" means ``train_error - dense_train_error <= threshold`` (absolute, a fraction of the
train set), compared with the Sol-D of the same seed and family (settings ``config.regimes``; it reads the
table's train errors).

It also checks every trained run of the study (all families) against the plateau criterion
(:mod:`snnjax.studies.plateau`, settings ``plateau_window``, ``plateau_tol``, ``plateau_rel``):
the report lists each run's verdict and the findings table flags every run that had not stopped
moving, so none is used silently.
"""

from __future__ import annotations

import ml_collections

from snnjax.studies import findings as findings_lib
from snnjax.studies import plateau
from snnjax.studies.stage import Stage
from snnjax.train import config_io
from snnjax.train.run_dir import RunDir


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True
  # The largest train-error gap to Sol-D (absolute, a fraction of the train set) still called
  # the generalization regime.
  s.threshold = 0.02
  # The plateau criterion (snnjax.studies.plateau): the train error moved by at most
  # max(plateau_tol, plateau_rel * its value) over the last plateau_window of the run.
  s.plateau_window = plateau.DEFAULT_WINDOW
  s.plateau_tol = plateau.DEFAULT_TOL_ABS
  s.plateau_rel = plateau.DEFAULT_TOL_REL
  return s


def validate(config) -> None:
  s = config.regimes
  # a gap in train error: a fraction of the training set
  config_io.check_number(s.threshold, "study regimes.threshold", 0.0, 1.0)
  config_io.check_number(s.get("plateau_tol", plateau.DEFAULT_TOL_ABS), "study regimes.plateau_tol",
                         0.0, 1.0)
  config_io.check_number(s.get("plateau_rel", plateau.DEFAULT_TOL_REL), "study regimes.plateau_rel",
                         0.0, 10.0)
  config_io.check_number(s.get("plateau_window", plateau.DEFAULT_WINDOW),
                         "study regimes.plateau_window", 0.0, 1.0, low_open=True, high_open=True)


def classify(train_error: float, dense_train_error: float, threshold: float) -> str:
  """``"generalization"`` or ``"optimization"`` (see the module doc)."""
  return "optimization" if train_error - dense_train_error > threshold else "generalization"


def classify_runs(specs, measured: dict, threshold: float) -> list[dict]:
  """One record per sparse clean run: its train error, the dense one, the gap and the regime.

  Args:
    specs: RunSpecs of the study.
    measured: ``{run name: measurement}`` holding ``train_error`` for every clean run.
    threshold: the largest gap (absolute train error) still called generalization.
  """
  out = []
  for spec in sorted(specs):
    if spec.family != "clean" or spec.regime == "dense":
      continue
    dense = measured.get(spec.dense().name)
    if dense is None or spec.name not in measured:
      continue
    err, dense_err = measured[spec.name]["train_error"], dense["train_error"]
    out.append({"run": spec.name, "label": spec.label, "regime": spec.regime,
                "sparsity": spec.sparsity, "seed": spec.seed, "train_error": err,
                "dense_train_error": dense_err, "gap": err - dense_err, "threshold": threshold,
                "classification": classify(err, dense_err, threshold)})
  return out


def criterion(settings) -> dict:
  """The plateau criterion's keyword arguments from the stage's settings."""
  return {"window": float(settings.get("plateau_window", plateau.DEFAULT_WINDOW)),
          "tol_abs": float(settings.get("plateau_tol", plateau.DEFAULT_TOL_ABS)),
          "tol_rel": float(settings.get("plateau_rel", plateau.DEFAULT_TOL_REL))}


def plateau_runs(runs: dict, settings) -> list[dict]:
  """The plateau verdict of every run in ``runs`` (``{RunSpec: Run}``), by family and name."""
  out = []
  for spec in sorted(runs, key=lambda s: (s.family, s.seed, s.regime != "dense", s.sparsity,
                                          s.regime)):
    run = runs[spec]
    verdict = plateau.check_records(RunDir(run.workdir).epoch_records(),
                                    int(run.config.num_epochs), **criterion(settings))
    out.append({"run": spec.name, "family": spec.family, "label": spec.label,
                "seed": spec.seed, "num_epochs": int(run.config.num_epochs), **verdict})
  return out


def compute(ctx) -> dict:
  threshold = float(ctx.config.regimes.threshold)
  return {"threshold": threshold,
          "runs": classify_runs(list(ctx.clean), ctx.results["table"]["per_run"], threshold),
          "criterion": criterion(ctx.config.regimes),
          "plateau": plateau_runs(ctx.runs, ctx.config.regimes)}


def report(rc, result) -> list[str]:
  md = ["## Regimes", "",
        f"A sparse solution is in the **optimization regime** when its train error exceeds "
        f"its Sol-D's (same seed) by more than {result['threshold']:g} "
        "(absolute), else in the **generalization regime**.", "",
        "| solution | seed | train error | Sol-D train error | gap | regime |",
        "|---|---|---|---|---|---|"]
  for r in result["runs"]:
    md.append(f"| {r['label']} | {r['seed']} | {r['train_error']:.4f} | "
              f"{r['dense_train_error']:.4f} | {r['gap']:+.4f} | {r['classification']} |")
  md.append("")
  if result.get("plateau"):
    c = result["criterion"]
    md += ["### Did each run stop moving? (plateau criterion)", "",
           f"A run has **plateaued** when its train error (eval mode, whole train set, on the "
           f"labels it trains on) ends at most {c['tol_abs']:g} (**fitted**: it cannot fall "
           f"further) or moved by at most max({c['tol_abs']:g}, {c['tol_rel']:g} x its value) "
           f"over the last {c['window']:.0%} of its epochs (**stuck** at a floor). A run that "
           "did neither is flagged (**no**): more epochs would have changed it, so a comparison "
           "using it mixes in a budget effect.", "",
           "| run | epochs | train error from -> to (epochs) | change | tolerance | plateaued |",
           "|---|---|---|---|---|---|"]
    for r in result["plateau"]:
      if r["error_from"] is None:
        md.append(f"| {r['run']} | {r['num_epochs']} | - | - | - | **no** ({r['reason']}) |")
        continue
      md.append(f"| {r['run']} | {r['num_epochs']} | {r['error_from']:.4f} -> "
                f"{r['error_to']:.4f} ({r['from_epoch']} -> {r['to_epoch']}) | "
                f"{r['change']:+.4f} | {r['tolerance']:.4f} | "
                f"{('yes, ' + r.get('how', '')) if r['plateaued'] else '**no**'} |")
    md.append("")
  return md


def findings(rc, result) -> list[dict]:
  """Every run reached its plateau (the runs that did not are named)."""
  claim = "every run's train error stopped moving by the end of its budget (plateau criterion)"
  if not result or not result.get("plateau"):
    return [findings_lib.finding("plateau", claim, "each run trained to convergence", "-",
                                 "not measured")]
  missed = [r["run"] for r in result["plateau"] if not r["plateaued"]]
  total = len(result["plateau"])
  ours = (f"all {total} runs plateaued" if not missed else
          f"{total - len(missed)} of {total} plateaued; not: {', '.join(missed)}")
  return [findings_lib.finding("plateau", claim, "each run trained to convergence", ours,
                               findings_lib.verdict(not missed))]


STAGE = Stage(name="regimes", default_settings=default_settings, validate=validate,
              compute=compute, report=report, findings=findings, needs=("table",))
