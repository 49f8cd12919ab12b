"""The study end to end: solutions, the curvature table, regimes, Fisher trend, label noise,
disagreement, interpolation and the report (``run_study``)."""

from snnjax.studies.measure import default_settings, describe_settings, measure_solution
from snnjax.studies.stages import StageCache
from snnjax.studies.study import STAGES, run_study

__all__ = ["STAGES", "StageCache", "default_settings", "describe_settings", "measure_solution",
           "run_study"]
