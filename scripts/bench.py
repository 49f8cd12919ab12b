"""Benchmarks of snnjax: train step, estimators, data-parallel scaling, PyTorch peers.

  python scripts/bench.py --out bench.json [--smoke] [--sections train,estimators,scaling,peers]
      [--torch-python /root/peers/bin/python] [--xla-flags "--xla_cpu_..."] [--no-materialize]
  python scripts/bench.py --preset cifar10_cpu --sections train,peers --out bench-cifar10_cpu.json
  python scripts/bench.py --preset cifar10_cpu --sections dst --out bench-dst.json   # RigL/SET cost
  python scripts/bench.py --preset cifar10_fit --sections train,peers --out bench-cifar10_fit.json
  python scripts/bench.py --preset device --out device.json     # the accelerator check (+ device.md)

Like the training and study CLIs it applies ``snnjax.xla_cpu.tune()`` (the measured XLA:CPU
convolution flag) unless ``SNNJAX_XLA_TUNING=0``; the report's ``machine.xla_flags`` says what ran.

A thin CLI over ``benchmarks/jax_bench.py`` (see there and ``BENCHMARKS.md`` for what is measured).
Writes the JSON report to ``--out`` (and a short summary to stdout). ``--smoke`` runs tiny sizes in
seconds and skips the peers section. ``--preset cifar10_cpu`` benchmarks the architecture and batch
size of that training preset (half-width ResNet-20, batch 128) instead of ResNet-32. ``--preset
device`` runs ``benchmarks/device_check.py`` instead (the check for a machine with an accelerator:
ResNet-32 epochs in float32/bfloat16, the wide ResNet-32 step, estimator ratios, peak memory, the
``paper`` study's estimated wall time) and writes a Markdown table beside the JSON (``.md``); with
``--smoke`` it runs tiny sizes on any backend.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from benchmarks import device_check  # noqa: E402  pylint: disable=wrong-import-position
from benchmarks import jax_bench  # noqa: E402  pylint: disable=wrong-import-position
from snnjax import xla_cpu  # noqa: E402  pylint: disable=wrong-import-position
from snnjax.errors import UserError  # noqa: E402  pylint: disable=wrong-import-position


def _summary(res: dict) -> str:
  lines = [f"{res['machine']['cpu_model']} x{res['machine']['cores']} "
           f"({res['machine']['backend']}), jax {res['machine']['versions']['jax']}"]
  if "train" in res:
    t = res["train"]
    lines.append(f"train: unmasked {t['unmasked']['step_ms']:.1f} ms "
                 f"({t['unmasked']['images_per_s']:.0f} img/s), "
                 f"masked {t['masked']['step_ms']:.1f} ms, "
                 f"masked/unmasked {t['masked_over_unmasked']:.3f}")
  if "estimators" in res:
    e = res["estimators"]
    lines.append(f"estimators: gradient {e['gradient_s'] * 1e3:.1f} ms, hvp/grad "
                 f"{e['hvp']['over_gradient']:.2f}, probe/grad "
                 f"{e['hutchinson']['per_probe_over_gradient']:.2f}, MC Tr(F)/grad "
                 f"{e['fisher_mc']['over_gradient']:.2f}, Jacobian/forward "
                 f"{e['jacobian_exact']['over_forward']:.1f}")
  if "scaling" in res:
    rows = ", ".join(f"{r['devices']}: {r['images_per_s']:.0f} img/s" if "images_per_s" in r
                     else f"{r['devices']}: {r.get('error')}" for r in res["scaling"]["rows"])
    lines.append(f"scaling: {rows}")
  if "dst" in res:
    d = res["dst"]
    lines.append(f"dst: plain step {d['step_ms']:.1f} ms, RigL update/step "
                 f"{d['rigl']['update_over_step']:.2f}, SET update/step {d['set']['update_over_step']:.2f}")
  if "peers" in res:
    p = res["peers"]
    if "ratios" in p:
      lines.append("peers (snnjax/torch, medians): " + ", ".join(
          f"{k} {v:.2f}" for k, v in p["ratios"].items()))
      lines.append("peers (snnjax/torch, fastest reps): " + ", ".join(
          f"{k} {v:.2f}" for k, v in p["ratios_min"].items()))
    else:
      lines.append(f"peers: {p.get('skipped') or p.get('torch', {}).get('error')}")
  return "\n".join(lines)


def _write_json(path: str, res: dict) -> None:
  with open(path, "w") as f:
    json.dump(res, f, indent=2)
    f.write("\n")


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description="snnjax benchmarks (JSON report)")
  ap.add_argument("--out", default="bench.json", help="JSON report path")
  ap.add_argument("--smoke", action="store_true", help="tiny sizes, one rep, no peers")
  ap.add_argument("--sections", default=",".join(jax_bench.SECTIONS),
                  help=f"comma-separated subset of {','.join(jax_bench.SECTIONS)}")
  ap.add_argument("--torch-python", default=None,
                  help="PyTorch interpreter for the peers "
                       f"(default {jax_bench.DEFAULT_TORCH_PYTHON})")
  ap.add_argument("--reps", type=int, default=None, help="timed repetitions (default 5; smoke 1)")
  ap.add_argument("--no-materialize", action="store_true",
                  help="ResNets without the residual-stream materialization (for comparisons)")
  ap.add_argument("--xla-flags", default="",
                  help="appended to XLA_FLAGS before JAX starts its backend (and passed to the "
                       "scaling subprocesses), e.g. the CPU flags BENCHMARKS.md recommends")
  ap.add_argument("--preset", default="", choices=("", "cifar10_cpu", "cifar10_fit", "device"),
                  help="cifar10_cpu: benchmark the model and batch size of that training preset "
                       "instead of ResNet-32; device: the accelerator check "
                       "(benchmarks/device_check.py)")
  args = ap.parse_args(argv)
  try:
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    bad = [s for s in sections if s not in jax_bench.SECTIONS]
    if bad or not sections:
      raise UserError(f"--sections must be a comma-separated subset of "
                      f"{','.join(jax_bench.SECTIONS)}, got {args.sections!r}")
    if args.reps is not None and args.reps < 1:
      raise UserError(f"--reps must be >= 1, got {args.reps}")
    if args.torch_python is not None and not os.path.exists(args.torch_python):
      raise UserError(f"--torch-python {args.torch_python} does not exist")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
      raise UserError(f"--out directory {out_dir} does not exist")
  except UserError as e:
    sys.stderr.write(f"error: {e}\n")
    return 2
  # XLA reads XLA_FLAGS when the backend starts, at the first computation: nothing has run yet.
  if args.xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
  xla_cpu.tune()  # as the training and study CLIs do (SNNJAX_XLA_TUNING=0 turns it off)
  if args.preset == "device":
    res = device_check.run(smoke=args.smoke, reps=args.reps)
    _write_json(args.out, res)
    md = os.path.splitext(args.out)[0] + ".md"
    with open(md, "w") as f:
      f.write(device_check.markdown(res))
    print(device_check.markdown(res))
    return 0
  kw = {} if args.reps is None else {"reps": args.reps}
  if args.no_materialize:
    kw["materialize"] = False
  if args.preset:
    kw.update(jax_bench.preset_setup_kwargs(args.preset))
  setup = (jax_bench.Setup.smoke(**kw) if args.smoke else jax_bench.Setup.full(**kw))
  res = jax_bench.run(sections, smoke=args.smoke, torch_python=args.torch_python, setup=setup)
  _write_json(args.out, res)
  print(_summary(res))
  return 0


if __name__ == "__main__":
  sys.exit(main())
