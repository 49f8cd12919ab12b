"""snnjax benchmarks: train step, estimators, data-parallel scaling, and PyTorch peers.

Every time is the median over ``reps`` timed calls after ``warmup`` untimed ones (the first of which
compiles), each ended with ``jax.block_until_ready``; compile time is measured separately with
``jit(...).lower(...).compile()``. Sections (each a function returning a JSON-ready dict):

* :func:`bench_train`: the library's train step (``snnjax.train.step.train_step`` with
  ``snnjax.train.optim.masked_sgd``, jitted, state donated) on one CIFAR-shaped batch: without a
  mask (``mask=None``: plain SGD), with an all-True mask (how the library runs a dense model) and
  with a 95%-sparse random mask; ms, images/s, masked/unmasked ratio.
* :func:`bench_estimators`: the gradient of the eval-mode mean loss, an HVP (time and XLA temp
  memory, both relative to the gradient), Hutchinson probes via ``hessian_trace``, MC and exact
  Tr(F) via ``fisher_trace``, per-example gradient norms, and the exact Jacobian norm (relative to a
  forward pass).
* :func:`bench_scaling`: the data-parallel train step (``make_train_step`` with a batch sharding
  over a 1-D mesh) on 1, 2, 4 forced host devices, each in a subprocess with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=N``. On a CPU all "devices" share the same
  cores, so this measures the overhead of the sharded program, not a speed-up.
* :func:`bench_dst`: the cost of one dynamic-sparse-training mask update (``snnjax.train.dst``: RigL's
  dense gradient on the step's batch plus the drop/grow update; SET's update alone) as a ratio to
  one plain masked train step (the one every other step runs), 95%-sparse random mask.
* :func:`bench_peers`: runs ``benchmarks/torch_peers.py`` under a PyTorch interpreter and the
  matching snnjax measurements in the same run; ratios snnjax / PyTorch (< 1: snnjax faster).

:func:`run` assembles the sections with :func:`machine_info`; ``scripts/bench.py`` is its CLI.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.machine import cpu_model
from snnjax import estimators
from snnjax.estimators import hessian as hessian_lib
from snnjax import models
from snnjax import sparsity
from snnjax import xla_cpu
from snnjax.errors import UserError
from snnjax.sparsity import dynamic
from snnjax.train import dst as dst_lib
from snnjax.train import optim
from snnjax.train import parallel
from snnjax.train import state as state_lib
from snnjax.train import step as step_lib

PyTree = Any
SECTIONS = ("train", "estimators", "scaling", "peers", "dst")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_PEERS = os.path.join(ROOT, "benchmarks", "torch_peers.py")
DEFAULT_TORCH_PYTHON = "/root/peers/bin/python"


@dataclasses.dataclass(frozen=True)
class Setup:
  """What is benchmarked: a model on random data of a given shape.

  ``full()`` is ResNet-32 (16/32/64, option-A shortcut) at batch 128 on (32, 32, 3) inputs;
  ``smoke()`` is the small ``cnn`` model at a quarter of its width on (8, 8, 3) inputs at batch 8,
  one rep, for tests (a ResNet's XLA compile alone takes several seconds per function on CPU).
  """

  model: str = "resnet32"
  width: float = 1.0
  shortcut: str = "A"
  num_classes: int = 10
  image: int = 32
  batch: int = 128
  reps: int = 5
  warmup: int = 2
  sparsity: float = 0.95
  probes: int = 5
  materialize: bool | None = None
  exact_fisher_examples: int = 32
  device_counts: tuple[int, ...] = (1, 2, 4)

  @classmethod
  def full(cls, **kw) -> "Setup":
    return cls(**kw)

  @classmethod
  def smoke(cls, **kw) -> "Setup":
    base = dict(model="cnn", width=0.25, image=8, batch=8, reps=1, warmup=1, probes=2,
                exact_fisher_examples=4, device_counts=(1, 2))
    base.update(kw)
    return cls(**base)

  def model_kwargs(self, shortcut: str | None = None) -> dict:
    """Options for ``create_model``: width (CNN, ResNets), shortcut and materialize (ResNets).

    ``materialize=None`` is the library default (on for the CPU backend); False measures the
    ResNet without it.
    """
    if self.model == "mlp":
      return {}
    if self.model == "cnn":
      return {"width": self.width}
    return {"width": self.width, "shortcut": shortcut or self.shortcut,
            "materialize": self.materialize}


def preset_setup_kwargs(preset: str) -> dict:
  """``Setup`` fields for the model and batch size of a training preset (``configs/dense.py:P``)."""
  from snnjax.train import config_io  # pylint: disable=import-outside-toplevel
  config = config_io.load_config_spec(os.path.join(ROOT, "configs", "dense.py") + f":{preset}")
  kwargs = dict(config.model.kwargs)
  image = 32 // int(config.dataset.get("downsample", 1)) if config.dataset.name.startswith(
      "cifar") else 32
  return {"model": config.model.name, "width": float(kwargs.get("width", 1.0)),
          "shortcut": str(kwargs.get("shortcut", "A")), "batch": int(config.batch_size),
          "image": image}


# ------------------------------------------------------------------------------------------------
# Helpers.


def median_time(fn: Callable[[], Any], reps: int, warmup: int) -> dict:
  """Median/min seconds of ``fn()`` (its result blocked on) over ``reps`` after ``warmup`` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(max(1, reps)):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return {"median_s": statistics.median(times), "min_s": min(times), "reps": len(times)}


def compile_time(jitted, *args) -> tuple[Any, float]:
  """``(compiled, seconds)`` of ``jitted.lower(*args).compile()``."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0


def memory_stats(compiled) -> dict | None:
  """XLA's buffer-assignment sizes of a compiled function (bytes), or None where unsupported.

  ``temp_bytes`` is the scratch memory XLA assigns for intermediates (activations kept for the
  backward pass and the like), the part that differs between a gradient and an HVP; arguments and
  outputs are the same size for both. On CPU these are static buffer-assignment numbers, not a
  measured peak resident set.
  """
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  out = {"temp_bytes": int(m.temp_size_in_bytes), "argument_bytes": int(m.argument_size_in_bytes),
         "output_bytes": int(m.output_size_in_bytes)}
  peak = getattr(m, "peak_memory_in_bytes", None)
  if peak is not None:
    out["peak_bytes"] = int(peak)
  return out


def gflop(compiled) -> float | None:
  """XLA's count of floating-point operations of a compiled function, in 1e9, or None."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"]) / 1e9


def random_batch(setup: Setup, n: int | None = None, seed: int = 0) -> dict:
  """A CIFAR-shaped random batch: ``x`` (n, image, image, 3) float32, ``y`` (n,) int32."""
  n = setup.batch if n is None else n
  rng = np.random.default_rng(seed)
  return {"x": jnp.asarray(rng.standard_normal((n, setup.image, setup.image, 3), np.float32)),
          "y": jnp.asarray(rng.integers(0, setup.num_classes, n, dtype=np.int32))}


def build_model(setup: Setup, seed: int = 0, shortcut: str | None = None):
  """``(model, params, batch_stats)`` for ``setup`` (optionally another shortcut)."""
  kw = setup.model_kwargs(shortcut)
  model = models.create_model(setup.model, setup.num_classes, **kw)
  params, batch_stats = models.init_variables(model, jax.random.PRNGKey(seed),
                                              (setup.image, setup.image, 3))
  return model, params, batch_stats


def eval_fns(model, batch_stats) -> tuple[Callable, Callable]:
  """``(loss_fn(params, batch), logits_fn(params, x))`` of the model with BatchNorm in eval mode."""

  def logits_fn(params, x):
    return model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)

  def loss_fn(params, batch):
    return jnp.mean(step_lib.cross_entropy(logits_fn(params, batch["x"]), batch["y"]))

  return loss_fn, logits_fn


def machine_info() -> dict:
  """CPU model, cores, backend, device kind, package versions, date and load average.

  :func:`run` adds the torch version and thread count from the peers run (None without it).
  """
  cpu = cpu_model()
  versions = {}
  for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "snnjax"):
    try:
      versions[pkg] = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      versions[pkg] = None
  dev = jax.devices()[0]
  return {"cpu_model": cpu, "cores": os.cpu_count(), "backend": jax.default_backend(),
          "xla_cpu_tuned": xla_cpu.FLAG in os.environ.get("XLA_FLAGS", "").split(),
          "device_kind": dev.device_kind, "num_devices": jax.device_count(),
          "python": platform.python_version(), "versions": versions,
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
          "date": datetime.date.today().isoformat()}


# ------------------------------------------------------------------------------------------------
# Train step.


def _train_state(params, batch_stats, mask, tx):
  return state_lib.TrainState.create(params, batch_stats, mask, tx)


def bench_train(setup: Setup, seed: int = 0) -> dict:
  """Train-step time of the library's masked SGD step: no mask, all-True mask, sparse mask.

  Returns a dict with, per variant (``unmasked``, ``dense_mask``, ``masked``), ``step_ms``,
  ``min_ms``, ``images_per_s`` and ``compile_s``, plus ``masked_over_unmasked`` and
  ``masked_over_dense_mask`` (time ratios; the target is <= 1.05).
  """
  model, params, batch_stats = build_model(setup, seed)
  batch = random_batch(setup, seed=seed)
  tx = optim.masked_sgd(0.1, momentum=0.9, weight_decay=5e-4)
  step = jax.jit(functools.partial(step_lib.train_step, apply_fn=model.apply, tx=tx),
                 donate_argnums=(0,))
  masks = {"unmasked": None,
           "dense_mask": jax.tree.map(lambda p: jnp.ones(p.shape, bool), params),
           "masked": sparsity.random_mask(jax.random.PRNGKey(seed + 1), params, setup.sparsity)}
  out = {"model": setup.model, "batch": setup.batch, "image": setup.image,
         "sparsity": setup.sparsity, "optimizer": "masked_sgd(lr=0.1, momentum=0.9, wd=5e-4)"}
  for name, mask in masks.items():
    # The step donates its state: every variant gets its own copies of the initial arrays.
    params_v = jax.tree.map(jnp.copy, params if mask is None else sparsity.apply_mask(params, mask))
    state = _train_state(params_v, jax.tree.map(jnp.copy, batch_stats),
                         None if mask is None else jax.tree.map(jnp.copy, mask), tx)
    compiled, c_s = compile_time(step, state, batch)
    holder = {"state": state}

    def run_step():
      holder["state"], metrics = compiled(holder["state"], batch)
      return metrics["loss"]
    t = median_time(run_step, setup.reps, setup.warmup)
    out[name] = {"step_ms": 1e3 * t["median_s"], "min_ms": 1e3 * t["min_s"],
                 "images_per_s": setup.batch / t["median_s"], "compile_s": c_s}
    if mask is not None:
      final = holder["state"]
      leaves = zip(jax.tree.leaves(final.params), jax.tree.leaves(final.mask))
      out[name]["masked_weights_stay_zero"] = bool(
          all(bool(jnp.all(jnp.where(m, 0.0, p) == 0)) for p, m in leaves))
  out["masked_over_unmasked"] = out["masked"]["step_ms"] / out["unmasked"]["step_ms"]
  out["masked_over_dense_mask"] = out["masked"]["step_ms"] / out["dense_mask"]["step_ms"]
  return out


# ------------------------------------------------------------------------------------------------
# Dynamic sparse training.


def bench_dst(setup: Setup, seed: int = 0) -> dict:
  """Time of a mask update at an update step, relative to a plain masked train step.

  Returns ``step_ms`` (``make_train_step``, the batch gathered by index from a device-resident
  set, as in training) and per algorithm (``rigl``, ``set``) ``update_ms`` (RigL: the jitted dense
  gradient on the same batch + the jitted drop/grow update at drop fraction 0.3; SET: the update
  alone) and ``update_over_step``; ``rigl_step_over_plain`` is an update step's total cost (plain
  step + RigL update) over a plain step.
  """
  model, params, batch_stats = build_model(setup, seed)
  batch = random_batch(setup, seed=seed)
  data, idx = {"x": batch["x"], "y": batch["y"]}, jnp.arange(setup.batch, dtype=jnp.int32)
  key = jax.random.key(seed)
  tx = optim.masked_sgd(0.1, momentum=0.9, weight_decay=5e-4)
  mask = sparsity.random_mask(jax.random.PRNGKey(seed + 1), params, setup.sparsity)
  prunable = sparsity.prunable(params)

  def fresh_state():
    return _train_state(sparsity.apply_mask(jax.tree.map(jnp.copy, params), mask),
                        jax.tree.map(jnp.copy, batch_stats), jax.tree.map(jnp.copy, mask), tx)

  step = step_lib.make_train_step(model.apply, tx, augment=False)
  holder = {"state": fresh_state()}

  def run_step():
    holder["state"], metrics = step(holder["state"], data, idx, key)
    return metrics["loss"]
  t_step = median_time(run_step, setup.reps, setup.warmup)
  out = {"model": setup.model, "batch": setup.batch, "sparsity": setup.sparsity,
         "drop_fraction": 0.3, "step_ms": 1e3 * t_step["median_s"]}
  grad_fn = dst_lib.make_dense_grad_fn(model.apply, augment=False)
  for name, updater in dynamic.UPDATERS.items():
    update = dst_lib.make_update_fn(updater, prunable)
    holder["state"] = fresh_state()

    def run_update():
      state = holder["state"]
      grads = grad_fn(state, data, idx, key) if updater.needs_gradient else None
      holder["state"] = update(state, grads, key, jnp.float32(0.3))
      return holder["state"].params
    t = median_time(run_update, setup.reps, setup.warmup)
    out[name] = {"update_ms": 1e3 * t["median_s"], "min_ms": 1e3 * t["min_s"],
                 "update_over_step": t["median_s"] / t_step["median_s"]}
  out["rigl_step_over_plain"] = 1.0 + out["rigl"]["update_over_step"]
  return out


# ------------------------------------------------------------------------------------------------
# Estimators.


def _time_call(fn: Callable[[], Any], setup: Setup) -> dict:
  t = median_time(fn, max(1, setup.reps // 2 + 1), 1)
  return {"s": t["median_s"], "min_s": t["min_s"]}


def bench_estimators(setup: Setup, seed: int = 0) -> dict:
  """Costs of the estimators relative to one gradient (or forward pass), eval-mode BatchNorm.

  * ``gradient_s``: jitted ``grad(loss_fn)`` on the batch; ``forward_s``: jitted logits.
  * ``hvp``: jitted ``estimators.hvp`` (forward-over-reverse), time and XLA temp memory over the
    gradient's.
  * ``hutchinson``: ``hessian_trace`` with 1 and ``probes`` probes; ``per_probe_s`` is the marginal
    cost (T(k) - T(1)) / (k - 1), ``setup_s`` the rest of T(1) (operator setup).
  * ``gflop``: XLA's cost analysis (``compiled.cost_analysis()["flops"]``) of the gradient, the
    HVP and one Hutchinson quadratic form: the arithmetic floor the time ratios are compared with.
  * ``fisher_mc``: ``fisher_trace(labels="sampled")``, one sampled label per example (per-example
    gradient norms of the whole batch); ``per_example_grad_norms``: the same with the data's
    labels.
  * ``fisher_exact``: ``fisher_trace(labels="exact")`` on ``exact_fisher_examples`` examples; its
    ``per_example_over_gradient`` is the time per example over the gradient time per example.
  * ``jacobian_exact``: ``jacobian_norm`` (exact, C VJPs per example) over the forward pass.
  """
  model, params, batch_stats = build_model(setup, seed)
  batch = random_batch(setup, seed=seed)
  loss_fn, logits_fn = eval_fns(model, batch_stats)
  n = setup.batch
  key = jax.random.PRNGKey(seed + 7)
  out: dict = {"model": setup.model, "batch": n, "image": setup.image, "mode": "eval"}

  grad_fn = jax.jit(jax.grad(loss_fn))
  grad_c, grad_compile = compile_time(grad_fn, params, batch)
  g = _time_call(lambda: grad_c(params, batch), setup)
  out["gradient_s"], out["gradient_compile_s"] = g["s"], grad_compile
  fwd = jax.jit(logits_fn)
  out["forward_s"] = _time_call(lambda: fwd(params, batch["x"]), setup)["s"]

  v = jax.tree.map(lambda p: jax.random.normal(key, p.shape, p.dtype), params)
  hvp_fn = jax.jit(lambda p, b, vv: estimators.hvp(loss_fn, p, b, vv))
  hvp_c, hvp_compile = compile_time(hvp_fn, params, batch, v)
  h = _time_call(lambda: hvp_c(params, batch, v), setup)
  mem_g, mem_h = memory_stats(grad_c), memory_stats(hvp_c)
  quad_c = jax.jit(lambda p, b, vv: hessian_lib._quad_form(loss_fn, p, b, vv)).lower(
      params, batch, v).compile()
  out["gflop"] = {"gradient": gflop(grad_c), "hvp": gflop(hvp_c), "quad_form": gflop(quad_c),
                  "source": "jit(...).lower(...).compile().cost_analysis()['flops']"}
  out["hvp"] = {"s": h["s"], "over_gradient": h["s"] / g["s"], "compile_s": hvp_compile,
                "memory_gradient": mem_g, "memory_hvp": mem_h,
                "temp_memory_ratio": (mem_h["temp_bytes"] / max(1, mem_g["temp_bytes"])
                                      if mem_g and mem_h else None),
                "memory_source": "jit(...).lower(...).compile().memory_analysis() temp bytes"}

  def trace(k):
    return estimators.hessian_trace(loss_fn, params, batch, key=key, num_probes=k).value
  k = max(2, setup.probes)
  t1 = _time_call(lambda: trace(1), setup)["s"]
  tk = _time_call(lambda: trace(k), setup)["s"]
  per_probe = max(tk - t1, 0.0) / (k - 1)
  out["hutchinson"] = {"probes": k, "trace_s": tk, "one_probe_s": t1, "per_probe_s": per_probe,
                       "setup_s": max(t1 - per_probe, 0.0),
                       "per_probe_over_gradient": per_probe / g["s"],
                       "total_over_gradient_per_probe": tk / k / g["s"]}

  mc = _time_call(lambda: estimators.fisher_trace(logits_fn, params, batch, labels="sampled",
                                                  key=key).value, setup)
  out["fisher_mc"] = {"s": mc["s"], "over_gradient": mc["s"] / g["s"], "examples": n,
                      "num_samples": 1}
  pn = _time_call(lambda: estimators.per_example_grad_norms(logits_fn, params, batch), setup)
  out["per_example_grad_norms"] = {"s": pn["s"], "over_gradient": pn["s"] / g["s"],
                                   "examples": n}

  ne = min(setup.exact_fisher_examples, n)
  small = {"x": batch["x"][:ne], "y": batch["y"][:ne]}
  ex = _time_call(lambda: estimators.fisher_trace(logits_fn, params, small, labels="exact").value,
                  setup)
  out["fisher_exact"] = {"s": ex["s"], "examples": ne, "classes": setup.num_classes,
                         "per_example_over_gradient": (ex["s"] / ne) / (g["s"] / n)}

  jn = _time_call(lambda: estimators.jacobian_norm(logits_fn, params, batch).value, setup)
  out["jacobian_exact"] = {"s": jn["s"], "over_forward": jn["s"] / out["forward_s"],
                           "over_gradient": jn["s"] / g["s"], "examples": n}
  return out


# ------------------------------------------------------------------------------------------------
# Data-parallel scaling (forced host devices, one subprocess per device count).


def scaling_worker(setup: Setup, seed: int = 0) -> dict:
  """Data-parallel train-step throughput on all visible devices (run inside the subprocess)."""
  ndev = jax.device_count()
  model, params, batch_stats = build_model(setup, seed)
  batch = random_batch(setup, seed=seed)
  tx = optim.masked_sgd(0.1, momentum=0.9, weight_decay=5e-4)
  mask = sparsity.random_mask(jax.random.PRNGKey(seed + 1), params, setup.sparsity)
  mesh = parallel.make_mesh(ndev)
  state = parallel.replicate(_train_state(sparsity.apply_mask(params, mask), batch_stats, mask, tx),
                             mesh)
  data = parallel.replicate(batch, mesh)
  step = step_lib.make_train_step(model.apply, tx, augment=False,
                                  batch_sharding=parallel.batch_sharded(mesh))
  idx = jnp.arange(setup.batch, dtype=jnp.int32)
  rkey = jax.random.PRNGKey(0)
  compiled, c_s = compile_time(step, state, data, idx, rkey)
  holder = {"state": state}

  def run_step():
    holder["state"], metrics = compiled(holder["state"], data, idx, rkey)
    return metrics["loss"]
  t = median_time(run_step, setup.reps, setup.warmup)
  return {"devices": ndev, "step_ms": 1e3 * t["median_s"], "min_ms": 1e3 * t["min_s"],
          "images_per_s": setup.batch / t["median_s"], "compile_s": c_s}


def bench_scaling(setup: Setup, timeout: float = 900) -> dict:
  """Runs :func:`scaling_worker` with 1, 2, 4 (``setup.device_counts``) forced host devices."""
  rows = []
  for n in setup.device_counts:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "benchmarks.jax_bench", "--scaling-worker",
           json.dumps(dataclasses.asdict(setup))]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
      tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
      rows.append({"devices": n, "error": f"exit {proc.returncode}: {tail}"})
      continue
    rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
  base = next((r for r in rows if r.get("devices") == 1 and "step_ms" in r), None)
  for r in rows:
    if base and "step_ms" in r:
      r["throughput_vs_1"] = base["step_ms"] / r["step_ms"]
  return {"model": setup.model, "batch": setup.batch, "rows": rows,
          "note": ("forced host devices on one CPU share the same cores: this measures the "
                   "overhead of the sharded program (collectives, partitioning), not a speed-up")}


# ------------------------------------------------------------------------------------------------
# PyTorch peers.


RESNET_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet56": 56, "wide_resnet32": 32}


def _torch_widths(setup: Setup) -> str:
  """The stage channels of ``setup``'s ResNet (``round(c * width)`` for c in 16, 32, 64)."""
  return ",".join(str(int(round(c * setup.width))) for c in models.resnet.STAGE_CHANNELS)


def run_torch_peers(torch_python: str, setup: Setup, timeout: float = 1800) -> dict:
  """Runs ``benchmarks/torch_peers.py`` under ``torch_python`` on ``setup``'s ResNet; its JSON."""
  cmd = [torch_python, TORCH_PEERS, "--batch", str(setup.batch), "--reps", str(setup.reps),
         "--warmup", str(setup.warmup), "--probes", str(max(2, setup.probes)),
         "--depth", str(RESNET_DEPTHS[setup.model]), "--image", str(setup.image),
         "--widths", _torch_widths(setup)]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
  if proc.returncode != 0:
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    return {"error": f"exit {proc.returncode}: {tail}"}
  return json.loads(proc.stdout)


def _peer_side_one(setup: Setup, seed: int, shortcut: str) -> dict:
  """snnjax times matched to the peers' for one shortcut variant (seconds; ``*_min_s``: fastest)."""
  model, params, batch_stats = build_model(setup, seed, shortcut=shortcut)
  batch = random_batch(setup, seed=seed)

  def train_loss(p, b):
    logits, _ = step_lib.forward(model.apply, p, batch_stats, b["x"], train=True)
    return jnp.mean(step_lib.cross_entropy(logits, b["y"]))
  grad_train = jax.jit(jax.grad(train_loss))
  loss_fn, logits_fn = eval_fns(model, batch_stats)
  key = jax.random.PRNGKey(seed + 7)
  k = max(2, setup.probes)

  def trace(num):
    return estimators.hessian_trace(loss_fn, params, batch, key=key, num_probes=num).value
  g = median_time(lambda: grad_train(params, batch), setup.reps, setup.warmup)
  t1 = median_time(lambda: trace(1), max(1, setup.reps // 2), 1)
  tk = median_time(lambda: trace(k), max(1, setup.reps // 2), 1)
  pn = median_time(lambda: estimators.per_example_grad_norms(logits_fn, params, batch),
                   setup.reps, setup.warmup)
  return {"gradient_train_mode_s": g["median_s"], "gradient_train_mode_min_s": g["min_s"],
          "hutchinson_per_probe_s": max(tk["median_s"] - t1["median_s"], 0.0) / (k - 1),
          "hutchinson_per_probe_min_s": max(tk["min_s"] - t1["min_s"], 0.0) / (k - 1),
          "hutchinson_trace_s": tk["median_s"], "hutchinson_trace_min_s": tk["min_s"],
          "per_example_grad_norms_s": pn["median_s"], "per_example_grad_norms_min_s": pn["min_s"]}


def _snnjax_peer_side(setup: Setup, seed: int = 0, train: dict | None = None) -> dict:
  """The snnjax measurements matched to the peer ones (same model, batch, mode).

  The train step is option A (``setup.shortcut``); gradients (train-mode BatchNorm), Hutchinson
  probes and per-example gradient norms (eval mode) for both shortcuts. ``train`` reuses a
  :func:`bench_train` result of this run instead of measuring it again.
  """
  tr = train if train is not None else bench_train(setup, seed)
  res = {"train_step_s": tr["unmasked"]["step_ms"] / 1e3,
         "train_step_min_s": tr["unmasked"]["min_ms"] / 1e3,
         "train_step_masked_s": tr["masked"]["step_ms"] / 1e3,
         "train_step_masked_min_s": tr["masked"]["min_ms"] / 1e3}
  for shortcut in ("A", "B"):
    for name, value in _peer_side_one(setup, seed, shortcut).items():
      res[f"{name}_{shortcut}"] = value
  return res


def _peer_ratios(ours: dict, ta: dict, tb: dict, stat: str) -> dict:
  """snnjax / PyTorch time ratios from medians (``stat="median"``) or fastest reps (``"min"``)."""
  m = "" if stat == "median" else "_min"
  pairs = []
  if "train_step" in ta:
    pairs += [("train_step_dense_A", f"train_step{m}_s", ta["train_step"].get(f"dense{m}_s")),
              ("train_step_masked_A", f"train_step_masked{m}_s",
               ta["train_step"].get(f"masked{m}_s"))]
  for s, t in (("A", ta), ("B", tb)):
    pairs.append((f"gradient_train_mode_{s}", f"gradient_train_mode{m}_s_{s}",
                  t.get(f"gradient{m}_s")))
    if "pyhessian" in t:
      probe = t["pyhessian"]["per_probe_s" if not m else "per_probe_min_s"]
      pairs.append((f"hutchinson_per_probe_{s}", f"hutchinson_per_probe{m}_s_{s}", probe))
      if not m:
        pairs.append((f"hutchinson_trace_incl_setup_{s}", f"hutchinson_trace_s_{s}",
                      t["pyhessian"]["trace_s"] + t["pyhessian"]["setup_s"]))
  bp = tb.get("backpack", {})
  pairs.append(("per_sample_grad_norms_B_vs_backpack", f"per_example_grad_norms{m}_s_B",
                bp.get(f"per_sample_grad_norms{m}_s")))
  return {name: ours[key] / theirs for name, key, theirs in pairs
          if theirs and key in ours}


def bench_peers(setup: Setup, torch_python: str | None = None, seed: int = 0,
                train: dict | None = None) -> dict:
  """PyTorch peer timings and snnjax / PyTorch time ratios measured in the same run.

  ``ratios`` compare medians, ``ratios_min`` the fastest repetitions (steadier when other work
  shares the machine). ``torch_python`` defaults to ``/root/peers/bin/python``; the section is
  skipped (with the reason) when that interpreter does not exist or the model is not a ResNet.
  """
  torch_python = torch_python or DEFAULT_TORCH_PYTHON
  if setup.model not in RESNET_DEPTHS:
    return {"skipped": f"the PyTorch peers build ResNets only, not {setup.model!r}"}
  if not os.path.exists(torch_python):
    return {"skipped": f"no PyTorch interpreter at {torch_python}"}
  theirs = run_torch_peers(torch_python, setup)
  ours = _snnjax_peer_side(setup, seed, train)
  out = {"torch": theirs, "snnjax": ours,
         "ratios_note": "snnjax time / PyTorch time (< 1: snnjax faster)"}
  if "error" in theirs:
    return out
  name = f"resnet{RESNET_DEPTHS[setup.model]}"
  ta, tb = theirs.get(f"{name}_A", {}), theirs.get(f"{name}_B", {})
  out["ratios"] = _peer_ratios(ours, ta, tb, "median")
  out["ratios_min"] = _peer_ratios(ours, ta, tb, "min")
  return out


# ------------------------------------------------------------------------------------------------
# Driver.


def run(sections: Sequence[str] = SECTIONS, *, smoke: bool = False,
        torch_python: str | None = None, setup: Setup | None = None) -> dict:
  """Runs the requested sections; returns ``{"machine": ..., "setup": ..., <section>: ...}``.

  With ``smoke`` the sizes are tiny and the peers section is skipped.
  """
  unknown = [s for s in sections if s not in SECTIONS]
  if unknown:
    raise UserError(f"unknown bench sections {unknown}; choose from {SECTIONS}")
  setup = setup or (Setup.smoke() if smoke else Setup.full())
  res: dict = {"machine": machine_info(), "setup": dataclasses.asdict(setup), "smoke": smoke,
               "timing": "median over reps after warm-up, block_until_ready; compile separate"}
  t0 = time.perf_counter()
  if "train" in sections:
    res["train"] = bench_train(setup)
  if "estimators" in sections:
    res["estimators"] = bench_estimators(setup)
  if "scaling" in sections:
    res["scaling"] = bench_scaling(setup)
  if "dst" in sections:
    res["dst"] = bench_dst(setup)
  if "peers" in sections:
    res["peers"] = ({"skipped": "smoke run"} if smoke
                    else bench_peers(setup, torch_python, train=res.get("train")))
  torch_machine = res.get("peers", {}).get("torch", {}).get("machine", {})
  res["machine"]["versions"]["torch"] = torch_machine.get("torch")
  res["machine"]["torch_threads"] = torch_machine.get("torch_threads")
  res["machine"]["loadavg_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
  res["wall_s"] = time.perf_counter() - t0
  return res


def _main(argv: Sequence[str]) -> int:
  if len(argv) == 2 and argv[0] == "--scaling-worker":
    spec = json.loads(argv[1])
    spec["device_counts"] = tuple(spec["device_counts"])
    print(json.dumps(scaling_worker(Setup(**spec))))
    return 0
  sys.stderr.write("usage: python -m benchmarks.jax_bench --scaling-worker SETUP_JSON "
                   "(use scripts/bench.py)\n")
  return 2


if __name__ == "__main__":
  sys.exit(_main(sys.argv[1:]))
