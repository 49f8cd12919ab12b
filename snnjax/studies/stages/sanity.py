"""The sanity-check stage: Tr(H) (Hutchinson) against the exact true-Fisher trace.

For the mean cross-entropy, H = J^T H_z J + sum_k (dL/dz_k) d^2 z_k / d theta^2 (z the logits).
In a ReLU network with BatchNorm in eval mode every parameter enters the logits piecewise
linearly when the others are held fixed, so the diagonal of d^2 z_k / d theta^2 vanishes (almost
everywhere) and the trace of the second term is 0: Tr(H) = Tr(GGN) = Tr(F) (the true Fisher, exact
expectation over the model's labels), on the same examples, params and coordinates. The check
measures both on the same training examples (all trainable params, active coordinates, eval-mode
BatchNorm) and reports whether they agree within 3 Hutchinson standard errors (z = difference /
stderr; the report checks several solutions at once, and at 2 standard errors one in twenty
correct checks would fail by chance).
"""

from __future__ import annotations

import ml_collections

from snnjax.studies import measure as measure_lib
from snnjax.studies.stage import Stage
from snnjax.train import config_io
from snnjax.train.run_dir import RunDir

Z_AGREE = 3.0


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True
  s.num_examples = 256          # training examples both traces are measured on
  s.max_probes = 100            # Hutchinson probes for Tr(H)
  return s


def validate(config) -> None:
  config_io.check_int(config.sanity.num_examples, "study sanity.num_examples", 2, config_io.MAX_COUNT)
  config_io.check_int(config.sanity.max_probes, "study sanity.max_probes", 2, config_io.MAX_PROBES)


def check_solution(solution, dataset, *, num_examples: int, max_probes: int, seed: int = 0
                   ) -> dict:
  """Tr(H) and the exact Tr(F) of ``solution`` on ``num_examples`` training examples."""
  tr_h, tr_f = measure_lib.subset_traces(solution, dataset, num_examples=num_examples,
                                         num_probes=max_probes, seed=seed)
  diff = tr_h.value - tr_f.value
  z = diff / tr_h.stderr if tr_h.stderr else float("inf")
  return {"tr_h": tr_h.as_dict(), "tr_f_exact": tr_f.as_dict(), "difference": diff,
          "relative_difference": diff / tr_f.value if tr_f.value else None,
          "z": z, "within_1_stderr": bool(abs(z) <= 1.0),
          "agree": bool(abs(z) <= Z_AGREE), "criterion": f"|Tr(H) - Tr(F)| <= {Z_AGREE:g} stderr"}


def checked_runs(clean: dict) -> list:
  """Sol-D and Sol-F / Sol-S at the smallest sparsity, of the first seed (RunSpecs)."""
  if not clean:
    return []
  seed = min(s.seed for s in clean)
  sparse = sorted({s.sparsity for s in clean if s.regime != "dense"})
  return sorted(s for s in clean if s.seed == seed and (
      s.regime == "dense" or (sparse and s.sparsity == sparse[0])))


def compute(ctx) -> dict:
  settings = ctx.config.sanity
  out = {}
  for spec in checked_runs(ctx.clean):
    run = ctx.runs[spec]
    def compute_one(run=run):
      return check_solution(RunDir(run.workdir).solution(), ctx.dataset(run),
                            num_examples=int(settings.num_examples),
                            max_probes=int(settings.max_probes))
    result = ctx.cache.cached(f"sanity-{spec.name}", {"run": run.hash, "settings": settings},
                              compute_one)
    out[spec.name] = {"label": spec.label, **result}
  return out


def all_agree(results: dict) -> bool:
  return bool(results) and all(r["agree"] for r in results.values())


def report(rc, result) -> list[str]:
  if not result:
    return []
  md = ["## Sanity check: Tr(H) = Tr(F) for ReLU nets with eval-mode BatchNorm", "",
        "Both on the same training examples, all trainable params, active coordinates; "
        "Tr(H) by Hutchinson, Tr(F) the exact true-Fisher trace. They should agree within "
        f"the Hutchinson standard error (criterion: |z| <= {Z_AGREE:g}, z = "
        "(Tr(H) - Tr(F)) / stderr).", "",
        "| solution | examples | Tr(H) ± stderr (probes) | exact Tr(F) | z | agree |",
        "|---|---|---|---|---|---|"]
  for r in result.values():
    h = r["tr_h"]
    md.append(f"| {r['label']} | {h['num_examples']} | {h['value']:.4g} ± "
              f"{h['stderr']:.2g} ({h['num_probes']}) | {r['tr_f_exact']['value']:.4g} | "
              f"{r['z']:+.2f} | {'yes' if r['agree'] else 'NO'} |")
  return md + [""]


def estimate(costs) -> float:
  seconds = 0.0
  for spec in checked_runs(costs.clean):
    run = costs.clean[spec]
    if not costs.has(f"sanity-{spec.name}", run.hash):
      d, g, _ = costs.unit(spec.name)
      n = min(int(costs.config.sanity.num_examples), d.num_train)
      seconds += n * g * (costs.EXACT_FISHER_G * d.num_classes
                          + costs.PROBE_G * int(costs.config.sanity.max_probes))
  return seconds


STAGE = Stage(name="sanity", default_settings=default_settings, validate=validate,
              compute=compute, report=report, estimate=estimate)
