"""Per-example precision against a float64 reference: snnjax, BackPACK and curvlinops, same weights.

A CIFAR ResNet-20 with option-B shortcuts (BackPACK's converter refuses the option-A ``F.pad``),
eval-mode BatchNorm with random statistics (scale 1 + 0.2 N, variance U(0.5, 2), mean and bias
0.3 N), He-normal kernels, on ``n`` real CIFAR-10 training images (normalized with the standard
per-channel statistics). Two label cases:

* ``random``: the network as drawn, dataset labels (predictions far from confident);
* ``confident``: the head (kernel and bias) scaled so that the median top-1 margin of the logits
  is 11 and the labels set to the predicted classes: 1 - p_y ~ 1e-6..1e-4, as on a trained network's
  well-fit training examples. This is where float32 ``1 - p_y`` cancels (likelihoods module doc).

Two halves, run in turn (the second in the PyTorch peer venv, never a dependency of snnjax)::

  PYTHONPATH=. python benchmarks/precision_peers.py jax --npz /tmp/prec.npz --json jax.json
  /root/peers/bin/python benchmarks/precision_peers.py torch --npz /tmp/prec.npz --json torch.json

``jax`` draws the weights, computes the float64 references with a per-example ``jax.grad`` loop in
float64 (same float32 weights and inputs), and measures snnjax's per-leaf per-example squared
norms, data-label Fisher diagonal and exact-GGN diagonal (``fisher_diagonal(labels="exact")``),
with the current categorical likelihood and with the former score ``e_y - softmax(f)``
(``legacy``); it writes the weights (PyTorch layout), data and references to ``--npz``. ``torch``
loads them into ``torch_peers.CifarResNet`` and measures BackPACK's ``BatchL2Grad``, ``BatchGrad``
(squared and averaged: the data-label Fisher diagonal) and ``DiagGGNExact`` in float32 against
the same references (``--parts resnet,mlp``: either or both). A small MLP (8-32-32-4, tanh) adds
curvlinops (``GGNLinearOperator`` and ``EFLinearOperator``, materialized) for the Gaussian (MSE) and
Bernoulli (BCE) likelihoods: the exact GGN diagonal and the data-label Fisher diagonal, snnjax
(``fisher_diagonal`` with ``labels="exact"`` / ``"data"``) and curvlinops in float32 against float64
(jax's dense ``jax.jacobian`` reference, and curvlinops in float64 as a cross-check); Bernoulli also
with confident outputs (logits x 8, labels = their signs). Errors: per leaf, max over examples
of |a - r| / |r| for squared norms, and ||a - r|| / ||r|| for diagonals; the JSON keeps the worst
leaf and the stem's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import numpy as np

CIFAR_MEAN = np.array([125.307, 122.950, 113.865], np.float32)
CIFAR_STD = np.array([62.993, 62.089, 66.705], np.float32)
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                            "data", "cifar10.npz")
CASES = ("random", "confident")


def torch_name(path: str) -> str:
  """flax path ``stage2_block0/shortcut_bn/scale`` -> torch ``layers.3.proj.1.weight``."""
  parts = path.split("/")
  leaf = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
          "var": "running_var"}[parts[-1]]
  mod = parts[:-1]
  if mod == ["stem"]:
    return f"conv1.{leaf}"
  if mod == ["stem_bn"]:
    return f"bn1.{leaf}"
  if mod == ["head"]:
    return f"linear.{leaf}"
  stage, block = mod[0].split("_")
  index = (int(stage[len("stage"):]) - 1) * 3 + int(block[len("block"):])
  sub = {"shortcut_conv": "proj.0", "shortcut_bn": "proj.1"}.get(mod[1], mod[1])
  return f"layers.{index}.{sub}.{leaf}"


def to_torch_layout(path: str, a: np.ndarray) -> np.ndarray:
  if path.endswith("kernel") and a.ndim == 4:
    return np.transpose(a, (3, 2, 0, 1))  # HWIO -> OIHW
  if path.endswith("kernel") and a.ndim == 2:
    return a.T
  return a


def leaf_errors(got: np.ndarray, ref: np.ndarray, per_example: bool) -> float:
  got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
  if per_example:
    return float(np.max(np.abs(got - ref) / np.abs(ref)))
  return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def summary(errs: dict) -> dict:
  worst = max(errs, key=errs.get)
  return {"worst_leaf": worst, "worst": errs[worst], "stem/kernel": errs.get("stem/kernel"),
          "stem_bn/scale": errs.get("stem_bn/scale")}


# ----------------------------------------------------------------------------------------------
# The jax half.


def run_jax(args) -> dict:
  from snnjax import xla_cpu  # pylint: disable=import-outside-toplevel
  xla_cpu.tune()
  import importlib.metadata  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from snnjax import estimators as est  # pylint: disable=import-outside-toplevel
  from snnjax.estimators import likelihoods  # pylint: disable=import-outside-toplevel
  from snnjax.models import resnet  # pylint: disable=import-outside-toplevel

  class Legacy(likelihoods.Categorical):
    """The former score e_y - softmax(f) (one float32 subtraction)."""

    def score(self, f, y):
      p = jax.nn.softmax(f.astype(jnp.float32), axis=-1)
      return jax.nn.one_hot(y, f.shape[-1], dtype=jnp.float32) - p

    def fisher_factor(self, f):
      p = jax.nn.softmax(f.astype(jnp.float32), axis=-1)
      return jnp.eye(f.shape[-1], dtype=jnp.float32) - p[None], p

  data = np.load(args.data)
  n = args.n
  x = (data["x_train"][:n].astype(np.float32) - CIFAR_MEAN) / CIFAR_STD
  model = resnet.ResNet(10, 3, 1.0, "B")
  shapes = jax.eval_shape(lambda k, xx: model.init(k, xx, train=False), jax.random.key(0), x[:1])
  rng = np.random.default_rng(args.seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return rng.standard_normal(leaf.shape) * np.sqrt(2 / np.prod(leaf.shape[:-1]))
    if name == "scale":
      return 1 + 0.2 * rng.standard_normal(leaf.shape)
    if name == "var":
      return rng.uniform(0.5, 2.0, leaf.shape)
    return 0.3 * rng.standard_normal(leaf.shape)

  variables = jax.tree.map(lambda a: np.asarray(a, np.float32),
                           jax.tree_util.tree_map_with_path(draw, shapes))
  stats32 = variables["batch_stats"]

  def logits_fn(stats):
    return lambda p, xx: model.apply({"params": p, "batch_stats": stats}, xx, train=False)

  out = {"n": n, "cases": {}}
  arrays = {"x": np.transpose(x, (0, 3, 1, 2))}
  for case in (CASES if "resnet" in args.parts else ()):
    params = jax.tree.map(np.copy, variables["params"])
    with jax.enable_x64(True):
      f64 = logits_fn(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), stats32))
      z = np.asarray(f64(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params),
                         jnp.asarray(x, jnp.float64)))
    y = data["y_train"][:n].astype(np.int32)
    if case == "confident":
      top2 = np.sort(z, axis=1)[:, -2:]
      scale = np.float32(11.0 / np.median(top2[:, 1] - top2[:, 0]))
      params["head"]["kernel"] = params["head"]["kernel"] * scale
      params["head"]["bias"] = params["head"]["bias"] * scale
      y = np.argmax(z, axis=1).astype(np.int32)
    paths = est.leaf_paths(params)
    with jax.enable_x64(True):
      p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
      logp = jax.nn.log_softmax(f64(p64, jnp.asarray(x, jnp.float64)))
      one_minus_py = -np.expm1(np.asarray(logp)[np.arange(n), y])

      def example_logits(p, xi):
        return f64(p, xi[None])[0]

      @jax.jit
      def ref_one(p, xi, yi):
        zi, vjp = jax.vjp(lambda q: example_logits(q, xi), p)
        pi = jax.nn.softmax(zi)
        g = vjp(pi - jax.nn.one_hot(yi, zi.shape[0], dtype=zi.dtype))[0]
        rows = jax.vmap(lambda u: vjp(u)[0])(jnp.eye(zi.shape[0], dtype=zi.dtype) - pi[None])
        ggn = jax.tree.map(lambda r: jnp.tensordot(pi, jnp.square(r), 1), rows)
        return g, ggn

      refs = [jax.tree.map(np.asarray, ref_one(p64, jnp.asarray(x[i], jnp.float64), y[i]))
              for i in range(n)]
    ref_sq = np.array([[np.sum(np.square(a)) for a in jax.tree.leaves(g)] for g, _ in refs])
    ref_fisher = [np.mean([np.square(jax.tree.leaves(g)[j]) for g, _ in refs], axis=0)
                  for j in range(len(paths))]
    ref_ggn = [np.mean([jax.tree.leaves(h)[j] for _, h in refs], axis=0)
               for j in range(len(paths))]
    p32 = jax.tree.map(jnp.asarray, params)
    f32 = logits_fn(jax.tree.map(jnp.asarray, stats32))
    batch = {"x": x, "y": y}
    res = {"one_minus_p_y": [float(v) for v in one_minus_py]}
    for name, lik in (("snnjax", "categorical"), ("snnjax_legacy_score", Legacy())):
      blocks = est.per_example_sqnorms_by_block(f32, p32, batch, blocks="leaf", likelihood=lik)
      fd = jax.tree.leaves(est.fisher_diagonal(f32, p32, batch, labels="data",
                                               likelihood=lik).value)
      gd = jax.tree.leaves(est.fisher_diagonal(f32, p32, batch, labels="exact",
                                               likelihood=lik).value)
      res[name] = {
          "per_example_sqnorm": summary({p: leaf_errors(blocks.blocks[p], ref_sq[:, j], True)
                                         for j, p in enumerate(paths)}),
          "fisher_diag_data": summary({p: leaf_errors(fd[j], ref_fisher[j], False)
                                       for j, p in enumerate(paths)}),
          "ggn_diag_exact": summary({p: leaf_errors(gd[j], ref_ggn[j], False)
                                     for j, p in enumerate(paths)}),
      }
    out["cases"][case] = res
    arrays[f"{case}/y"] = y
    arrays[f"{case}/paths"] = np.array(paths)
    arrays[f"{case}/ref_sq"] = ref_sq
    for j, p in enumerate(paths):
      arrays[f"{case}/ref_fisher/{p}"] = to_torch_layout(p, ref_fisher[j])
      arrays[f"{case}/ref_ggn/{p}"] = to_torch_layout(p, ref_ggn[j])
      arrays[f"{case}/param/{p}"] = to_torch_layout(p, jax.tree.leaves(params)[j])
    for p, a in zip(est.leaf_paths(stats32), jax.tree.leaves(stats32)):
      arrays[f"{case}/stat/{p}"] = a
  if "mlp" in args.parts:
    out["mlp"] = run_jax_mlp(arrays, args.seed)
  out["versions"] = {k: importlib.metadata.version(k) for k in ("jax", "jaxlib", "flax")}
  np.savez(args.npz, **arrays)
  return out


MLP_SIZES = (8, 32, 32, 4)
MLP_N = 16
MLP_CASES = (("gaussian", 1.0), ("bernoulli", 1.0), ("bernoulli", 8.0))  # (likelihood, scale)


def mlp_weights(seed: int) -> list:
  """[(W (in, out), b (out,))] float32 and inputs (MLP_N, 8), labels drawn by the callers."""
  rng = np.random.default_rng(seed + 100)
  layers = [((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
             (0.1 * rng.standard_normal(b)).astype(np.float32))
            for a, b in zip(MLP_SIZES[:-1], MLP_SIZES[1:])]
  x = rng.standard_normal((MLP_N, MLP_SIZES[0])).astype(np.float32)
  return layers, x, rng


def run_jax_mlp(arrays: dict, seed: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from snnjax import estimators as est  # pylint: disable=import-outside-toplevel
  layers, x, rng = mlp_weights(seed)
  out = {}
  for lik, scale in MLP_CASES:
    params = [{"kernel": w, "bias": b} for w, b in layers]
    params[-1] = {k: v * np.float32(scale) for k, v in params[-1].items()}

    def f(p, xx):
      for i, layer in enumerate(p):
        xx = xx @ layer["kernel"] + layer["bias"]
        xx = jnp.tanh(xx) if i < len(p) - 1 else xx
      return xx

    z = np.asarray(f(params, x))
    if lik == "gaussian":
      y = (z + rng.standard_normal(z.shape)).astype(np.float32)
    else:
      y = (z > 0).astype(np.float32) if scale > 1 else (rng.uniform(size=z.shape) < 0.5).astype(
          np.float32)
    with jax.enable_x64(True):
      p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
      jac = jax.vmap(lambda xi: jax.jacobian(lambda q: f(q, xi[None])[0])(p64))(
          jnp.asarray(x, jnp.float64))
      z64 = f(p64, jnp.asarray(x, jnp.float64))
      if lik == "gaussian":
        h, r = jnp.ones_like(z64), z64 - y  # NLL ||y - f||^2 / 2: Hessian 1, gradient f - y
      else:
        h, r = jax.nn.sigmoid(z64) * jax.nn.sigmoid(-z64), jax.nn.sigmoid(z64) - y
      ggn = jax.tree.map(lambda j: np.asarray(jnp.mean(jnp.einsum("nk,nk...->n...", h,
                                                                  jnp.square(j)), 0)), jac)
      ef = jax.tree.map(lambda j: np.asarray(jnp.mean(jnp.square(
          jnp.einsum("nk,nk...->n...", r, j)), 0)), jac)
    key = f"mlp/{lik}-x{scale:g}"
    got = {}
    p32 = jax.tree.map(jnp.asarray, params)
    batch = {"x": x, "y": y}
    for name, labels, ref in (("ggn_diag_exact", "exact", ggn), ("fisher_diag_data", "data", ef)):
      val = est.fisher_diagonal(f, p32, batch, labels=labels, likelihood=lik).value
      got[name] = summary({f"{i}/{k}": leaf_errors(val[i][k], ref[i][k], False)
                           for i in range(len(params)) for k in ("kernel", "bias")})
      for i in range(len(params)):
        for k in ("kernel", "bias"):
          arrays[f"{key}/ref_{name}/{i}/{k}"] = ref[i][k]
    for i in range(len(params)):
      for k in ("kernel", "bias"):
        arrays[f"{key}/param/{i}/{k}"] = params[i][k]
    arrays[f"{key}/x"], arrays[f"{key}/y"] = x, y
    out[key] = {"snnjax": got, "median_abs_score": float(np.median(np.abs(np.asarray(r))))}
  return out


# ----------------------------------------------------------------------------------------------
# The torch half.


def run_torch_mlp(arrays) -> dict:
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  import curvlinops  # pylint: disable=import-outside-toplevel
  out = {"versions": {"curvlinops": getattr(curvlinops, "__version__", None)}}
  if out["versions"]["curvlinops"] is None:
    import importlib.metadata  # pylint: disable=import-outside-toplevel
    out["versions"]["curvlinops"] = importlib.metadata.version("curvlinops-for-pytorch")
  for lik, scale in MLP_CASES:
    key = f"mlp/{lik}-x{scale:g}"
    res = {}
    for dtype in (torch.float32, torch.float64):
      mods = []
      for i, (a, b) in enumerate(zip(MLP_SIZES[:-1], MLP_SIZES[1:])):
        lin = nn.Linear(a, b)
        with torch.no_grad():
          lin.weight.copy_(torch.from_numpy(arrays[f"{key}/param/{i}/kernel"].T.copy()))
          lin.bias.copy_(torch.from_numpy(arrays[f"{key}/param/{i}/bias"]))
        mods += [lin, nn.Tanh()] if i < len(MLP_SIZES) - 2 else [lin]
      model = nn.Sequential(*mods).to(dtype)
      x = torch.from_numpy(arrays[f"{key}/x"]).to(dtype)
      y = torch.from_numpy(arrays[f"{key}/y"]).to(dtype)
      n = x.shape[0]
      loss = nn.MSELoss(reduction="sum") if lik == "gaussian" else nn.BCEWithLogitsLoss(
          reduction="sum")
      # snnjax's convention: mean over examples of the NLL's curvature (Gaussian NLL = MSE / 2).
      ggn_scale, ef_scale = (1 / (2 * n), 1 / (4 * n)) if lik == "gaussian" else (1 / n, 1 / n)
      params = list(model.parameters())
      data = [(x, y)]
      dim = sum(p.numel() for p in params)
      eye = torch.eye(dim, dtype=dtype)
      vals = {}
      for name, op, sc in (("ggn_diag_exact", curvlinops.GGNLinearOperator, ggn_scale),
                           ("fisher_diag_data", curvlinops.EFLinearOperator, ef_scale)):
        mat = op(model, loss, params, data) @ eye
        diag = (torch.diagonal(mat) * sc).double().numpy()
        vals[name], start = {}, 0
        for i, p in enumerate(params):
          piece = diag[start:start + p.numel()].reshape(p.shape)
          start += p.numel()
          k = "kernel" if p.dim() == 2 else "bias"
          vals[name][f"{i // 2}/{k}"] = piece.T if k == "kernel" else piece
      res[str(dtype).split(".")[-1]] = vals
    entry = {}
    for name in ("ggn_diag_exact", "fisher_diag_data"):
      refs = {k: arrays[f"{key}/ref_{name}/{k}"] for k in res["float32"][name]}
      entry.setdefault("curvlinops_float32", {})[name] = summary(
          {k: leaf_errors(v, refs[k], False) for k, v in res["float32"][name].items()})
      entry.setdefault("curvlinops_float64", {})[name] = summary(
          {k: leaf_errors(v, refs[k], False) for k, v in res["float64"][name].items()})
    out[key] = entry
  return out


def run_torch(args) -> dict:
  import warnings  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  from backpack import backpack, extend  # pylint: disable=import-outside-toplevel
  from backpack.extensions import (  # pylint: disable=import-outside-toplevel
      BatchGrad, BatchL2Grad, DiagGGNExact)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from torch_peers import CifarResNet  # pylint: disable=import-outside-toplevel
  warnings.filterwarnings("ignore", message="Full backward hook is firing")
  torch.manual_seed(0)
  arrays = np.load(args.npz)
  x = torch.from_numpy(arrays["x"])
  out = {"n": int(x.shape[0]), "cases": {}}
  for case in (CASES if "resnet" in args.parts else ()):
    paths = [str(p) for p in arrays[f"{case}/paths"]]
    y = torch.from_numpy(arrays[f"{case}/y"].astype(np.int64))
    model = CifarResNet(depth=20, shortcut="B")
    state = {torch_name(p): torch.from_numpy(np.ascontiguousarray(arrays[f"{case}/param/{p}"]))
             for p in paths}
    for k in arrays.files:
      if k.startswith(f"{case}/stat/"):
        state[torch_name(k[len(f"{case}/stat/"):])] = torch.from_numpy(arrays[k])
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(m.endswith("num_batches_tracked") for m in missing), (
        missing, unexpected)
    model.eval()
    named = dict(model.named_parameters())
    by_path = {p: named[torch_name(p)] for p in paths}
    ext = extend(model, use_converter=True)
    # The converter may rebuild modules: map parameters by value to the flax paths.
    ext_params = list(ext.parameters())
    lookup = {}
    for p, t in by_path.items():
      hits = [q for q in ext_params if q.shape == t.shape and torch.equal(q.detach(), t.detach())]
      assert len(hits) == 1, p
      lookup[p] = hits[0]
    loss_fn = extend(nn.CrossEntropyLoss(reduction="sum"))
    ext.zero_grad()
    with backpack(BatchL2Grad(), BatchGrad(), DiagGGNExact()):
      loss_fn(ext(x), y).backward()
    n = x.shape[0]
    ref_sq = arrays[f"{case}/ref_sq"]
    sq, fisher, ggn = {}, {}, {}
    for j, p in enumerate(paths):
      q = lookup[p]
      sq[p] = leaf_errors(q.batch_l2.numpy(), ref_sq[:, j], True)
      fisher[p] = leaf_errors((q.grad_batch.double() ** 2).mean(0).numpy(),
                              arrays[f"{case}/ref_fisher/{p}"], False)
      ggn[p] = leaf_errors(q.diag_ggn_exact.double().numpy() / n,
                           arrays[f"{case}/ref_ggn/{p}"], False)
    out["cases"][case] = {"backpack": {"per_example_sqnorm": summary(sq),
                                       "fisher_diag_data": summary(fisher),
                                       "ggn_diag_exact": summary(ggn)}}
  import importlib.metadata  # pylint: disable=import-outside-toplevel
  out["versions"] = {"torch": torch.__version__,
                     "backpack": importlib.metadata.version("backpack-for-pytorch")}
  if "mlp" in args.parts:
    out["mlp"] = run_torch_mlp(arrays)
    out["versions"]["curvlinops"] = out["mlp"].pop("versions")["curvlinops"]
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("half", choices=("jax", "torch"))
  parser.add_argument("--npz", required=True, help="weights, data and references (jax writes)")
  parser.add_argument("--json", default=None, help="results (default: stdout)")
  parser.add_argument("--data", default=DEFAULT_DATA, help="cifar10.npz (jax half)")
  parser.add_argument("--n", type=int, default=4, help="examples (jax half)")
  parser.add_argument("--seed", type=int, default=1)
  parser.add_argument("--parts", default="resnet,mlp", help="resnet and/or mlp")
  args = parser.parse_args(argv)
  result = run_jax(args) if args.half == "jax" else run_torch(args)
  result.update(half=args.half, date=datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"), python=platform.python_version(), cores=os.cpu_count())
  text = json.dumps(result, indent=1)
  if args.json:
    with open(args.json, "w") as f:
      f.write(text + "\n")
  else:
    print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
