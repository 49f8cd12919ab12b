"""PyTorch peer timings for the snnjax benchmarks (own venv; never imported by snnjax).

The same CIFAR ResNet-32 (stage widths 16/32/64, 5 basic blocks per stage) in two variants:

* ``"A"``: option-A shortcut at stage changes (stride-2 subsampling, zero channel padding, done
  functionally with ``F.pad``), as in He et al. (2016) for CIFAR;
* ``"B"``: option-B shortcut at stage changes (1x1 conv with stride 2 + BatchNorm), the variant
  BackPACK's module converter accepts.

On a batch of ``batch`` CIFAR-shaped random images (n, 3, 32, 32) with random labels it times:

* ``train_step``: forward + backward + SGD (momentum 0.9, weight decay 5e-4), BatchNorm in train
  mode; dense, and masked (``grad *= mask``, SGD step, ``weight *= mask``; random masks of the given
  sparsity on every conv/linear weight except the classifier);
* ``gradient``: forward + backward (train mode), the gradient of the mean cross-entropy;
* ``pyhessian``: PyHessian ``hessian(model, criterion, data=(x, y), cuda=False)`` construction (one
  forward + create_graph backward, model in eval mode) and ``trace(maxIter=k, tol=-inf)``; per-probe
  time is the trace time over ``k`` (``tol=-inf`` forces exactly ``k`` probes);
* ``backpack``: BackPACK ``BatchL2Grad`` per-sample squared gradient norms for the whole batch
  (``extend(model, use_converter=True)``, eval mode, sum-reduced cross-entropy as BackPACK requires)
  for the option-B model, and for option A if the converter accepts it.

Every time is the median over ``reps`` timed repetitions after ``warmup`` untimed ones, in seconds
(``*_min_s``: the fastest one).

Usage (peer venv): ``/root/peers/bin/python benchmarks/torch_peers.py --out peers.json [--smoke]``.
The JSON goes to ``--out`` or, without it, to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_model  # noqa: E402  pylint: disable=wrong-import-position


class BasicBlock(nn.Module):
  """Post-activation basic block: conv3x3-BN-ReLU-conv3x3-BN, + shortcut, ReLU."""

  def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.relu1 = nn.ReLU()
    self.relu2 = nn.ReLU()
    self.option_a = False
    self.pad = 0
    self.proj = None
    if stride != 1 or in_planes != planes:
      if shortcut == "A":
        self.option_a = True
        self.pad = (planes - in_planes) // 2
      else:
        self.proj = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                  nn.BatchNorm2d(planes))

  def forward(self, x):
    out = self.relu1(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.option_a:
      short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
    elif self.proj is not None:
      short = self.proj(x)
    else:
      short = x
    return self.relu2(out + short)


class CifarResNet(nn.Module):
  """CIFAR ResNet-(6n+2): conv3x3-BN-ReLU stem, 3 stages of n blocks, average pool, linear."""

  def __init__(self, depth: int = 32, num_classes: int = 10, widths=(16, 32, 64),
               shortcut: str = "A"):
    super().__init__()
    n = (depth - 2) // 6
    self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0])
    self.relu = nn.ReLU()
    layers = []
    in_planes = widths[0]
    for stage, planes in enumerate(widths):
      for i in range(n):
        stride = 2 if (stage > 0 and i == 0) else 1
        layers.append(BasicBlock(in_planes, planes, stride, shortcut))
        in_planes = planes
    self.layers = nn.Sequential(*layers)
    self.pool = nn.AdaptiveAvgPool2d(1)
    self.flatten = nn.Flatten()
    self.linear = nn.Linear(widths[-1], num_classes)

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.layers(out)
    return self.linear(self.flatten(self.pool(out)))


def _time_stats(fn, reps: int, warmup: int) -> tuple[float, float]:
  """(median, min) seconds of ``fn()`` over ``reps`` calls after ``warmup`` untimed ones."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), min(times)


def random_masks(model: nn.Module, sparsity: float, seed: int = 0) -> dict:
  """Random bool masks (True = active) for every conv/linear weight except the classifier."""
  gen = torch.Generator().manual_seed(seed)
  masks = {}
  for name, p in model.named_parameters():
    if name.endswith("weight") and p.dim() > 1 and not name.startswith("linear"):
      masks[name] = (torch.rand(p.shape, generator=gen) >= sparsity).to(p.dtype)
  return masks


def time_train_step(model, x, y, masks, reps, warmup) -> tuple[float, float]:
  """(median, min) seconds of one SGD-momentum train step (masked when ``masks`` is non-empty)."""
  model.train()
  params = dict(model.named_parameters())
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
  with torch.no_grad():
    for name, m in masks.items():
      params[name].mul_(m)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    if masks:
      with torch.no_grad():
        for name, m in masks.items():
          params[name].grad.mul_(m)
    opt.step()
    if masks:
      with torch.no_grad():
        for name, m in masks.items():
          params[name].mul_(m)
  return _time_stats(step, reps, warmup)


def time_gradient(model, x, y, reps, warmup) -> tuple[float, float]:
  """(median, min) seconds of forward + backward of the mean cross-entropy (train-mode BN)."""
  model.train()

  def grad():
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
  return _time_stats(grad, reps, warmup)


def time_pyhessian(model, x, y, probes, reps, warmup) -> dict:
  """PyHessian setup and Hutchinson trace times (seconds); per-probe = trace time / probes."""
  from pyhessian import hessian  # pylint: disable=import-outside-toplevel
  criterion = nn.CrossEntropyLoss()
  setups, traces = [], []
  for r in range(warmup + reps):
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    h = hessian(model, criterion, data=(x, y), cuda=False)
    t1 = time.perf_counter()
    vals = h.trace(maxIter=probes, tol=-np.inf)
    t2 = time.perf_counter()
    assert len(vals) == probes
    if r >= warmup:
      setups.append(t1 - t0)
      traces.append(t2 - t1)
    del h
  model.zero_grad(set_to_none=True)
  trace = statistics.median(traces)
  return {"setup_s": statistics.median(setups), "trace_s": trace, "probes": probes,
          "per_probe_min_s": min(traces) / probes,
          "per_probe_s": trace / probes, "trace_estimate": float(np.mean(vals))}


def time_backpack(model, x, y, reps, warmup) -> dict:
  """BackPACK ``BatchL2Grad`` per-sample squared gradient norms of the whole batch (eval mode)."""
  warnings.filterwarnings("ignore", message="Full backward hook is firing")
  from backpack import backpack, extend  # pylint: disable=import-outside-toplevel
  from backpack.extensions import BatchL2Grad  # pylint: disable=import-outside-toplevel
  model.eval()
  ext_model = extend(model, use_converter=True)
  loss_fn = extend(nn.CrossEntropyLoss(reduction="sum"))

  def run():
    ext_model.zero_grad(set_to_none=True)
    loss = loss_fn(ext_model(x), y)
    with backpack(BatchL2Grad()):
      loss.backward()
    return sum(p.batch_l2 for p in ext_model.parameters() if p.requires_grad)
  norms_sq = run()
  assert norms_sq.shape == (x.shape[0],)
  med, mn = _time_stats(run, reps, warmup)
  return {"per_sample_grad_norms_s": med, "per_sample_grad_norms_min_s": mn,
          "mean_sq_norm": float(norms_sq.mean()), "mode": "eval", "loss_reduction": "sum"}


def machine_info() -> dict:
  cpu = cpu_model()
  return {"cpu_model": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
          "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
          "torch_interop_threads": torch.get_num_interop_threads(),
          "mkldnn": bool(torch.backends.mkldnn.is_available()),
          "date": datetime.date.today().isoformat()}


def run_all(batch: int = 128, image: int = 32, depth: int = 32, widths=(16, 32, 64),
            reps: int = 7, warmup: int = 3, probes: int = 5, sparsity: float = 0.95,
            sections=("train", "gradient", "pyhessian", "backpack"), threads: int | None = None,
            seed: int = 0) -> dict:
  """Runs the peer timings; returns a JSON-ready dict (seconds, images/s)."""
  torch.set_num_threads(threads or os.cpu_count())
  torch.manual_seed(seed)
  gen = torch.Generator().manual_seed(seed)
  x = torch.randn(batch, 3, image, image, generator=gen)
  y = torch.randint(0, 10, (batch,), generator=gen)
  out = {"machine": machine_info(),
         "config": {"batch": batch, "image": image, "depth": depth, "widths": list(widths),
                    "reps": reps, "warmup": warmup, "probes": probes, "sparsity": sparsity,
                    "dtype": "float32", "timing": "median seconds over reps after warmup"}}
  for shortcut in ("A", "B"):
    res = {}

    def fresh():
      torch.manual_seed(seed)
      return CifarResNet(depth, 10, widths, shortcut)
    model = fresh()
    res["num_params"] = sum(p.numel() for p in model.parameters())
    if "train" in sections:
      dense, dense_min = time_train_step(model, x, y, {}, reps, warmup)
      model = fresh()
      masks = random_masks(model, sparsity, seed)
      masked, masked_min = time_train_step(model, x, y, masks, reps, warmup)
      res["train_step"] = {"dense_s": dense, "masked_s": masked,
                           "dense_min_s": dense_min, "masked_min_s": masked_min,
                           "dense_images_per_s": batch / dense,
                           "masked_images_per_s": batch / masked,
                           "masked_over_dense": masked / dense}
    if "gradient" in sections:
      res["gradient_s"], res["gradient_min_s"] = time_gradient(fresh(), x, y, reps, warmup)
    if "pyhessian" in sections:
      res["pyhessian"] = time_pyhessian(fresh(), x, y, probes, max(1, reps // 2), 1)
    if "backpack" in sections:
      try:
        res["backpack"] = time_backpack(fresh(), x, y, reps, warmup)
      except Exception as e:  # pylint: disable=broad-except
        res["backpack"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    out[f"resnet{depth}_{shortcut}"] = res
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default=None, help="JSON output path (default: stdout)")
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--reps", type=int, default=7)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--probes", type=int, default=5)
  ap.add_argument("--threads", type=int, default=None)
  ap.add_argument("--sections", default="train,gradient,pyhessian,backpack")
  ap.add_argument("--depth", type=int, default=32, help="ResNet depth 6n+2")
  ap.add_argument("--image", type=int, default=32, help="input height = width")
  ap.add_argument("--widths", default="16,32,64", help="stage channels")
  ap.add_argument("--smoke", action="store_true", help="tiny sizes: resnet8 width 4, 8x8, batch 8")
  args = ap.parse_args(argv)
  sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
  if args.smoke:
    res = run_all(batch=8, image=8, depth=8, widths=(4, 8, 16), reps=1, warmup=0, probes=2,
                  sections=sections, threads=args.threads)
  else:
    if (args.depth - 2) % 6 or args.depth < 8:
      ap.error(f"--depth must be 6n+2 >= 8, got {args.depth}")
    widths = tuple(int(w) for w in args.widths.split(","))
    res = run_all(batch=args.batch, image=args.image, depth=args.depth, widths=widths,
                  reps=args.reps, warmup=args.warmup, probes=args.probes, sections=sections,
                  threads=args.threads)
  text = json.dumps(res, indent=2)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  else:
    sys.stdout.write(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
