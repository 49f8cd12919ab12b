"""CPU speed investigation: ResNet-32 train-step time under model, layout, dtype and XLA flags.

A self-contained functional CIFAR ResNet-32 (16/32/64, option-A shortcut, post-activation basic
blocks, train-mode BatchNorm) in which each suspect is a switch, so every variant runs the same
network (:func:`check_equivalence`):

* ``impl``, the convolution: ``"nhwc"`` (``lax.conv_general_dilated`` with NHWC/HWIO, what
  ``flax.linen.Conv`` emits), ``"nchw"`` (NCHW/OIHW, PyTorch's layout, activations NCHW
  throughout), ``"im2col"`` (k*k shifted slices concatenated along channels, one matmul),
  ``"shift"`` (a sum of k*k matmuls of shifted inputs);
* ``bn``: ``"train"`` (batch statistics) or ``"none"`` (no normalization: a bound on what fusing
  BatchNorm away could save);
* ``dtype``: the compute dtype (params and activations cast; loss float32);
* ``mat`` / ``method``: where :func:`materialize` is applied (the fix this investigation found:
  see ``BENCHMARKS.md``).

The timed unit is one jitted SGD-momentum step (value_and_grad of the mean cross-entropy + update,
state donated) on a random CIFAR-shaped batch. :func:`time_interleaved` compiles all variants in
one process and times them round-robin; XLA flags take effect only when JAX starts its backend, so
:func:`run_matrix` runs one subprocess per flag set (``FLAG_SETS``), interleaved over rounds.

Usage: ``python -m benchmarks.cpu_speed [--flags default,no_ynn_conv] [--variants JSON]
[--out cpu_speed.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from snnjax import xla_cpu
from snnjax.models import resnet

PyTree = Any

# The one XLA flag that helped (jaxlib 0.10.2, x86 CPU): convolutions back to multi-threaded Eigen.
# An unknown flag in XLA_FLAGS aborts the process, so check the jaxlib version before setting it.

# XLA flag sets tried (names -> XLA_FLAGS value). Every one is a flag this jaxlib accepts
# (found with `strings libjax_common.so | grep ^xla_cpu_`).
FLAG_SETS: dict[str, str] = {
    "default": "",
    "no_multi_thread_eigen": "--xla_cpu_multi_thread_eigen=false",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn_custom_call": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "xnn_graph_greedy": ("--xla_cpu_use_xnnpack=true "
                         "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY"),
    "xnn_dot_eltwise": "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
    "ynn_conv": "--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
    "ynn_conv_dot": "--xla_cpu_experimental_ynn_fusion_type=individual_convolution,individual_dot",
    "no_thunk_runtime": "--xla_cpu_use_thunk_runtime=false",
    "fast_runtime_preset": "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME",
    "tiling_propagation": "--xla_cpu_experimental_enable_tiling_propagation=true",
    "keep_barriers": "--xla_disable_hlo_passes=cse_barrier_expander",
    # YNNPACK runs most convolutions by default in jaxlib 0.10.2, on one thread only here; these
    # hand them back to XLA's multi-threaded Eigen convolution.
    "no_ynn_conv": xla_cpu.FLAG,  # the setting snnjax.xla_cpu.tune() applies
    "no_ynn": "--xla_cpu_experimental_ynn_fusion_type=",
}


# ----------------------------------------------------------------------------- model

def _kaiming(key, shape_hwio):
  fan_out = shape_hwio[0] * shape_hwio[1] * shape_hwio[3]
  return jax.random.normal(key, shape_hwio, jnp.float32) * np.sqrt(2.0 / fan_out)


def init_resnet(key: jax.Array, depth: int = 32, widths: Sequence[int] = (16, 32, 64),
                num_classes: int = 10, in_channels: int = 3) -> tuple[PyTree, PyTree]:
  """Params and batch_stats of a CIFAR ResNet-(6n+2); conv kernels are HWIO (layout-independent)."""
  n = (depth - 2) // 6
  keys = iter(jax.random.split(key, 6 * n + 4))

  def bn(c):
    return {"scale": jnp.ones((c,)), "bias": jnp.zeros((c,))}, {"mean": jnp.zeros((c,)),
                                                                  "var": jnp.ones((c,))}
  params, stats = {}, {}
  params["stem"] = {"kernel": _kaiming(next(keys), (3, 3, in_channels, widths[0]))}
  params["stem_bn"], stats["stem_bn"] = bn(widths[0])
  cin = widths[0]
  for s, w in enumerate(widths):
    for b in range(n):
      name = f"stage{s}_block{b}"
      p, st = {}, {}
      p["conv1"] = {"kernel": _kaiming(next(keys), (3, 3, cin, w))}
      p["bn1"], st["bn1"] = bn(w)
      p["conv2"] = {"kernel": _kaiming(next(keys), (3, 3, w, w))}
      p["bn2"], st["bn2"] = bn(w)
      params[name], stats[name] = p, st
      cin = w
  params["head"] = {"kernel": jax.random.normal(next(keys), (cin, num_classes)) * 0.01,
                    "bias": jnp.zeros((num_classes,))}
  return params, stats


def _conv_lax(x, kernel, stride, layout):
  if layout == "nchw":
    k = jnp.transpose(kernel, (3, 2, 0, 1))
    dn = ("NCHW", "OIHW", "NCHW")
  else:
    k = kernel
    dn = ("NHWC", "HWIO", "NHWC")
  return jax.lax.conv_general_dilated(x, k.astype(x.dtype), (stride, stride), "SAME",
                                      dimension_numbers=dn)


def _pad_same(x, kh, kw, stride):
  """Pads (n, h, w, c) as lax's "SAME": total max((out-1)*s + k - in, 0), low half rounded down."""
  pads = [(0, 0)]
  for size, k in ((x.shape[1], kh), (x.shape[2], kw)):
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    pads.append((total // 2, total - total // 2))
  return jnp.pad(x, pads + [(0, 0)])


def _conv_im2col(x, kernel, stride):
  kh, kw, cin, cout = kernel.shape
  n, h, w, _ = x.shape
  ho, wo = -(-h // stride), -(-w // stride)
  xp = _pad_same(x, kh, kw, stride)
  cols = [xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
          for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(cols, axis=-1)  # (n, ho, wo, kh*kw*cin), (i, j, c) order = HWIO rows
  k = kernel.reshape(kh * kw * cin, cout).astype(x.dtype)
  out = patches.reshape(n * ho * wo, kh * kw * cin) @ k
  return out.reshape(n, ho, wo, cout)


def _conv_shift(x, kernel, stride):
  kh, kw, cin, cout = kernel.shape
  n, h, w, _ = x.shape
  ho, wo = -(-h // stride), -(-w // stride)
  xp = _pad_same(x, kh, kw, stride)
  k = kernel.astype(x.dtype)
  out = None
  for i in range(kh):
    for j in range(kw):
      sl = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
      term = sl.reshape(n * ho * wo, cin) @ k[i, j]
      out = term if out is None else out + term
  return out.reshape(n, ho, wo, cout)


def conv(x, kernel, stride, impl):
  """3x3 'SAME' convolution of x ((n, h, w, c) or (n, c, h, w) for "nchw") with an HWIO kernel."""
  if impl in ("nhwc", "nchw"):
    return _conv_lax(x, kernel, stride, impl)
  if impl == "im2col":
    return _conv_im2col(x, kernel, stride)
  if impl == "shift":
    return _conv_shift(x, kernel, stride)
  raise ValueError(f"unknown conv impl {impl!r}")


def _batch_norm(x, p, st, channel_axis, bn, momentum=0.9, eps=1e-5):
  if bn == "none":
    return x, st
  axes = tuple(a for a in range(x.ndim) if a != channel_axis % x.ndim)
  xf = x.astype(jnp.float32)
  mean = jnp.mean(xf, axes)
  var = jnp.mean(jnp.square(xf), axes) - jnp.square(mean)
  shape = [1] * x.ndim
  shape[channel_axis] = -1
  inv = jax.lax.rsqrt(var + eps) * p["scale"]
  y = (xf - mean.reshape(shape)) * inv.reshape(shape) + p["bias"].reshape(shape)
  new_st = {"mean": momentum * st["mean"] + (1 - momentum) * mean,
            "var": momentum * st["var"] + (1 - momentum) * var}
  return y.astype(x.dtype), new_st


MATERIALIZE = ("none", "out", "both")
METHODS = ("div", "exp", "barrier")


def materialize(x: jax.Array, method: str = "div") -> jax.Array:
  """An identity that keeps XLA:CPU from recomputing ``x`` inside the fusions that consume it.

  * ``"div"``: ``x / one``, ``one`` a runtime 1.0 that XLA cannot fold
    (``1 + nan_to_num(0 * x[0])``). XLA's fusion pass never duplicates an "expensive" producer
    and a float divide is one, so ``x`` is computed once into a buffer. Bit-exact (x / 1 == x),
    gradient exact (g / 1); costs one vector divide per element.
  * ``"exp"``: ``x * exp(0 * x)``: the same effect through an exp (costlier; inf/nan-unsafe).
  * ``"barrier"``: ``lax.optimization_barrier``. XLA:CPU expands (removes) barriers before fusion
    (pass ``cse_barrier_expander``), so this only works together with
    ``XLA_FLAGS=--xla_disable_hlo_passes=cse_barrier_expander``.
  """
  if method == "div":
    return resnet.materialize(x)
  if method == "exp":
    return x * jnp.exp(0 * x)
  if method == "barrier":
    return jax.lax.optimization_barrier(x)
  raise ValueError(f"unknown materialize method {method!r}")


def apply_resnet(params: PyTree, stats: PyTree, x: jax.Array, *, impl: str = "nhwc",
                 bn: str = "train", dtype=jnp.float32, mat: str = "none", method: str = "div"
                 ) -> tuple[jax.Array, PyTree]:
  """Train-mode forward: x (n, h, w, c) NHWC float32 -> (logits (n, classes) float32, new stats).

  ``mat`` says where :func:`materialize` (with ``method``) is applied: ``"none"``; ``"out"``: the
  stem's and every block's output (the residual stream, which XLA:CPU otherwise recomputes,
  through every earlier block of the stage, inside the transposes that feed the
  kernel-gradient convolutions); ``"both"``: also the inner relu(bn1(conv1(x))) of each block.
  """
  layout_nchw = impl == "nchw"
  cax = 1 if layout_nchw else -1
  mat_out = (lambda t: materialize(t, method)) if mat in ("out", "both") else (lambda t: t)
  mat_in = (lambda t: materialize(t, method)) if mat == "both" else (lambda t: t)
  h = x.astype(dtype)
  if layout_nchw:
    h = jnp.transpose(h, (0, 3, 1, 2))
  new_stats = {}
  h = conv(h, params["stem"]["kernel"], 1, impl)
  h, new_stats["stem_bn"] = _batch_norm(h, params["stem_bn"], stats["stem_bn"], cax, bn)
  h = mat_out(jax.nn.relu(h))
  blocks = sorted(k for k in params if k.startswith("stage"))
  for name in blocks:
    p, st = params[name], stats[name]
    cin = h.shape[cax]
    cout = p["conv1"]["kernel"].shape[-1]
    stride = 2 if cin != cout else 1
    out = conv(h, p["conv1"]["kernel"], stride, impl)
    out, s1 = _batch_norm(out, p["bn1"], st["bn1"], cax, bn)
    out = mat_in(jax.nn.relu(out))
    out = conv(out, p["conv2"]["kernel"], 1, impl)
    out, s2 = _batch_norm(out, p["bn2"], st["bn2"], cax, bn)
    new_stats[name] = {"bn1": s1, "bn2": s2}
    if stride != 1:
      pad = (cout - cin) // 2
      if layout_nchw:
        short = jnp.pad(h[:, :, ::2, ::2], ((0, 0), (pad, pad), (0, 0), (0, 0)))
      else:
        short = jnp.pad(h[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (pad, pad)))
    else:
      short = h
    h = mat_out(jax.nn.relu(out + short))
  feats = jnp.mean(h.astype(jnp.float32), axis=(2, 3) if layout_nchw else (1, 2))
  logits = feats @ params["head"]["kernel"] + params["head"]["bias"]
  return logits, new_stats


# ----------------------------------------------------------------------------- timing

def make_step(impl: str = "nhwc", bn: str = "train", dtype=jnp.float32, mat: str = "none",
              method: str = "div", lr: float = 0.1, momentum: float = 0.9,
              weight_decay: float = 5e-4) -> Callable:
  """Jitted ``step(params, stats, buf, x, y) -> (params, stats, buf, loss)`` (SGD momentum)."""

  def loss_fn(params, stats, x, y):
    logits, new_stats = apply_resnet(params, stats, x, impl=impl, bn=bn, dtype=dtype, mat=mat,
                                     method=method)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1)), new_stats

  def step(params, stats, buf, x, y):
    (loss, new_stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x, y)
    g = jax.tree.map(lambda gi, p: gi + weight_decay * p, g, params)
    buf = jax.tree.map(lambda b, gi: momentum * b + gi, buf, g)
    params = jax.tree.map(lambda p, b: p - lr * b, params, buf)
    return params, new_stats, buf, loss

  return jax.jit(step, donate_argnums=(0, 1, 2))


VARIANT_DEFAULTS = {"impl": "nhwc", "bn": "train", "dtype": "float32", "mat": "none",
                    "method": "div"}


def variant_name(v: dict) -> str:
  """``impl/bn/dtype/mat[-method]`` of a variant dict (missing keys take the defaults)."""
  v = {**VARIANT_DEFAULTS, **v}
  mat = v["mat"] if v["mat"] == "none" else f"{v['mat']}-{v['method']}"
  return f"{v['impl']}/{v['bn']}/{v['dtype']}/{mat}"


def time_interleaved(variants: Sequence[dict], *, batch: int = 128, image: int = 32,
                     depth: int = 32, widths: Sequence[int] = (16, 32, 64), reps: int = 2,
                     rounds: int = 4, seed: int = 0) -> list[dict]:
  """Compiles every variant, then times them round-robin (``reps`` steps each per round).

  Interleaving puts every variant under the same background load, so the ratios between them
  are steadier than those of variants timed one after the other. Returns per variant the median
  and the min (seconds) over all ``rounds * reps`` timed steps, and the compile time.
  """
  key = jax.random.PRNGKey(seed)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((batch, image, image, 3), dtype=np.float32))
  y = jnp.asarray(rng.integers(0, 10, batch, dtype=np.int32))
  runs = []
  for v in variants:
    v = {**VARIANT_DEFAULTS, **v}
    params, stats = init_resnet(key, depth, widths)
    buf = jax.tree.map(jnp.zeros_like, params)
    step = make_step(v["impl"], v["bn"], jnp.dtype(v["dtype"]), v["mat"], v["method"])
    t0 = time.perf_counter()
    compiled = step.lower(params, stats, buf, x, y).compile()
    c_s = time.perf_counter() - t0
    *state, loss = compiled(params, stats, buf, x, y)
    runs.append({"v": v, "fn": compiled, "state": state, "times": [], "compile_s": c_s,
                 "first_loss": float(loss)})
  for _ in range(rounds):
    for r in runs:
      for _ in range(reps):
        t0 = time.perf_counter()
        *r["state"], loss = r["fn"](*r["state"], x, y)
        jax.block_until_ready(loss)
        r["times"].append(time.perf_counter() - t0)
  return [{"variant": variant_name(r["v"]), **r["v"], "compile_s": r["compile_s"],
           "step_s": statistics.median(r["times"]), "step_min_s": min(r["times"]),
           "images_per_s": batch / statistics.median(r["times"]), "first_loss": r["first_loss"],
           "times": r["times"]} for r in runs]


def check_equivalence(batch: int = 4, image: int = 8) -> dict:
  """Max abs difference of logits and gradients of each variant against the plain "nhwc" one.

  Checks that every convolution implementation computes the same network and that
  materialization is an exact identity (its differences are 0.0).
  """
  key = jax.random.PRNGKey(1)
  params, stats = init_resnet(key)
  x = jax.random.normal(key, (batch, image, image, 3))

  def f(**kw):
    def loss(p):
      logits, _ = apply_resnet(p, stats, x, **kw)
      return jnp.sum(jnp.sin(logits)), logits
    (_, logits), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return logits, g
  ref_l, ref_g = f()
  out = {}
  for kw in ({"impl": "nchw"}, {"impl": "im2col"}, {"impl": "shift"},
             {"mat": "both", "method": "div"}, {"mat": "both", "method": "exp"}):
    l, g = f(**kw)
    out[variant_name(kw)] = {
        "logits": float(jnp.max(jnp.abs(l - ref_l))),
        "grad": float(max(jnp.max(jnp.abs(a - b)) for a, b in
                          zip(jax.tree.leaves(g), jax.tree.leaves(ref_g))))}
  return out


def run_in_subprocess(flags: str, variants: Sequence[dict], timeout: float = 1800,
                      **kw) -> list[dict]:
  """Runs :func:`time_interleaved` in a fresh interpreter with ``XLA_FLAGS=flags``."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
  env["JAX_PLATFORMS"] = "cpu"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  cmd = [sys.executable, "-m", "benchmarks.cpu_speed", "--worker",
         json.dumps({"variants": list(variants), **kw})]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=root)
  if proc.returncode != 0:
    err = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    return [{"variant": variant_name(v), "error": f"exit {proc.returncode}: {err}"}
            for v in variants]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def run_matrix(flag_sets: dict[str, str], variants: Sequence[dict], rounds: int = 2,
               inner: dict | None = None) -> dict:
  """Times every (flag set, variant) pair; flag sets in interleaved subprocesses.

  Each of ``rounds`` rounds starts one subprocess per flag set, which times all variants
  interleaved (:func:`time_interleaved` with keyword args ``inner``). Per pair: the median and the
  min over all steps of all rounds, and their ratios to the pair ("default" flags, first variant)
  (< 1: faster). On a machine shared with other work the min ratio is the steadier estimate
  of what the code itself costs.
  """
  raw: dict[str, list] = {}
  for _ in range(rounds):
    for name, flags in flag_sets.items():
      for r in run_in_subprocess(flags, variants, **(inner or {})):
        raw.setdefault(f"{name}|{r['variant']}", []).append(r)
  table = {}
  for key, rs in raw.items():
    ok = [r for r in rs if "error" not in r]
    if not ok:
      table[key] = {"error": rs[0]["error"]}
      continue
    times = [t for r in ok for t in r["times"]]
    table[key] = {"step_s": statistics.median(times), "step_min_s": min(times),
                  "compile_s": statistics.median(r["compile_s"] for r in ok),
                  "first_loss": ok[0]["first_loss"], "steps": len(times)}
  base_key = f"{next(iter(flag_sets))}|{variant_name(variants[0])}"
  base = table.get(base_key, {})
  if "step_s" in base:
    for row in table.values():
      if "step_s" in row:
        row["ratio"] = row["step_s"] / base["step_s"]
        row["min_ratio"] = row["step_min_s"] / base["step_min_s"]
  return {"baseline": base_key, "rounds": rounds, "table": table}


DEFAULT_VARIANTS = (
    {},                                           # the library's current model
    {"mat": "out"}, {"mat": "both"},              # materialized residual stream
    {"mat": "both", "method": "exp"},
    {"dtype": "bfloat16"}, {"dtype": "bfloat16", "mat": "both"},
    {"impl": "nchw"}, {"impl": "im2col"}, {"impl": "shift"},
    {"bn": "none"}, {"bn": "none", "mat": "both"},
)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description="ResNet-32 CPU train-step variants")
  ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--out", default=None)
  ap.add_argument("--rounds", type=int, default=2, help="subprocess rounds per flag set")
  ap.add_argument("--inner-rounds", type=int, default=3, help="interleaved rounds per process")
  ap.add_argument("--reps", type=int, default=2, help="steps per variant per inner round")
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--flags", default="default", help="comma-separated FLAG_SETS names")
  ap.add_argument("--variants", default=None,
                  help="JSON list of variant dicts (keys impl, bn, dtype, mat, method)")
  args = ap.parse_args(argv)
  if args.worker is not None:
    spec = json.loads(args.worker)
    variants = spec.pop("variants")
    print(json.dumps(time_interleaved(variants, **spec)))
    return 0
  names = [k for k in args.flags.split(",") if k]
  unknown = [k for k in names if k not in FLAG_SETS]
  if unknown or not names:
    ap.error(f"--flags: unknown flag sets {unknown}; choose from {','.join(FLAG_SETS)}")
  variants = json.loads(args.variants) if args.variants else list(DEFAULT_VARIANTS)
  bad = [v for v in variants if set(v) - set(VARIANT_DEFAULTS)]
  if bad:
    ap.error(f"--variants: unknown keys in {bad}; allowed {sorted(VARIANT_DEFAULTS)}")
  flag_sets = {k: FLAG_SETS[k] for k in names}
  res = {"equivalence": check_equivalence(),
         "matrix": run_matrix(flag_sets, variants, rounds=args.rounds,
                              inner={"reps": args.reps, "rounds": args.inner_rounds,
                                     "batch": args.batch}),
         "flag_sets": flag_sets}
  text = json.dumps(res, indent=2)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  for key, row in res["matrix"]["table"].items():
    if "error" in row:
      print(f"{key:60s} {row['error']}")
    else:
      print(f"{key:60s} median {1e3 * row['step_s']:7.1f} ms  min {1e3 * row['step_min_s']:7.1f} ms"
            f"  ratio {row.get('ratio', float('nan')):.3f}  min ratio "
            f"{row.get('min_ratio', float('nan')):.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
