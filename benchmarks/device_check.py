"""The accelerator check: what the first machine with a GPU/TPU should measure, in one command.

  python scripts/bench.py --preset device --out device.json      # writes device.json + device.md
  python scripts/bench.py --preset device --smoke --out d.json    # CPU, tiny sizes, seconds (CI)

Sections (each a JSON-ready dict; ``device.md`` is a table to paste into BENCHMARKS.md):

* ``resnet32``: the library's jitted train step (``make_train_step``: index gather from a
  device-resident training set, pad-and-crop / flip augmentation, masked SGD) for ResNet-32
  (16/32/64, option A) at batch 128, in float32 and bfloat16 compute: median step time,
  images/s, and the wall time of one real 50,000-image epoch (390 steps, host loop included,
  compile excluded). Target on an H100/H200: under 3 s per epoch.
* ``wide_resnet32``: the same step for the study's 4x-wide ResNet-32 (64/128/256, option B) on
  CIFAR-100 shapes, both precisions.
* ``estimators``: ``jax_bench.bench_estimators`` (HVP, Hutchinson probe, MC Tr(F), per-example
  gradient norms, exact Jacobian, as ratios to a gradient, with XLA's memory figures), and
  Hutchinson with sequential vs vmapped probes (``batch_probes=1`` vs all probes in one call).
* ``memory``: the device's peak bytes in use after each section (``device.memory_stats()``,
  where the backend reports it; None on CPU) and XLA's static buffer sizes per compiled step.
* ``study``: the dry-run plan of ``configs/study.py:paper`` (``snnjax.studies.dry_run``): each
  architecture's real train step timed on this device and the whole study's estimated wall time
  (target: under 1 hour). Skipped in smoke mode.
* ``defaults``: which CPU-only rewrites are active on this backend (they must be off on GPU/TPU).

Smoke mode swaps every model for the small CNN on 8x8 inputs so that CI checks the code path.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import jax_bench
from snnjax import models, sparsity
from snnjax.data import pipeline
from snnjax.estimators import _convs
from snnjax.estimators import hessian as hessian_lib
from snnjax.train import optim
from snnjax.train import state as state_lib
from snnjax.train import step as step_lib

EPOCH_IMAGES = 50_000
TARGETS = {"resnet32_epoch_s": 3.0, "paper_study_h": 1.0}


@dataclasses.dataclass(frozen=True)
class Model:
  name: str
  kwargs: dict
  num_classes: int
  image: int
  batch: int


def _models(smoke: bool) -> dict[str, Model]:
  if smoke:
    small = Model("cnn", {"width": 0.25}, 10, 8, 8)
    return {"resnet32": small, "wide_resnet32": dataclasses.replace(small, num_classes=100)}
  return {"resnet32": Model("resnet32", {"shortcut": "A"}, 10, 32, 128),
          "wide_resnet32": Model("resnet32", {"width": 4.0, "shortcut": "B"}, 100, 32, 128)}


def _peak_bytes() -> int | None:
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return None if not stats else stats.get("peak_bytes_in_use")


def bench_train_step(m: Model, precision: str, *, epoch_images: int, reps: int,
                     seed: int = 0) -> dict:
  """Step time, images/s and one epoch's wall time of the library's train step for ``m``."""
  model = models.create_model(m.name, m.num_classes, **m.kwargs)
  params, batch_stats = models.init_variables(model, jax.random.key(seed), (m.image, m.image, 3))
  mask = sparsity.dense_mask(params)
  tx = optim.masked_sgd(0.1, momentum=0.9, weight_decay=5e-4)
  state = state_lib.TrainState.create(params, batch_stats, mask, tx)
  rng = np.random.default_rng(seed)
  data = {"x": jnp.asarray(rng.standard_normal((epoch_images, m.image, m.image, 3), np.float32)),
          "y": jnp.asarray(rng.integers(0, m.num_classes, epoch_images).astype(np.int32))}
  dtype = jnp.bfloat16 if precision == "bfloat16" else None
  step = step_lib.make_train_step(model.apply, tx, augment=True, compute_dtype=dtype)
  batches = pipeline.batch_indices(pipeline.epoch_permutation(seed, 0, epoch_images), m.batch)
  key = jax.random.key(1)
  idx0 = jnp.asarray(batches[0])
  t0 = time.perf_counter()
  compiled = step.lower(state, data, idx0, key).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state}

  def one(i=0):
    holder["state"], metrics = compiled(holder["state"], data, jnp.asarray(batches[i % len(batches)]),
                                        jax.random.fold_in(key, i))
    return metrics["loss"]
  t = jax_bench.median_time(one, reps, warmup=2)
  t0 = time.perf_counter()
  for i, idx in enumerate(batches):
    holder["state"], metrics = compiled(holder["state"], data, jnp.asarray(idx),
                                        jax.random.fold_in(key, i))
  jax.block_until_ready(metrics)
  epoch_s = time.perf_counter() - t0
  return {"model": m.name, "kwargs": m.kwargs, "batch": m.batch, "precision": precision,
          "step_ms": 1e3 * t["median_s"], "images_per_s": m.batch / t["median_s"],
          "epoch_s": epoch_s, "epoch_images": epoch_images, "epoch_steps": len(batches),
          "compile_s": compile_s, "memory": jax_bench.memory_stats(compiled),
          "finite": bool(jnp.isfinite(metrics["loss"]))}


def bench_probes(setup: jax_bench.Setup, seed: int = 0) -> dict:
  """Hutchinson Tr(H) with sequential (one probe per call) vs vmapped (all in one call) probes."""
  model, params, batch_stats = jax_bench.build_model(setup, seed)
  batch = jax_bench.random_batch(setup, seed=seed)
  loss_fn, _ = jax_bench.eval_fns(model, batch_stats)
  k = max(2, setup.probes)
  out = {"probes": k}
  for name, group in (("sequential", 1), ("vmapped", k)):
    def trace(group=group):
      return hessian_lib.hessian_trace(loss_fn, params, batch, key=jax.random.key(3),
                                       num_probes=k, batch_probes=group).value
    t = jax_bench.median_time(trace, max(1, setup.reps // 2), warmup=1)
    out[name] = {"batch_probes": group, "s": t["median_s"], "value": float(trace())}
  out["vmapped_speedup"] = out["sequential"]["s"] / out["vmapped"]["s"]
  return out


def plan_study(preset: str) -> dict:
  """The dry-run estimate of ``configs/study.py:<preset>`` on this device (nothing trained)."""
  from snnjax.studies import dry_run  # pylint: disable=import-outside-toplevel
  from snnjax.train import config_io  # pylint: disable=import-outside-toplevel
  config = config_io.load_config_spec(os.path.join(jax_bench.ROOT, "configs", "study.py")
                                      + f":{preset}")
  with tempfile.TemporaryDirectory() as workdir:
    plan = dry_run.plan_study(config, workdir, log=lambda *a, **k: None)
  return {"preset": preset, "total_s": plan["total_s"], "total_h": plan["total_s"] / 3600,
          "training_s": plan["training_s"], "stages_s": plan["stages"],
          "runs": len(plan["runs"]), "architectures": plan["architectures"],
          "notes": plan["notes"]}


def backend_defaults() -> dict:
  """The CPU-only rewrites in force on this backend (both False on GPU/TPU)."""
  from snnjax.models import resnet  # pylint: disable=import-outside-toplevel
  x = jnp.ones((2, 2))
  materialized = "div" in str(jax.make_jaxpr(lambda a: resnet._maybe_materialize(a, None))(x))
  return {"backend": jax.default_backend(),
          "estimators_grouped_conv_rewrite": _convs.resolve_cpu_rewrites(None),
          "resnet_residual_materialize": materialized}


def run(*, smoke: bool = False, reps: int | None = None) -> dict:
  """Every section (see the module doc); ``smoke``: tiny sizes on any backend."""
  reps = reps or (1 if smoke else 10)
  specs = _models(smoke)
  epoch_images = 256 if smoke else EPOCH_IMAGES
  res: dict[str, Any] = {"machine": jax_bench.machine_info(), "smoke": smoke,
                         "devices": [{"platform": d.platform, "kind": d.device_kind}
                                     for d in jax.devices()],
                         "targets": TARGETS, "memory": {"peak_bytes_after": {}}}
  t0 = time.perf_counter()
  for name in ("resnet32", "wide_resnet32"):
    precisions = ("float32",) if smoke and name == "wide_resnet32" else ("float32", "bfloat16")
    res[name] = {p: bench_train_step(specs[name], p, epoch_images=epoch_images, reps=reps)
                 for p in precisions}
    res["memory"]["peak_bytes_after"][name] = _peak_bytes()
  setup = (jax_bench.Setup.smoke() if smoke else jax_bench.Setup.full(reps=reps, probes=8))
  # In smoke mode the estimator ratios (jax_bench.bench_estimators, tested with bench.py --smoke)
  # are left out to keep CI short; the probes comparison runs.
  res["estimators"] = {} if smoke else jax_bench.bench_estimators(setup)
  res["estimators"]["probes"] = bench_probes(setup)
  res["memory"]["peak_bytes_after"]["estimators"] = _peak_bytes()
  # The dry run is tested with the studies; in smoke mode it would only add CI time.
  res["study"] = {"skipped": "smoke run"} if smoke else plan_study("paper")
  res["memory"]["peak_bytes_after"]["study"] = _peak_bytes()
  res["defaults"] = backend_defaults()
  res["wall_s"] = time.perf_counter() - t0
  return res


def markdown(res: dict) -> str:
  """The report as a Markdown table (machine and date in the heading)."""
  m = res["machine"]
  kinds = sorted({d["kind"] for d in res["devices"]})
  lines = [f"### Device check: {', '.join(kinds)} x{len(res['devices'])} ({m['backend']}), "
           f"jax {m['versions']['jax']}, {m['date']}" + (" (smoke)" if res["smoke"] else ""), "",
           "| measure | float32 | bfloat16 | target |", "|---|---|---|---|"]
  def cell(r, key, fmt):
    return fmt.format(r[key]) if r is not None else "n/a"
  for name in ("resnet32", "wide_resnet32"):
    f32, b16 = res[name]["float32"], res[name].get("bfloat16")
    lines.append(f"| {name} step (batch {f32['batch']}) | {f32['step_ms']:.2f} ms | "
                 f"{cell(b16, 'step_ms', '{:.2f} ms')} | |")
    lines.append(f"| {name} images/s | {f32['images_per_s']:.0f} | "
                 f"{cell(b16, 'images_per_s', '{:.0f}')} | |")
    target = f"< {TARGETS['resnet32_epoch_s']:g} s" if name == "resnet32" else ""
    lines.append(f"| {name} epoch ({f32['epoch_images']} images) | {f32['epoch_s']:.2f} s | "
                 f"{cell(b16, 'epoch_s', '{:.2f} s')} | {target} |")
  e = res["estimators"]
  lines += ["", "| estimator (float32) | ratio | |", "|---|---|---|"]
  if "hvp" in e:
    lines += [f"| HVP / gradient | {e['hvp']['over_gradient']:.2f} | |",
              f"| Hutchinson probe / gradient | {e['hutchinson']['per_probe_over_gradient']:.2f} | |",
              f"| MC Tr(F) / gradient | {e['fisher_mc']['over_gradient']:.2f} | |",
              f"| per-example norms / gradient | "
              f"{e['per_example_grad_norms']['over_gradient']:.2f} | |"]
    if e["hvp"].get("temp_memory_ratio") is not None:
      lines.append(f"| HVP / gradient XLA temp memory | {e['hvp']['temp_memory_ratio']:.2f} | |")
  lines.append(f"| vmapped / sequential probes speed-up | {e['probes']['vmapped_speedup']:.2f} | |")
  s = res["study"]
  study = ("Study: not planned (smoke run)." if "skipped" in s else
           f"Study `{s['preset']}` estimated from the measured steps: {s['total_h']:.2f} h "
           f"({s['runs']} runs; training {s['training_s'] / 3600:.2f} h; target < "
           f"{TARGETS['paper_study_h']:g} h).")
  lines += ["", study + " Peak device bytes after each section: "
            + ", ".join(f"{k} {v}" for k, v in res["memory"]["peak_bytes_after"].items())
            + f". CPU-only rewrites on this backend: {res['defaults']}. Wall {res['wall_s']:.0f} s."]
  return "\n".join(lines) + "\n"
