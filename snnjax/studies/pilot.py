"""The convergence pilot: dense models on real CIFAR-10 pixels, measured before a setup is chosen.

``scripts/pilot.py`` trains each candidate of :data:`CANDIDATES` (a dense Sol-D, the study's SGD
with momentum 0.9 and weight decay 2e-4, batch 128) in its own work dir, evaluated every
``EVAL_EVERY`` epochs in eval mode on the **whole** train subset and the whole test set, and
records against images processed and wall time on this machine:

* ``train_error``: 1 - accuracy on the labels trained on (the clean subset, or the noisy labels);
* ``test_accuracy``;
* with label noise, ``memorized``: the fraction of the noisy examples predicted as their noisy
  label, and ``correct``: as their true label.

:func:`collect` reads the work dirs back (``metrics.jsonl``) into one JSON-able dict;
:func:`plot` draws the curves. A candidate is a set of config overrides on ``configs/dense.py``'s
CIFAR-10 defaults, so every curve is reproducible with ``scripts/train.py`` alone.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

import ml_collections

from snnjax.errors import UserError
from snnjax.train import config_presets, loop
from snnjax.train.run_dir import RunDir

EVAL_EVERY = 2
FLOOR = 1e-4  # where the figure draws a train error of 0 (log axis)


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One setup: ``name``, what it is, and its overrides (dotted field -> value)."""

  name: str
  about: str
  overrides: tuple[tuple[str, object], ...]
  regime: str = "dense"
  sparsity: float = 0.0
  dense: str = ""  # a sparse candidate: the candidate whose run is its Sol-D

  def config(self, npz_path: str = config_presets.CIFAR10_NPZ, workdir: str = "runs/pilot"
             ) -> ml_collections.ConfigDict:
    """The training config of this candidate (seed 0); a sparse one prunes the run of the
    candidate ``dense`` in ``workdir`` and takes its setup."""
    if self.regime != "dense":
      config = BY_NAME[self.dense].config(npz_path, workdir)
      config.regime, config.sparsity = self.regime, self.sparsity
      config.dense_workdir = os.path.join(workdir, self.dense)
      config.mask.source = "prune_dense"
      return config
    config = config_presets.dense_config()
    config.dataset.npz_path = npz_path
    config.dataset.augment = False
    config.model.name = "resnet20"
    config.model.kwargs = ml_collections.ConfigDict({"shortcut": "A", "width": 1.0})
    config.optim.lr = 0.1
    config.optim.schedule = "linear"
    config.optim.boundaries_epochs = ()
    config.train_eval_size = 0
    config.eval_every_epochs = EVAL_EVERY
    config.checkpoint_every_epochs = 10
    config.checkpoint_keep = 1
    config.progress = False
    for field, value in self.overrides:
      *blocks, last = field.split(".")
      target = config
      for b in blocks:
        target = target[b]
      target[last] = value
    return config


def _c(name: str, about: str, **overrides) -> Candidate:
  return Candidate(name, about, tuple((k.replace("__", "."), v) for k, v in overrides.items()))


def _sparse(regime: str, sparsity: float, dense: str) -> Candidate:
  label = {"scratch": "Sol-S", "finetune": "Sol-F"}[regime]
  return Candidate(f"{dense}-{regime}{round(100 * sparsity)}",
                   f"{label} at sparsity {sparsity} of {dense}'s Sol-D, the same setup and epochs",
                   (), regime, sparsity, dense)


# Ordered so that the cheapest plausible setups come first.
CANDIDATES = (
    _c("w1-16px-5k", "ResNet-20 1x, 16x16, 5,000 images, linear decay, 40 epochs",
       dataset__downsample=2, dataset__train_size=5000, num_epochs=40),
    _c("w1-16px-5k-noisy", "as w1-16px-5k with 30% label noise, 60 epochs",
       dataset__downsample=2, dataset__train_size=5000, dataset__label_noise=0.3, num_epochs=60),
    _c("w05-16px-5k", "ResNet-20 0.5x, 16x16, 5,000 images, linear decay, 40 epochs",
       dataset__downsample=2, dataset__train_size=5000, model__kwargs__width=0.5, num_epochs=40),
    _c("w1-16px-5k-e20-step", "as w1-16px-5k-e20 with the study's step schedule compressed "
       "(x0.1 at 50%, 75%)", dataset__downsample=2, dataset__train_size=5000, num_epochs=20,
       optim__schedule="step", optim__boundaries_epochs=(10, 15)),
    _c("w1-16px-5k-e20-aug", "as w1-16px-5k-e20 with crop + flip augmentation",
       dataset__downsample=2, dataset__train_size=5000, num_epochs=20, dataset__augment=True),
    _c("w1-16px-10k-e20", "ResNet-20 1x, 16x16, 10,000 images, linear decay, 20 epochs",
       dataset__downsample=2, dataset__train_size=10000, num_epochs=20),
    _c("w05-32px-5k-e20", "ResNet-20 0.5x, 32x32, 5,000 images, linear decay, 20 epochs",
       dataset__train_size=5000, model__kwargs__width=0.5, num_epochs=20),
    # Half the budget: does it still fit / memorize?
    _c("w1-16px-5k-e20", "as w1-16px-5k, 20 epochs",
       dataset__downsample=2, dataset__train_size=5000, num_epochs=20),
    _c("w1-16px-5k-noisy-e30", "as w1-16px-5k-noisy, 30 epochs",
       dataset__downsample=2, dataset__train_size=5000, dataset__label_noise=0.3, num_epochs=30),
    # Does a sparse run fit in the same budget? (the regimes the table's sparsities span)
    _sparse("scratch", 0.9, "w1-16px-5k-e20"),
    _sparse("scratch", 0.98, "w1-16px-5k-e20"),
    _sparse("finetune", 0.98, "w1-16px-5k-e20"),
)
BY_NAME = {c.name: c for c in CANDIDATES}


def select(names: Sequence[str] = ()) -> list[Candidate]:
  """The candidates named (all when empty); an unknown name is a ``UserError``."""
  unknown = [n for n in names if n not in BY_NAME]
  if unknown:
    raise UserError(f"unknown pilot candidate {unknown[0]!r}; choose from {sorted(BY_NAME)}")
  return [BY_NAME[n] for n in names] if names else list(CANDIDATES)


def train(candidate: Candidate, workdir: str, npz_path: str = config_presets.CIFAR10_NPZ) -> str:
  """Trains (or resumes) one candidate in ``workdir/<name>``; each record gets ``elapsed_s``, the
  wall time since this process started the run (training and evaluation)."""
  path = os.path.join(workdir, candidate.name)
  t0 = time.time()
  before = RunDir(path).epoch_records() if RunDir(path).exists else []
  offset = before[-1].get("elapsed_s", 0.0) if before else 0.0

  def hook(epoch, state, ctx):
    del epoch, state, ctx
    return {"elapsed_s": offset + time.time() - t0}

  loop.train_and_evaluate(candidate.config(npz_path, workdir), path, epoch_hook=hook)
  return path


def curve(run: RunDir) -> dict:
  """The evaluated epochs of one run: epoch, images processed, wall seconds and the metrics."""
  config = run.config
  out = {k: [] for k in ("epoch", "images", "elapsed_s", "train_error", "train_loss",
                         "test_accuracy", "memorized", "correct", "lr")}
  for r in run.epoch_records():
    if r.get("train_accuracy") is None:
      continue
    out["epoch"].append(r["epoch"])
    out["images"].append(int(r["step"]) * int(config.batch_size))
    out["elapsed_s"].append(r.get("elapsed_s"))
    out["train_error"].append(1.0 - r["train_accuracy"])
    out["train_loss"].append(r["train_loss"])
    out["test_accuracy"].append(r["test_accuracy"])
    out["memorized"].append(r.get("train_noisy_memorized"))
    out["correct"].append(r.get("train_noisy_correct"))
    out["lr"].append(r["lr"])
  return out


def collect(workdir: str, candidates: Sequence[Candidate] = CANDIDATES) -> dict:
  """Every candidate's curve found under ``workdir`` (missing ones are listed as such)."""
  runs, missing = {}, []
  for c in candidates:
    run = RunDir(os.path.join(workdir, c.name))
    if not run.exists or not run.epoch_records():
      missing.append(c.name)
      continue
    cfg = run.config
    runs[c.name] = {"about": c.about, "overrides": {k: v for k, v in c.overrides},
                    "regime": c.regime, "sparsity": c.sparsity,
                    "finished": run.finished, "num_epochs": int(cfg.num_epochs),
                    "train_size": int(cfg.dataset.train_size),
                    "label_noise": float(cfg.dataset.label_noise), "curve": curve(run)}
  return {"runs": runs, "missing": missing, "eval_every_epochs": EVAL_EVERY}


def plot(result: dict, path: str) -> None:
  """Train error, test accuracy and (noisy runs) memorized fraction against wall minutes and
  images processed: a 2 x 3 grid saved to ``path``."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(2, 3, figsize=(15, 8))
  for name, run in result["runs"].items():
    c = run["curve"]
    minutes = [(e or 0.0) / 60 for e in c["elapsed_s"]]
    images = [i / 1e6 for i in c["images"]]
    style = "--" if run["label_noise"] else "-"
    errors = [max(e, FLOOR) for e in c["train_error"]]  # 0 is drawn at FLOOR (log axis)
    for row, xs in enumerate((minutes, images)):
      axes[row, 0].plot(xs, errors, style, label=name)
      axes[row, 1].plot(xs, c["test_accuracy"], style, label=name)
      if run["label_noise"]:
        axes[row, 2].plot(xs, c["memorized"], style, label=f"{name} memorized")
  for row, xlabel in enumerate(("wall time on this machine (min)", "images processed (millions)")):
    axes[row, 0].set_yscale("log")
    axes[row, 0].axhline(0.01, color="k", lw=0.8, ls=":")
    axes[row, 0].set_ylabel(f"train error (eval mode, whole subset; 0 at {FLOOR:g})")
    axes[row, 1].set_ylabel("test accuracy")
    axes[row, 2].axhline(0.9, color="k", lw=0.8, ls=":")
    axes[row, 2].set_ylabel("noisy labels memorized")
    for ax in axes[row]:
      ax.set_xlabel(xlabel)
      ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize=7)
  axes[0, 2].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def first_reaching(xs: Sequence, values: Sequence, predicate) -> object:
  """The first ``xs[i]`` whose ``values[i]`` satisfies ``predicate`` (None when none does)."""
  for x, v in zip(xs, values):
    if v is not None and predicate(v):
      return x
  return None


def summarize(result: dict, step_seconds: dict | None = None) -> list[dict]:
  """One row per candidate: where it first fits (train error <= 0.01) or memorizes (>= 0.9 of the
  noisy labels), in epochs and images, its final numbers, and (with ``step_seconds``: idle seconds
  per image of its architecture and resolution) the idle compute to get there."""
  rows = []
  for name, run in result["runs"].items():
    c = run["curve"]
    noisy = run["label_noise"] > 0
    values = c["memorized"] if noisy else c["train_error"]
    test = (lambda m: m >= 0.9) if noisy else (lambda e: e <= 0.01)
    epoch = first_reaching(c["epoch"], values, test)
    images = first_reaching(c["images"], values, test)
    row = {"name": name, "about": run["about"], "noisy": noisy, "num_epochs": run["num_epochs"],
           "reached_epoch": epoch, "reached_images": images,
           "final_train_error": c["train_error"][-1] if c["train_error"] else None,
           "final_test_accuracy": c["test_accuracy"][-1] if c["test_accuracy"] else None,
           "final_memorized": c["memorized"][-1] if c["memorized"] else None,
           "wall_s": c["elapsed_s"][-1] if c["elapsed_s"] else None}
    per_image = (step_seconds or {}).get(name)
    row["idle_s_per_image"] = per_image
    row["idle_s_to_reach"] = per_image * images if per_image and images else None
    rows.append(row)
  return rows


def markdown(rows: Sequence[dict]) -> list[str]:
  """The summary table of :func:`summarize` as Markdown lines."""
  def f(x, spec):
    return "-" if x is None else format(x, spec)
  md = ["| candidate | epochs | reached at epoch (images) | final train error | final test acc | "
        "memorized (noisy) | idle ms / image | idle s to reach | wall s (as run) |",
        "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    reached = ("not reached" if r["reached_epoch"] is None
               else f"{r['reached_epoch']} ({r['reached_images'] / 1e3:.0f}k)")
    md.append(f"| {r['name']} | {r['num_epochs']} | {reached} | {f(r['final_train_error'], '.4f')} | "
              f"{f(r['final_test_accuracy'], '.3f')} | {f(r['final_memorized'], '.3f')} | "
              f"{f(r['idle_s_per_image'] and 1e3 * r['idle_s_per_image'], '.3f')} | "
              f"{f(r['idle_s_to_reach'], '.0f')} | {f(r['wall_s'], '.0f')} |")
  return md


def step_seconds_per_image(candidates: Sequence[Candidate], npz_path: str, workdir: str) -> dict:
  """Idle-machine seconds per training image of each candidate's train step (its model, batch
  and resolution; ``snnjax.train.timing.measure_step_time``, no augmentation), one timing per
  distinct architecture: run it on a quiet machine."""
  from snnjax.train import timing  # pylint: disable=g-import-not-at-top
  out, memo = {}, {}
  for c in candidates:
    config = c.config(npz_path, workdir)
    side = 32 // int(config.dataset.downsample)
    key = (config.model.name, float(config.model.kwargs.get("width", 1.0)), side,
           int(config.batch_size))
    if key not in memo:
      t = timing.measure_step_time(config, (side, side, 3), 10, steps=7, augment=False)
      memo[key] = t["train_step_s"] / t["batch_size"]
    out[c.name] = memo[key]
  return out
