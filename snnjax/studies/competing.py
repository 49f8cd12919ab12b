"""What the competing-explanations stages share: their sparsity, the table's reference runs, the
variant runs they train beside them, and the "same or different" verdicts.

The stages ``gradient_flow``, ``lottery`` and ``masks_at_init`` (and ``explanations``, which puts
them side by side) each train a few variants of the table's runs at one sparsity (``<stage>.sparsity``,
0 = the middle of ``study.sparsities``) for their seeds. A variant is a training config derived
from a table run's (same seed, schedule and epochs) with a few fields changed; its work dir is
``DIR/runs/<name>-<run hash>`` like every run, so two stages that build the same config under the
same name share one run. When the ``gradient_flow`` stage is on, every variant records its masked
gradient norm per step (``grad_norm_every``; not part of a run's identity).
"""

from __future__ import annotations

import copy
import functools
import os

import ml_collections
import numpy as np

from snnjax.errors import UserError
from snnjax.studies import cache as cache_lib
from snnjax.studies import runs as runs_lib
from snnjax.studies import seeds as seeds_lib
from snnjax.studies.markdown import runs_table
from snnjax.train.run_dir import RunDir

REFERENCES = ("dense", "finetune", "scratch")


def stage_sparsity(study: ml_collections.ConfigDict, stage: str) -> float:
  """``study.<stage>.sparsity``, or with 0 there the middle of ``study.sparsities``."""
  chosen = float(study[stage].get("sparsity", 0.0))
  if chosen > 0.0:
    return round(chosen, 6)
  ordered = sorted(round(float(s), 6) for s in study.sparsities)
  return ordered[len(ordered) // 2]


def plan(study: ml_collections.ConfigDict, stage: str) -> set:
  """Sol-D, Sol-F and Sol-S at the stage's sparsity for the stage's seeds."""
  return runs_lib.sparse_runs([stage_sparsity(study, stage)], runs_lib.stage_seeds(study, stage))


def record_every(study: ml_collections.ConfigDict) -> int:
  """The gradient-norm cadence of the stages' runs (0 unless the gradient_flow stage is on)."""
  g = study.get("gradient_flow")
  return int(g.every) if g is not None and bool(g.get("enabled", False)) else 0


def references(runs: dict, sparsity: float, seed: int, stage: str) -> dict:
  """``{regime: (spec, Run)}`` of the table's clean Sol-D, Sol-F and Sol-S (sparsity, seed)."""
  by = {(s.family, s.regime, round(s.sparsity, 6), s.seed): (s, r) for s, r in runs.items()}
  out = {}
  for regime in REFERENCES:
    sp = 0.0 if regime == "dense" else round(sparsity, 6)
    key = ("clean", regime, sp, int(seed))
    if key not in by:
      raise UserError(f"the {stage} stage needs the clean {regime} run at sparsity {sparsity:.2f}, "
                      f"seed {seed}")
    out[regime] = by[key]
  return out


def variant(cache: cache_lib.StageCache, study, name: str, spec: runs_lib.RunSpec,
            base: ml_collections.ConfigDict, parent: runs_lib.Run | None,
            **fields) -> runs_lib.Run:
  """The run ``name``: ``base`` (a table run's config) with ``fields`` set (dotted names for
  nested ones, e.g. ``mask.init``), on ``parent`` (its ``dense_workdir``; None: none), recording
  gradient norms when the gradient_flow stage is on."""
  config = copy.deepcopy(base)
  for key, value in fields.items():
    node = config
    *blocks, last = key.split(".")
    for block in blocks:
      node = node[block]
    with node.ignore_type():
      node[last] = value
  config.dense_workdir = parent.workdir if parent is not None else ""
  config.grad_norm_every = record_every(study)
  return runs_lib.make_run(cache, name, spec, config, parent)


def train(runs: list, datasets, what: str, log=cache_lib.log) -> dict:
  """Trains (or reuses) ``runs`` in order, one at a time (each may be the next one's parent)."""
  out = {}
  for run in runs:
    out.update(runs_lib.train_all([run], datasets, log=log, what=what))
  return out


def final(run: runs_lib.Run) -> dict:
  """The run's final record (train / test accuracy and loss)."""
  record = RunDir(run.workdir).final_metrics() or {}
  return {k: record.get(k) for k in ("train_accuracy", "test_accuracy", "train_loss", "test_loss")}


def cell(values) -> dict | None:
  return seeds_lib.over_seeds(values)


def compare_same(a: dict, b: dict, *, binomial_n: int = 0) -> dict:
  """Whether two cells (over seeds) of one accuracy differ beyond the noise: several seeds on
  both sides: the seed ranges do not overlap; else more than 2 binomial standard errors over
  ``binomial_n`` examples (None without either). ``diff`` is mean(b) - mean(a)."""
  am, bm = a["mean"], b["mean"]
  if len(a["values"]) > 1 and len(b["values"]) > 1:
    noise = "seed spread"
    beyond = min(a["values"]) > max(b["values"]) or max(a["values"]) < min(b["values"])
  else:
    noise = "sampling noise"
    beyond = None
    if binomial_n:
      se = np.sqrt((am * (1 - am) + bm * (1 - bm)) / binomial_n)
      beyond = bool(abs(bm - am) > 2 * se)
  return {"a": am, "b": bm, "diff": bm - am, "beyond_noise": beyond, "noise": noise}


def verdict_same(comparisons: list[dict]) -> str:
  """For a claim "b is the same as a": ``reproduced`` when no comparison differs beyond the
  noise (none unknown), ``not reproduced`` when one does; ``not measured`` without any."""
  if not comparisons:
    return "not measured"
  if any(c["beyond_noise"] for c in comparisons):
    return "not reproduced"
  if any(c["beyond_noise"] is None for c in comparisons):
    return "within sampling noise"
  return "reproduced"


def describe_same(c: dict, what_a: str, what_b: str) -> str:
  note = ("noise unknown" if c["beyond_noise"] is None
          else f"{'beyond' if c['beyond_noise'] else 'within'} {c['noise']}")
  return f"{what_a} {c['a']:.4f} vs {what_b} {c['b']:.4f} ({what_b} - {what_a} {c['diff']:+.4f}, {note})"


@functools.lru_cache(maxsize=16)
def _num_train(dataset_json: str) -> int:
  import json  # pylint: disable=import-outside-toplevel
  from snnjax import data as data_lib  # pylint: disable=import-outside-toplevel
  return int(data_lib.load_dataset(ml_collections.ConfigDict(json.loads(dataset_json))).num_train)


def total_steps(config: ml_collections.ConfigDict) -> int:
  """Optimizer steps of a run of ``config`` (whole batches per epoch x epochs)."""
  n = int(config.dataset.train_size) or _num_train(config.dataset.to_json())
  return max(1, n // int(config.batch_size)) * int(config.num_epochs)


def section_end(figure_path: str, what: str, rows: list[dict], runs: dict) -> list[str]:
  """The end of a stage's section: its figure, its findings in words, its runs."""
  return (["", f"![{what}]({os.path.basename(figure_path)})", ""]
          + [f"- {r['claim']}: {r['ours']} (**{r['status']}**)." for r in rows]
          + [""] + runs_table(runs) + [""])
