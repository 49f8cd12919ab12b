"""Wall time and XLA compilations of one study run, from a fresh study directory.

  python benchmarks/study_profile.py --config configs/study.py:quick --out runs/profile.json

Counts JAX's compilation events while ``run_study`` runs: programs lowered to XLA
(``jaxpr_to_mlir_module``), backend compilations (``backend_compile``: the XLA compiles that ran)
and persistent-cache hits (programs a study's runs share and JAX loaded from ``DIR/jax_cache``
instead of compiling). Writes ``{"wall_s", "lowered", "backend_compiles", "cache_hits", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import jax

EVENTS = {"/jax/core/compile/jaxpr_to_mlir_module_duration": "lowered",
          "/jax/core/compile/backend_compile_duration": "backend_compiles"}


def profile(config_spec: str, workdir: str) -> dict:
  """Runs the study of ``config_spec`` in ``workdir`` (fresh) and counts compilations."""
  from snnjax.studies.study import run_study  # pylint: disable=import-outside-toplevel
  from snnjax.train import config_io  # pylint: disable=import-outside-toplevel
  counts = {"lowered": 0, "backend_compiles": 0, "cache_hits": 0}
  seconds = {"lowered": 0.0, "backend_compiles": 0.0}

  def on_duration(event, duration, **kwargs):
    if event in EVENTS:
      counts[EVENTS[event]] += 1
      seconds[EVENTS[event]] += duration

  def on_event(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
      counts["cache_hits"] += 1

  jax.monitoring.register_event_duration_secs_listener(on_duration)
  jax.monitoring.register_event_listener(on_event)
  config = config_io.load_config_spec(config_spec)
  t0 = time.time()
  run_study(config, workdir)
  wall = time.time() - t0
  import snnjax  # pylint: disable=import-outside-toplevel
  return {"config": config_spec, "wall_s": wall, **counts, "snnjax": os.path.dirname(snnjax.__file__),
          "backend_compile_s": seconds["backend_compiles"], "lowering_s": seconds["lowered"],
          "jax": jax.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count(),
          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/study.py:quick")
  parser.add_argument("--workdir", default="", help="a fresh study dir (default: a temp dir)")
  parser.add_argument("--out", default="", help="JSON file to write (default: stdout only)")
  args = parser.parse_args(argv)
  workdir = args.workdir or tempfile.mkdtemp(prefix="snnjax-profile-")
  if os.path.exists(os.path.join(workdir, "runs")):
    print(f"error: {workdir} already holds a study; give a fresh --workdir", file=sys.stderr)
    return 2
  result = profile(args.config, workdir)
  text = json.dumps(result, indent=1, sort_keys=True)
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      f.write(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
