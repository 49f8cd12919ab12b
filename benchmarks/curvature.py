"""Benchmarks of the curvature toolkit (issue 13): per-block cost, diagonal cost, trace estimators.

  PYTHONPATH=. python -m benchmarks.curvature --workdir /tmp/curv-r20 --out curv.json
  PYTHONPATH=. python -m benchmarks.curvature --smoke --out /tmp/curv-smoke.json

Measured on one batch of ``--examples`` training examples of the run's dataset at the run's
trained weights (``--workdir``: a training run's work dir; BatchNorm in eval mode), all in one
process so every figure is a ratio within one run:

* ``blocks``: Hutchinson Tr(H) with ``blocks="layer"`` against the plain total (same probes), and
  the per-block Fisher (exact labels) / per-example squared norms against their totals;
* ``diagonal``: the Hutchinson Hessian diagonal per probe, against a gradient and a trace probe;
* ``trace_error``: RMS error of Hutchinson, Hutch++ and XTrace per number of operator
  applications (``--budgets``, ``--seeds`` repetitions) against a long Hutchinson reference
  (``--reference-probes``; its own standard error is reported beside).

Times are medians of ``--reps`` calls after one warm-up call (compilation excluded). Applies
``snnjax.xla_cpu.tune()`` like the CLIs (the report's ``machine.xla_flags`` says what ran).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import jax_bench
from snnjax import estimators as est
from snnjax import xla_cpu


def _median_time(fn, reps: int) -> float:
  fn()  # warm-up: compile
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def _setup(args):
  """(loss_fn, logits_fn, params, batch, description)."""
  if args.smoke or not args.workdir:
    setup = jax_bench.Setup.smoke()
    model, params, stats = jax_bench.build_model(setup)
    loss_fn, logits_fn = jax_bench.eval_fns(model, stats)
    batch = jax_bench.random_batch(setup, args.examples)
    return loss_fn, logits_fn, params, batch, f"random init {setup.model} (smoke)"
  from snnjax.data import datasets  # pylint: disable=import-outside-toplevel
  from snnjax.train import solution as solution_lib  # pylint: disable=import-outside-toplevel
  sol = solution_lib.load_solution(args.workdir)
  data = datasets.load_dataset(sol.config.dataset)
  batch = {"x": jnp.asarray(data.x_train[:args.examples]),
           "y": jnp.asarray(data.y_train[:args.examples].astype(np.int32))}
  n_params = sum(int(np.size(p)) for p in jax.tree.leaves(sol.params))
  desc = (f"{sol.config.model.name} {dict(sol.config.model.kwargs)} ({n_params} params), "
          f"{args.workdir} epoch {sol.epoch}")
  return sol.loss_fn, sol.logits_fn, sol.params, batch, desc


def bench_blocks(loss_fn, logits_fn, params, batch, args) -> dict:
  key = jax.random.key(0)
  p = args.probes
  plain = _median_time(lambda: est.hessian_trace(loss_fn, params, batch, key=key,
                                                 num_probes=p), args.reps)
  blocks = _median_time(lambda: est.hessian_trace(loss_fn, params, batch, key=key, num_probes=p,
                                                  blocks="layer"), args.reps)
  f_plain = _median_time(lambda: est.fisher_trace(logits_fn, params, batch), args.reps)
  f_blocks = _median_time(lambda: est.fisher_trace(logits_fn, params, batch, blocks="layer"),
                          args.reps)
  n_plain = _median_time(lambda: est.per_example_grad_norms(logits_fn, params, batch), args.reps)
  n_blocks = _median_time(lambda: est.per_example_sqnorms_by_block(logits_fn, params, batch,
                                                                   blocks="layer"), args.reps)
  return {"probes": p, "hessian_plain_s": plain, "hessian_blocks_s": blocks,
          "hessian_blocks_over_plain": blocks / plain,
          "fisher_exact_plain_s": f_plain, "fisher_exact_blocks_s": f_blocks,
          "fisher_blocks_over_plain": f_blocks / f_plain,
          "sqnorms_plain_s": n_plain, "sqnorms_blocks_s": n_blocks,
          "sqnorms_blocks_over_plain": n_blocks / n_plain,
          "num_blocks": len(est.make_blocks(params, "layer").names)}


def bench_diagonal(loss_fn, params, batch, args) -> dict:
  key = jax.random.key(1)
  grad = jax.jit(jax.grad(loss_fn))
  g = _median_time(lambda: jax.block_until_ready(grad(params, batch)), args.reps)
  p = args.probes
  diag = _median_time(lambda: est.hessian_diagonal(loss_fn, params, batch, key=key,
                                                   num_probes=p), args.reps) / p
  trace = _median_time(lambda: est.hessian_trace(loss_fn, params, batch, key=key, num_probes=p),
                       args.reps) / p
  return {"gradient_s": g, "diag_per_probe_s": diag, "trace_per_probe_s": trace,
          "diag_probe_over_gradient": diag / g, "diag_probe_over_trace_probe": diag / trace}


def bench_trace_error(loss_fn, params, batch, args) -> dict:
  ref = est.hessian_trace(loss_fn, params, batch, key=jax.random.key(10 ** 6),
                          num_probes=args.reference_probes)
  rows = []
  for m in args.budgets:
    for method in ("hutchinson", "hutchpp", "xtrace"):
      errs, ses, secs = [], [], []
      for seed in range(args.seeds):
        t0 = time.perf_counter()
        e = est.hessian_trace(loss_fn, params, batch, key=jax.random.key(seed), num_probes=m,
                              method=method)
        secs.append(time.perf_counter() - t0)
        errs.append(e.value - ref.value)
        ses.append(e.stderr)
      rows.append({"method": method, "matvecs": m, "rms_error": float(np.sqrt(np.mean(
          np.square(errs)))), "mean_reported_stderr": float(np.nanmean(ses)),
                   "median_s": float(np.median(secs[1:] if len(secs) > 1 else secs))})
  return {"reference": {"value": ref.value, "stderr": ref.stderr,
                        "probes": args.reference_probes},
          "seeds": args.seeds, "rows": rows}


def main(argv=None) -> dict:
  xla_cpu.tune()  # as the CLIs do (SNNJAX_XLA_TUNING=0 turns it off); before JAX starts
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="")
  parser.add_argument("--out", required=True)
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--examples", type=int, default=128)
  parser.add_argument("--probes", type=int, default=8)
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--budgets", type=int, nargs="+", default=[12, 48])
  parser.add_argument("--seeds", type=int, default=6)
  parser.add_argument("--reference-probes", type=int, default=400)
  parser.add_argument("--sections", default="blocks,diagonal,trace_error")
  args = parser.parse_args(argv)
  if args.smoke:
    args.examples, args.probes, args.reps = 8, 2, 1
    args.budgets, args.seeds, args.reference_probes = [6], 2, 10
  loss_fn, logits_fn, params, batch, desc = _setup(args)
  res = {"machine": jax_bench.machine_info(), "setup": desc, "examples": args.examples}
  sections = args.sections.split(",")
  if "blocks" in sections:
    res["blocks"] = bench_blocks(loss_fn, logits_fn, params, batch, args)
    print("blocks", json.dumps(res["blocks"]), flush=True)
  if "diagonal" in sections:
    res["diagonal"] = bench_diagonal(loss_fn, params, batch, args)
    print("diagonal", json.dumps(res["diagonal"]), flush=True)
  if "trace_error" in sections:
    res["trace_error"] = bench_trace_error(loss_fn, params, batch, args)
    print("trace_error", json.dumps(res["trace_error"]), flush=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
  return res


if __name__ == "__main__":
  main()
