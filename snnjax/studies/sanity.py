"""The built-in sanity check: Tr(H) (Hutchinson) against the exact true-Fisher trace.

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

import jax

from snnjax.estimators import fisher as fisher_lib
from snnjax.estimators import hessian as hessian_lib
from snnjax.studies import measure as measure_lib
from snnjax.studies import stages
from snnjax.train.solution import load_solution

Z_AGREE = 3.0


def check_solution(solution, dataset, *, num_examples: int, max_probes: int, seed: int = 0
                   ) -> dict:
  """Tr(H) and the exact Tr(F) of ``solution`` on ``num_examples`` training examples."""
  idx = measure_lib.train_subset(dataset.num_train, num_examples, seed)
  batch = {"x": dataset.x_train[idx], "y": dataset.y_train[idx]}
  logits_fn, loss_fn = solution.functions(bn_mode="eval")
  mask = measure_lib.estimator_mask(solution.params, solution.mask, "all")
  tr_h = hessian_lib.hessian_trace(loss_fn, solution.params, batch, key=jax.random.key(seed),
                                   num_probes=int(max_probes), mask=mask, rtol=None)
  tr_f = fisher_lib.fisher_trace(logits_fn, solution.params, batch, labels="exact", mask=mask)
  diff = tr_h.value - tr_f.value
  z = diff / tr_h.stderr if tr_h.stderr else float("inf")
  return {"tr_h": tr_h.as_dict(), "tr_f_exact": tr_f.as_dict(), "difference": diff,
          "relative_difference": diff / tr_f.value if tr_f.value else None,
          "z": z, "within_1_stderr": bool(abs(z) <= 1.0),
          "agree": bool(abs(z) <= Z_AGREE), "criterion": f"|Tr(H) - Tr(F)| <= {Z_AGREE:g} stderr"}


def analyze(runs, settings, cache: stages.StageCache, datasets) -> dict:
  """The check on Sol-D and on Sol-F / Sol-S at the smallest sparsity (first seed)."""
  clean = sorted(s for s in runs if s.family == "clean")
  if not clean:
    return {}
  seed = clean[0].seed
  sparse = sorted({s.sparsity for s in clean if s.regime != "dense"})
  chosen = [s for s in clean if s.seed == seed and (
      s.regime == "dense" or (sparse and s.sparsity == sparse[0]))]
  out = {}
  for spec in chosen:
    run = runs[spec]
    def compute(run=run):
      return check_solution(load_solution(run.workdir), datasets.get(run.config.dataset),
                            num_examples=int(settings.num_examples),
                            max_probes=int(settings.max_probes))
    result = cache.cached(f"sanity-{spec.name}", {"run": run.hash, "settings": settings},
                          compute)
    out[spec.name] = {"label": spec.label, **result}
  return out


def all_agree(results: dict) -> bool:
  return bool(results) and all(r["agree"] for r in results.values())
