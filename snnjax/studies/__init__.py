"""The study end to end: the runs, the stages (table, regimes, sanity check, Fisher trend, label
noise, disagreement, interpolation, closing the gap) and the report (``run_study``)."""

from snnjax.studies.cache import StageCache
from snnjax.studies.measure import default_settings, describe_settings, measure_solution
from snnjax.studies.study import STAGES, default_config, run_study

__all__ = ["STAGES", "StageCache", "default_config", "default_settings", "describe_settings",
           "measure_solution", "run_study"]
