"""The stage contract: what one analysis of a study is, and the contexts it runs in.

A stage is one module of :mod:`snnjax.studies.stages` that defines ``STAGE = Stage(...)``:

* ``name``: its key. ``config[settings_key]`` (default: ``config[name]``) holds its settings,
  ``results[name]`` its result, ``report/`` its section.
* ``default_settings()``: its settings with their defaults (a ConfigDict with ``enabled``).
* ``validate(config)``: raises ``UserError`` naming the first invalid setting of the stage.
* ``plan(config)``: the :class:`~snnjax.studies.runs.RunSpec` s it reads. The study trains every
  planned run (each Sol-D first) before any stage computes.
* ``compute(ctx)``: its JSON-able result. Costly parts go through ``ctx.cache.cached(key,
  inputs, fn)``, keyed by the hashes of the runs read and the settings used, so a rerun reuses them.
* ``report(rc, result)``: the Markdown lines of its report section (figures go to ``rc.outdir``).
* ``findings(rc, result)``: its rows of the findings table (``result`` is None when it did not
  run: a stage says "not measured" for the claims it would have tested, or nothing).
* ``estimate(costs)``: seconds of compute left, for ``--dry-run`` (see
  :class:`snnjax.studies.dry_run.Costs`); 0 for what the cache already holds.
* ``needs``: stages whose results ``compute`` reads (they run first, even when not asked for).
* ``own_runs(ctx)``: optional; the runs the stage trains itself beyond the plan (closing the gap's
  variants, which need scores first), ``{name: Run}``, for the dry run's list.
* ``adjust_run(config, spec, train_config)``: optional; changes the training config of a run of
  the stage's own family (``noisy``: label noise; ``longtail``: an imbalanced train set) or of
  the runs it reads (the Fisher trend's checkpoint cadence).

Adding a stage: a module under ``stages/`` and one line in ``stages.REGISTRY``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import ml_collections

from snnjax.studies import cache as cache_lib
from snnjax.studies import runs as runs_lib


def _no_findings(rc, result) -> list[dict]:
  return []


def _no_estimate(costs) -> float:
  return 0.0


def _no_runs(config) -> Iterable:
  return ()


@dataclasses.dataclass(frozen=True)
class Stage:
  """One analysis of the study (see the module doc for each field's contract)."""

  name: str
  default_settings: Callable[[], ml_collections.ConfigDict]
  validate: Callable[[ml_collections.ConfigDict], None]
  compute: Callable[["Context"], Any]
  report: Callable[["ReportContext", Any], list]
  plan: Callable[[ml_collections.ConfigDict], Iterable] = _no_runs
  findings: Callable[["ReportContext", Any], list] = _no_findings
  estimate: Callable[[Any], float] = _no_estimate
  needs: tuple[str, ...] = ()
  adjust_run: Callable | None = None
  own_runs: Callable[["Context"], dict] | None = None
  settings_key: str = ""

  @property
  def key(self) -> str:
    """The study-config field of the stage's settings."""
    return self.settings_key or self.name

  def settings(self, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return config[self.key]

  def enabled(self, config: ml_collections.ConfigDict) -> bool:
    settings = config.get(self.key)
    return settings is not None and bool(settings.get("enabled", True))


@dataclasses.dataclass
class Context:
  """What a stage computes from: the study config, its cache, datasets, trained runs and the
  results of the stages before it."""

  config: ml_collections.ConfigDict
  cache: cache_lib.StageCache
  datasets: runs_lib.DatasetCache
  runs: dict
  results: dict = dataclasses.field(default_factory=dict)

  @property
  def clean(self) -> dict:
    """The runs of the ``clean`` family (the table's)."""
    return {s: r for s, r in self.runs.items() if s.family == "clean"}

  def dataset(self, run: runs_lib.Run):
    return self.datasets.get(run.config.dataset)


@dataclasses.dataclass
class ReportContext:
  """What a stage's report section and findings read: the study config, every result, the
  report directory, and whether the setup is the study's own (then its numbers are compared)."""

  config: ml_collections.ConfigDict
  results: dict
  outdir: str
  setups_match: bool
