"""The competing explanations of the sparse-from-scratch gap, side by side (report only).

Reads the results of the stages that test each explanation on the same runs (the study's own:
the table's curvature and memorization findings; gradient flow: ``gradient_flow``; lottery tickets
and linear mode connectivity: ``lottery``; masks found at init: ``masks_at_init``) and writes one
table: what each explanation predicts, what was measured, and the verdicts of its findings. An
explanation is "supported" when every one of its findings is reproduced, "contradicted" when
none is, "mixed" otherwise, "not measured" when its stage did not run.
"""

from __future__ import annotations

import ml_collections

from snnjax.studies.stage import Stage

NAME = "explanations"
# name, stage, who, what it predicts on these runs
EXPLANATIONS = (
    ("Weaker gradient flow at a dense-style init (Evci et al. 2022)", "gradient_flow",
     "Sol-S starts with weak masked gradients; a sparse-aware init (per-unit variance for the "
     "active fan-in) raises them and closes part of the gap; lottery inits are no better than "
     "Sol-S's"),
    ("Lottery tickets re-learn the pruning solution; stability to SGD noise (Frankle et al. 2020; "
     "Evci et al. 2022)", "lottery",
     "tickets rewound to an early step match Sol-F's accuracy, end linearly connected to (and near) "
     "Sol-F and are stable to the data order; Sol-S does none of these"),
    ("The mask carries little: layer densities do (Frankle et al. 2021)", "masks_at_init",
     "masks found at init (SNIP, GraSP, SynFlow) train as well when each layer is shuffled: "
     "the positions do not matter, so the gap is in the weights"),
)


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True               # configs/study.py: on in the quick preset only
  return s


def validate(study) -> None:
  del study


def compute(ctx) -> dict:
  """Which of the explanation stages produced a result (the section reads their results)."""
  return {"stages": [stage for _, stage, _ in EXPLANATIONS if ctx.results.get(stage)]}


def _stage_findings(rc, stage: str) -> list[dict]:
  from snnjax.studies import stages as stages_lib  # pylint: disable=import-outside-toplevel
  result = rc.results.get(stage)
  if not result:
    return []
  return stages_lib.get(stage).findings(rc, result)


def summary(statuses: list[str]) -> str:
  if not statuses or all(s == "not measured" for s in statuses):
    return "not measured"
  if all(s == "reproduced" for s in statuses):
    return "supported"
  if not any(s == "reproduced" for s in statuses):
    return "not supported"
  return "mixed"


def report(rc, result) -> list[str]:
  if not result:
    return []
  md = ["## Competing explanations, side by side", "",
        "Each explanation of the Sol-S / Sol-F gap tested on the same runs (the table's Sol-D, "
        "Sol-F and Sol-S, same seeds and sparsity). Verdicts against the spread between seeds "
        "(one seed: the binomial or per-step sampling noise); details in each section.", "",
        "| explanation | predicts | measured (finding: verdict) | on these runs |",
        "|---|---|---|---|"]
  for label, stage, predicts in EXPLANATIONS:
    rows = _stage_findings(rc, stage)
    measured = "; ".join(f"{r['claim']}: **{r['status']}**" for r in rows) or "-"
    md.append(f"| {label} | {predicts} | {measured} | "
              f"{summary([r['status'] for r in rows])} |")
  md += ["", "The study's own explanation (more information needed from the data, higher "
         "curvature, weaker memorization) is the findings table's rows above; the rows here are "
         "the other explanations' tests, on the same runs.", ""]
  return md


STAGE = Stage(name=NAME, default_settings=default_settings, validate=validate, compute=compute,
              report=report, needs=("gradient_flow", "lottery", "masks_at_init"))
