"""The study's stages, in the order they run and report (see :mod:`snnjax.studies.stage`).

Adding a stage: a module here that defines ``STAGE``, and one line below.
"""

from snnjax.studies.stages import closing_gap
from snnjax.studies.stages import disagreement
from snnjax.studies.stages import dynamic_sparsity
from snnjax.studies.stages import explanations
from snnjax.studies.stages import fisher_trend
from snnjax.studies.stages import gradient_flow
from snnjax.studies.stages import interpolation
from snnjax.studies.stages import label_noise
from snnjax.studies.stages import lottery
from snnjax.studies.stages import masks_at_init
from snnjax.studies.stages import memorization
from snnjax.studies.stages import per_layer
from snnjax.studies.stages import regimes
from snnjax.studies.stages import sanity
from snnjax.studies.stages import table

REGISTRY = (
    table.STAGE,
    regimes.STAGE,
    sanity.STAGE,
    per_layer.STAGE,
    fisher_trend.STAGE,
    label_noise.STAGE,
    memorization.STAGE,
    disagreement.STAGE,
    interpolation.STAGE,
    closing_gap.STAGE,
    dynamic_sparsity.STAGE,
    gradient_flow.STAGE,
    lottery.STAGE,
    masks_at_init.STAGE,
    explanations.STAGE,
)
NAMES = tuple(s.name for s in REGISTRY)


def get(name: str):
  """The registered stage ``name`` (KeyError if none)."""
  for stage in REGISTRY:
    if stage.name == name:
      return stage
  raise KeyError(name)


def run_hooks() -> tuple:
  """Every stage's ``adjust_run`` hook, in order (applied to every run, whatever is enabled)."""
  return tuple(s.adjust_run for s in REGISTRY if s.adjust_run is not None)
