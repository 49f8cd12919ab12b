"""``plan_study(config, workdir)``: what a study would train and compute, and how long it would take.

Nothing is trained or written. Every run the stages need is listed (family, regime, sparsity,
seed, epochs) with what ``workdir`` already holds (finished, or the epochs of its last
checkpoint); the closing-the-gap variants are planned as that stage plans them (their score files'
paths are known in advance). Each distinct architecture's train step and eval forward pass are
timed on this machine (``snnjax.train.timing``, a few seconds each), and every stage's remaining
work is converted into seconds with these costs, measured in ``BENCHMARKS.md`` (in units of one
example's share of a batched gradient, ``g``, and of an eval forward pass, ``f``):

* training: steps x measured step time, plus the per-epoch evaluations (forward passes);
* Tr(H) by Hutchinson: 1.1 g per probe and example (forward-over-forward probes), max probes
  assumed (the relative-error stop can only make it shorter);
* Tr(F): 1.8 g per sampled label and example (MC, empirical), 0.92 g per class (exact);
* Jacobian norm: 1 g per class (exact) or per projection;
* interpolation: a train-mode pass (1.5 f) and an eval pass per alpha and line, 1.8 g per
  example at the cosine alphas; label noise and disagreement: eval passes over both splits.

An analysis counts as cached when a stored result of that stage already names the very runs it
reads (a changed analysis *setting* is not detected here: the real run recomputes it).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os

import ml_collections

from snnjax.data import subsets as subsets_lib
from snnjax.errors import UserError
from snnjax.studies import closing_gap as closing_gap_lib
from snnjax.studies import solutions
from snnjax.studies import stages
from snnjax.train import timing
from snnjax.train.run_dir import RunDir

PROBE_G = 1.1           # one Hutchinson probe, per example, in batched-gradient units
SAMPLED_FISHER_G = 1.8  # one per-example gradient (MC / empirical Tr(F), cosines)
EXACT_FISHER_G = 0.92   # exact Tr(F), per class
JACOBIAN_G = 1.0        # one VJP per class (or projection)
TRAIN_MODE_F = 1.5      # a BatchNorm-recomputation pass, in eval-forward units
# Train / test sizes, input shape and classes of datasets that are not on this machine.
NOMINAL = {"cifar10": (50000, 10000, (32, 32, 3), 10),
           "cifar100": (50000, 10000, (32, 32, 3), 100)}
HOURS_WARNING = 10.0


@dataclasses.dataclass
class DataFacts:
  num_train: int
  num_test: int
  input_shape: tuple
  num_classes: int
  is_image: bool
  nominal: bool          # True: the data are not here; sizes are the dataset's nominal ones


@dataclasses.dataclass
class PlannedRun:
  name: str
  family: str
  regime: str
  sparsity: float
  seed: int
  epochs: int
  epochs_done: int
  finished: bool
  workdir: str
  arch: str
  train_s: float = 0.0


def _data_facts(dataset_config, datasets: solutions.DatasetCache) -> DataFacts:
  try:
    d = datasets.get(dataset_config)
    return DataFacts(int(d.num_train), int(d.y_test.shape[0]), tuple(d.input_shape),
                     int(d.num_classes), bool(d.is_image), False)
  except UserError:
    if dataset_config.name not in NOMINAL:
      raise
    n, n_test, shape, classes = NOMINAL[dataset_config.name]
    per_class = n // classes
    if float(dataset_config.imbalance_ratio) > 1.0:
      n = int(subsets_lib.long_tailed_counts(per_class, classes,
                                             float(dataset_config.imbalance_ratio)).sum())
    if int(dataset_config.train_size):
      n = min(n, int(dataset_config.train_size))
    return DataFacts(n, n_test, shape, classes, True, True)


def _arch_key(config: ml_collections.ConfigDict, facts: DataFacts) -> str:
  kwargs = ",".join(f"{k}={v}" for k, v in sorted(dict(config.model.kwargs).items()))
  return (f"{config.model.name}({kwargs}) {'x'.join(map(str, facts.input_shape))} -> "
          f"{facts.num_classes}, batch {config.batch_size}, {config.precision}")


def _progress(workdir: str) -> tuple[bool, int]:
  """(finished, epochs in the last checkpoint) of the run in ``workdir``."""
  run = RunDir(workdir)
  if run.final_metrics() is not None:
    return True, -1
  return False, run.trained_epochs


class _ResultIndex:
  """Which analysis results ``DIR/results`` holds: (stage name, the text of its inputs)."""

  def __init__(self, results_dir: str):
    self.entries = []
    for path in glob.glob(os.path.join(results_dir, "*.json")):
      try:
        stored = stages.read_json(path)
      except (OSError, json.JSONDecodeError):
        continue
      if isinstance(stored, dict) and "result" in stored:
        self.entries.append((stored.get("stage"), json.dumps(stored.get("inputs"))))

  def has(self, stage: str, *hashes: str) -> bool:
    return any(s == stage and all(h in text for h in hashes) for s, text in self.entries)


def _training_seconds(config, facts: DataFacts, t: dict, epochs_left: int) -> float:
  if epochs_left <= 0:
    return 0.0
  steps = facts.num_train // int(config.batch_size) * epochs_left
  evals = math.ceil(epochs_left / int(config.eval_every_epochs))
  eval_train = int(config.train_eval_size) or facts.num_train
  eval_examples = min(eval_train, facts.num_train) + facts.num_test
  return steps * t["train_step_s"] + evals * eval_examples * t["predict_example_s"]


def _fisher_g(kind: str, samples: int, classes: int) -> float:
  return EXACT_FISHER_G * classes if kind == "exact" else SAMPLED_FISHER_G * samples


def _measure_seconds(settings, facts: DataFacts, g: float, f: float, *, tr_h: bool = True
                     ) -> float:
  """One solution measured with the table's protocol (accuracies, Tr(H), Tr(F), Jacobian)."""
  s = settings
  out = (facts.num_train + facts.num_test) * f
  if tr_h and s.hessian.enabled:
    out += int(s.hessian.max_probes) * PROBE_G * min(int(s.hessian.num_examples),
                                                     facts.num_train) * g
  if s.fisher.enabled:
    out += (_fisher_g(s.fisher.kind, int(s.fisher.num_samples), facts.num_classes)
            * min(int(s.fisher.num_examples), facts.num_train) * g)
  if s.jacobian.enabled:
    per = int(s.jacobian.num_projections) or facts.num_classes
    out += JACOBIAN_G * per * min(int(s.jacobian.num_examples), facts.num_train) * g
  return out


def plan_study(config: ml_collections.ConfigDict, workdir: str, *, log=stages.log) -> dict:
  """The plan and cost estimate of ``config`` in ``workdir`` (see the module doc).

  Returns:
    ``{"runs": [PlannedRun as dict], "architectures": {key: timing}, "stages": {stage: s},
    "total_s", "training_s", "notes": [...]}``; seconds are estimates for this machine.
  """
  from snnjax.studies import study as study_lib  # pylint: disable=import-outside-toplevel
  study_lib.validate(config)
  workdir = os.path.abspath(workdir)
  cache = stages.StageCache(workdir)
  datasets = solutions.DatasetCache()
  runs = solutions.resolve(config, cache, solutions.plan(config))
  variants = {}
  if closing_gap_lib.enabled(config):
    variants = closing_gap_lib.planned_variants(config, runs, cache)
  # (name, family, regime, run); a variant's "regime" is its remedy.
  all_runs = [(r.spec.name, r.spec.family, r.spec.regime, r) for r in runs.values()]
  all_runs += [(name, "gap", name.split("-")[1], r) for name, r in variants.items()]

  facts, timings, planned, notes = {}, {}, [], []
  for name, family, regime, run in all_runs:
    fk = stages.digest(run.config.dataset)
    if fk not in facts:
      facts[fk] = _data_facts(run.config.dataset, datasets)
    arch = _arch_key(run.config, facts[fk])
    if arch not in timings:
      log(f"dry run: timing {arch}")
      timings[arch] = timing.measure_step_time(
          run.config, facts[fk].input_shape, facts[fk].num_classes,
          augment=bool(run.config.dataset.augment and facts[fk].is_image))
    finished, done = _progress(run.workdir)
    epochs = int(run.config.num_epochs)
    p = PlannedRun(name, family, regime, float(run.spec.sparsity), int(run.spec.seed), epochs,
                   epochs if finished else done, finished, run.workdir, arch)
    p.train_s = 0.0 if finished else _training_seconds(run.config, facts[fk], timings[arch],
                                                       epochs - done)
    planned.append(p)
  if any(f.nominal for f in facts.values()):
    notes.append("some datasets are not on this machine: their nominal sizes were used")

  index = _ResultIndex(cache.results_dir)
  cost = {"solutions": sum(p.train_s for p in planned)}
  unit = {}
  for name, _, _, run in all_runs:
    fk = stages.digest(run.config.dataset)
    t = timings[_arch_key(run.config, facts[fk])]
    unit[name] = (facts[fk], t["train_step_s"] / int(run.config.batch_size),
                  t["predict_example_s"])
  clean = {s: r for s, r in runs.items() if s.family == "clean"}

  def add(stage, seconds):
    cost[stage] = cost.get(stage, 0.0) + seconds

  for spec, run in clean.items():
    if not index.has(f"measure-{spec.name}", run.hash):
      d, g, f = unit[spec.name]
      add("table", _measure_seconds(config.measure, d, g, f))
  if config.sanity.enabled and clean:
    first = min(s.seed for s in clean)
    sparse = sorted({s.sparsity for s in clean if s.regime != "dense"})
    for spec, run in clean.items():
      if spec.seed == first and (spec.regime == "dense" or spec.sparsity == sparse[0]):
        if not index.has(f"sanity-{spec.name}", run.hash):
          d, g, _ = unit[spec.name]
          n = min(int(config.sanity.num_examples), d.num_train)
          add("sanity", n * g * (EXACT_FISHER_G * d.num_classes
                                 + PROBE_G * int(config.sanity.max_probes)))
  if config.fisher_trend.enabled:
    tr = config.fisher_trend
    for spec, run in clean.items():
      if solutions.keeps_trend_checkpoints(config, spec):
        if not index.has(f"trend-{spec.name}", run.hash):
          d, g, _ = unit[spec.name]
          points = int(run.config.num_epochs) // int(tr.every_epochs) + 2
          add("fisher_trend", points * min(int(tr.num_examples), d.num_train) * g
              * _fisher_g(tr.kind, int(tr.num_samples), d.num_classes))
  for spec, run in runs.items():
    d, g, f = unit[spec.name]
    if (spec.family == "noisy" and config.label_noise.enabled
        and not index.has(f"label_noise-{spec.name}", run.hash)):
      add("label_noise", (d.num_train + d.num_test) * f)
    if (config.disagreement.enabled and spec.regime == "scratch" and spec.family != "noisy"
        and round(spec.sparsity, 6) == round(float(config.disagreement.sparsity), 6)):
      partner = runs.get(dataclasses.replace(spec, regime="finetune"))
      if partner is not None and not index.has(
          f"disagreement-{spec.family}-seed{spec.seed}-{spec.sparsity:.2f}", run.hash,
          partner.hash):
        add("disagreement", 2 * (d.num_train + d.num_test) * f)
  if config.interpolation.enabled:
    it = config.interpolation
    sp = round(float(it.sparsity), 6)
    seeds = set(solutions.stage_seeds(config, "interpolation"))
    for spec, run in clean.items():
      if spec.regime == "scratch" and round(spec.sparsity, 6) == sp and spec.seed in seeds:
        if not index.has(f"interpolation-seed{spec.seed}-{sp:.2f}", run.hash):
          d, g, f = unit[spec.name]
          bn = int(it.bn_examples) or d.num_train
          ev = int(it.eval_examples) or d.num_train
          add("interpolation", 2 * len(it.alphas) * (TRAIN_MODE_F * bn + ev) * f
              + 2 * len(it.cosine_alphas) * int(it.num_examples) * SAMPLED_FISHER_G * g)
  if variants:
    gsets = config.closing_gap
    scored = set()
    for name, run in variants.items():
      d, g, f = unit[name]
      path = run.config.curriculum.scores_path
      if path and path not in scored and not os.path.exists(path):
        scored.add(path)
        add("closing_gap", d.num_train * g * _fisher_g(
            gsets.scores.kind, int(gsets.scores.get("num_samples", 1)), d.num_classes))
      if not index.has(f"closing_gap-measure-{name}", run.hash):
        add("closing_gap", _measure_seconds(config.measure, d, g, f,
                                            tr_h=bool(gsets.measure_tr_h)))
  training = cost["solutions"]
  total = sum(cost.values())
  return {"runs": [dataclasses.asdict(p) for p in planned], "architectures": timings,
          "stages": cost, "training_s": training, "total_s": total, "notes": notes,
          "workdir": workdir, "preset": config.get("preset", "")}


def _duration(seconds: float) -> str:
  if seconds < 90:
    return f"{seconds:.0f} s"
  if seconds < 2 * 3600:
    return f"{seconds / 60:.0f} min"
  return f"{seconds / 3600:.1f} h"


def format_plan(plan: dict, *, backend: str, device_count: int) -> str:
  """The plan as text: runs, architectures timed, minutes per stage and in total."""
  lines = [f"Study plan ({plan['preset'] or 'custom'}) in {plan['workdir']}", "",
           f"{'run':36s} {'family':8s} {'regime':14s} {'sparsity':>8s} {'seed':>4s} "
           f"{'epochs':>6s} {'state':>12s} {'est. train':>10s}"]
  todo = 0
  for r in plan["runs"]:
    state = ("finished" if r["finished"] else
             f"{r['epochs_done']}/{r['epochs']} done" if r["epochs_done"] else "to train")
    todo += 0 if r["finished"] else 1
    lines.append(f"{r['name']:36s} {r['family']:8s} {r['regime']:14s} {r['sparsity']:8.2f} "
                 f"{r['seed']:4d} {r['epochs']:6d} {state:>12s} {_duration(r['train_s']):>10s}")
  lines += ["", f"{len(plan['runs'])} runs, {len(plan['runs']) - todo} finished, {todo} to train.",
            "", f"Timed on this machine ({backend}, {device_count} device(s)):"]
  for arch, t in plan["architectures"].items():
    lines.append(f"  {arch}: {t['train_step_s'] * 1e3:.0f} ms / train step "
                 f"({t['batch_size'] / t['train_step_s']:.0f} images/s), "
                 f"{t['predict_example_s'] * 1e6:.0f} us / example evaluated")
  lines += ["", "Estimated wall time (remaining work):"]
  for stage, seconds in plan["stages"].items():
    lines.append(f"  {stage:14s} {_duration(seconds):>8s}")
  lines.append(f"  {'total':14s} {_duration(plan['total_s']):>8s}")
  lines += [f"note: {n}" for n in plan["notes"]]
  hours = plan["total_s"] / 3600
  if hours >= HOURS_WARNING:
    where = "on this CPU" if backend == "cpu" else f"on this {backend}"
    lines += ["", f"This is about {hours:.0f} hours {where}: tens of hours of compute. For results "
              "on a laptop use `configs/study.py:cifar10_cpu` (real CIFAR-10, under two hours on 2 "
              "cores); run this preset on a GPU (install the `cuda12` extra)."]
  return "\n".join(lines)
