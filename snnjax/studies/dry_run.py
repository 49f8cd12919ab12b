"""``plan_study(config, workdir)``: what a study would train and compute, and how long it would take.

Nothing is trained or written. Every run the stages need is listed (family, regime, sparsity,
seed, epochs) with what ``workdir`` already holds (finished, or the epochs of its last
checkpoint); the closing-the-gap variants are planned as that stage plans them (their score files'
paths are known in advance). Each distinct architecture's train step and eval forward pass are
timed on this machine (``snnjax.train.timing``, a few seconds each), and every stage's remaining
work is converted into seconds by the stage's own ``estimate`` (:class:`Costs`), with these costs,
measured in ``BENCHMARKS.md`` (in units of one
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
from snnjax.studies import cache as cache_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies import stages as stages_lib
from snnjax.studies.stage import Context
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


def _data_facts(dataset_config, datasets: runs_lib.DatasetCache) -> DataFacts:
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
    k = int(dataset_config.get("downsample", 1))  # k x k average pooling (snnjax.data.datasets)
    if k > 1:
      shape = (shape[0] // k, shape[1] // k) + tuple(shape[2:])
    return DataFacts(n, n_test, shape, classes, True, True)


def _arch_key(config: ml_collections.ConfigDict, facts: DataFacts) -> str:
  kwargs = ",".join(f"{k}={v}" for k, v in sorted(dict(config.model.kwargs).items()))
  return (f"{config.model.name}({kwargs}) {'x'.join(map(str, facts.input_shape))} -> "
          f"{facts.num_classes}, batch {config.batch_size}, {config.precision}")


def _progress(workdir: str) -> tuple[bool, int]:
  """(finished, epochs in the last checkpoint) of the run in ``workdir``."""
  run_dir = RunDir(workdir)
  if run_dir.finished:
    return True, -1
  return False, run_dir.trained_epochs


class _ResultIndex:
  """Which analysis results ``DIR/results`` holds: (stage name, the text of its inputs)."""

  def __init__(self, results_dir: str):
    self.entries = []
    for path in glob.glob(os.path.join(results_dir, "*.json")):
      try:
        stored = cache_lib.read_json(path)
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


class Costs:
  """What a stage's ``estimate`` reads: the study's config and runs, what the cache holds, and
  the per-example costs measured on this machine (see the module doc)."""

  PROBE_G = PROBE_G
  SAMPLED_FISHER_G = SAMPLED_FISHER_G
  EXACT_FISHER_G = EXACT_FISHER_G
  JACOBIAN_G = JACOBIAN_G
  TRAIN_MODE_F = TRAIN_MODE_F

  def __init__(self, config, ctx: Context, index: _ResultIndex, units: dict, own: dict):
    self.config = config
    self.runs = ctx.runs
    self.clean = ctx.clean
    self._index = index
    self._units = units
    self._own = own

  def has(self, stage: str, *hashes: str) -> bool:
    """Whether a stored result of ``stage`` names all of ``hashes`` in its inputs."""
    return self._index.has(stage, *hashes)

  def unit(self, name: str) -> tuple:
    """``(DataFacts, g, f)`` of the run ``name``: its data, seconds per example of a batched
    gradient and of an eval forward pass."""
    return self._units[name]

  def own_runs(self, stage: str) -> dict:
    """The runs ``stage`` trains itself (``Stage.own_runs``), ``{name: Run}``."""
    return self._own.get(stage, {})

  @staticmethod
  def fisher_g(kind: str, samples: int, classes: int) -> float:
    return EXACT_FISHER_G * classes if kind == "exact" else SAMPLED_FISHER_G * samples

  def measure_seconds(self, settings, name: str, *, tr_h: bool = True) -> float:
    """The run ``name`` measured with the table's protocol (accuracies, Tr(H), Tr(F), Jacobian)."""
    facts, g, f = self.unit(name)
    s = settings
    out = (facts.num_train + facts.num_test) * f
    if tr_h and s.hessian.enabled:
      out += int(s.hessian.max_probes) * PROBE_G * min(int(s.hessian.num_examples),
                                                       facts.num_train) * g
    if s.fisher.enabled:
      out += (self.fisher_g(s.fisher.kind, int(s.fisher.num_samples), facts.num_classes)
              * min(int(s.fisher.num_examples), facts.num_train) * g)
    if s.jacobian.enabled:
      per = int(s.jacobian.num_projections) or facts.num_classes
      out += JACOBIAN_G * per * min(int(s.jacobian.num_examples), facts.num_train) * g
    return out


def plan_study(config: ml_collections.ConfigDict, workdir: str, *, log=cache_lib.log) -> dict:
  """The plan and cost estimate of ``config`` in ``workdir`` (see the module doc).

  Returns:
    ``{"runs": [PlannedRun as dict], "architectures": {key: timing}, "stages": {stage: s},
    "total_s", "training_s", "notes": [...]}``; seconds are estimates for this machine.
  """
  from snnjax.studies import study as study_lib  # pylint: disable=import-outside-toplevel
  study_lib.validate(config)
  workdir = os.path.abspath(workdir)
  cache = cache_lib.StageCache(workdir)
  datasets = runs_lib.DatasetCache()
  runs = study_lib.resolve(config, cache)
  ctx = Context(config, cache, datasets, runs)
  enabled = [s for s in stages_lib.REGISTRY if s.enabled(config)]
  own = {s.name: s.own_runs(ctx) for s in enabled if s.own_runs is not None}
  # (name, family, regime, run); a stage's own run's "regime" is its variant.
  all_runs = [(r.spec.name, r.spec.family, r.spec.regime, r) for r in runs.values()]
  seen = {r.workdir for *_, r in all_runs}
  for stage_runs in own.values():  # two stages that build the same run share it: listed once
    for name, r in stage_runs.items():
      if r.workdir not in seen:
        seen.add(r.workdir)
        all_runs.append((name, "gap", name.split("-")[1], r))

  facts, timings, planned, notes, units = {}, {}, [], [], {}
  for name, family, regime, run in all_runs:
    fk = cache_lib.digest(run.config.dataset)
    if fk not in facts:
      facts[fk] = _data_facts(run.config.dataset, datasets)
    arch = _arch_key(run.config, facts[fk])
    if arch not in timings:
      log(f"dry run: timing {arch}")
      timings[arch] = timing.measure_step_time(
          run.config, facts[fk].input_shape, facts[fk].num_classes,
          augment=bool(run.config.dataset.augment and facts[fk].is_image))
    t = timings[arch]
    units[name] = (facts[fk], t["train_step_s"] / int(run.config.batch_size),
                   t["predict_example_s"])
    finished, done = _progress(run.workdir)
    epochs = int(run.config.num_epochs)
    p = PlannedRun(name, family, regime, float(run.spec.sparsity), int(run.spec.seed), epochs,
                   epochs if finished else done, finished, run.workdir, arch)
    p.train_s = 0.0 if finished else _training_seconds(run.config, facts[fk], t, epochs - done)
    planned.append(p)
  if any(f.nominal for f in facts.values()):
    notes.append("some datasets are not on this machine: their nominal sizes were used")

  costs = Costs(config, ctx, _ResultIndex(cache.results_dir), units, own)
  cost = {"solutions": sum(p.train_s for p in planned)}
  for stage in enabled:
    seconds = stage.estimate(costs)
    if seconds:
      cost[stage.name] = seconds
  total = sum(cost.values())
  return {"runs": [dataclasses.asdict(p) for p in planned], "architectures": timings,
          "stages": cost, "training_s": cost["solutions"], "total_s": total, "notes": notes,
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
