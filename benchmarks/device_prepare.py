"""Preparing the accelerator check on this machine, so that it works the first time there.

The GPU machine (BENCHMARKS.md, "The accelerator check") has Python 3.12, JAX with the CUDA plugin,
flax, optax, orbax-checkpoint, chex, absl-py, matplotlib, scikit-learn and tqdm, but neither
``ml_collections`` nor ``mnist1d``, reaches no package registry, and receives at most 64 MiB of the
working tree. :func:`prepare` puts into ``.device/`` (ignored by git; named in the device tool's
``carry``):

* ``wheels/``: pure-Python wheels of :data:`MISSING` for Python 3.12 (``pip download --no-deps``,
  at preparation time, here; their own requirements are on the image already), at the versions
  installed here (the ones the test suite runs with);
* ``cifar10-subset.npz``: the first ``num_train`` / ``num_test`` images of the CIFAR-10 npz (real
  pixels, class-balanced enough for a smoke run; the full file does not fit);

and returns the one command line that, there, installs the wheels without an index
(``pip install --no-index --no-deps --target``) and runs ``scripts/bench.py --preset device``,
writing JSON and Markdown under ``$OUT``.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import zipfile

import numpy as np

from snnjax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE_DIR = ".device"                 # relative to the checkout's root; in .gitignore
WHEELS = "wheels"
SUBSET = "cifar10-subset.npz"
MISSING = ("ml_collections", "mnist1d")  # what the GPU image lacks (pure Python)
PYTHON_VERSION = "3.12"                  # the GPU image's
SITE = "/tmp/site"                       # where the wheels go there
MAX_TREE_BYTES = 64 * 2**20              # what travels to the device machine


def installed_version(name: str) -> str:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError as e:
    raise UserError(f"{name} is not installed here: install it first (pip install {name})") from e


def download_wheels(dest: str, packages=MISSING, *, python_version: str = PYTHON_VERSION,
                    pip=(sys.executable, "-m", "pip")) -> list[str]:
  """``pip download`` of pure-Python wheels of ``packages`` (at the versions installed here) for
  ``python_version`` into ``dest``; returns their paths. Needs the network (run it here only)."""
  os.makedirs(dest, exist_ok=True)
  pins = [f"{name}=={installed_version(name)}" for name in packages]
  cmd = [*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--python-version", python_version, "--dest", dest, *pins]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise UserError(f"pip download of {', '.join(pins)} failed: {last}")
  found = wheels_in(dest)
  for name in packages:
    if not any(os.path.basename(w).lower().startswith(name.lower().replace("-", "_") + "-")
               for w in found):
      raise UserError(f"no wheel of {name} in {dest} after pip download")
  for w in found:
    if not w.endswith("-none-any.whl"):
      raise UserError(f"{w} is not a pure-Python wheel: it may not install on the device")
  return found


def build_wheel(root: str, dest: str, *, name: str = "snnjax", version: str | None = None) -> str:
  """A pure-Python wheel (PEP 427: the package's files, ``METADATA``, ``WHEEL`` and a ``RECORD`` of
  sha256 digests) of the package ``root/name`` into ``dest``; returns its path. Needs neither
  the network nor the ``wheel`` package (``pip wheel --no-build-isolation`` needs both where
  setuptools is older than the build requirement)."""
  version = version or _project_version(root)
  dist_info = f"{name}-{version}.dist-info"
  files = {}
  for dirpath, dirnames, filenames in os.walk(os.path.join(root, name)):
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
    for f in sorted(filenames):
      if f.endswith(".py"):
        path = os.path.join(dirpath, f)
        with open(path, "rb") as fh:
          files[os.path.relpath(path, root).replace(os.sep, "/")] = fh.read()
  files[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                    "Requires-Python: >=3.11\n").encode()
  files[f"{dist_info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: snnjax device_prepare\n"
                                 b"Root-Is-Purelib: true\nTag: py3-none-any\n")
  record = [f"{n},sha256={_b64_digest(data)},{len(data)}" for n, data in files.items()]
  files[f"{dist_info}/RECORD"] = ("\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n").encode()
  os.makedirs(dest, exist_ok=True)
  path = os.path.join(dest, f"{name}-{version}-py3-none-any.whl")
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
    for n, data in files.items():
      zf.writestr(n, data)
  return path


def _b64_digest(data: bytes) -> str:
  return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _project_version(root: str) -> str:
  with open(os.path.join(root, "pyproject.toml")) as f:
    for line in f:
      if line.startswith("version"):
        return line.split("=", 1)[1].strip().strip('"')
  raise UserError(f"no version in {root}/pyproject.toml")


def wheels_in(directory: str) -> list[str]:
  return sorted(glob.glob(os.path.join(directory, "*.whl")))


def write_cifar10_subset(src: str, dest: str, *, num_train: int = 4000,
                         num_test: int = 1000) -> dict:
  """The first ``num_train`` train and ``num_test`` test images of the CIFAR-10 npz ``src``
  (uint8 pixels, as the npz source reads them) written compressed to ``dest``; returns sizes."""
  if not os.path.isfile(src):
    raise UserError(f"no CIFAR-10 npz at {src} (see ../shared/data/README-cifar10.md)")
  with np.load(src) as d:
    arrays = {"x_train": d["x_train"][:num_train], "y_train": d["y_train"][:num_train],
              "x_test": d["x_test"][:num_test], "y_test": d["y_test"][:num_test]}
  os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
  tmp = dest + ".tmp.npz"
  np.savez_compressed(tmp, **arrays)
  os.replace(tmp, dest)
  return {"path": dest, "bytes": os.path.getsize(dest), "num_train": len(arrays["y_train"]),
          "num_test": len(arrays["y_test"]),
          "train_classes": np.bincount(arrays["y_train"], minlength=10).tolist()}


def device_command(device_dir: str = DEVICE_DIR, out: str = "$OUT/device.json",
                   site: str = SITE) -> str:
  """The one command line for the device machine (run in the checkout's root there, with
  ``device_dir`` carried): the wheels into ``site`` without an index, then the device check."""
  return (f"python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
          f"--target {site} {device_dir}/{WHEELS}/*.whl && export PYTHONPATH=$PWD:{site} "
          f"PYTHONUNBUFFERED=1 && python3 scripts/bench.py --preset device --out {out}")


def tree_bytes(root: str = ROOT) -> int:
  """Bytes of what travels: files git tracks or does not ignore, plus ``.device``."""
  proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                        cwd=root, capture_output=True, check=False)
  names = [n for n in proc.stdout.decode().split("\0") if n] if proc.returncode == 0 else []
  total = sum(os.path.getsize(os.path.join(root, n)) for n in names
              if os.path.isfile(os.path.join(root, n)))
  for dirpath, _, files in os.walk(os.path.join(root, DEVICE_DIR)):
    total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
  return total


def prepare(root: str = ROOT, *, cifar10_npz: str | None = None, num_train: int = 4000,
            num_test: int = 1000, download: bool = True) -> dict:
  """Everything the device check needs beside the tree, in ``root/.device``; returns what was
  written and the command line. ``download=False`` keeps the wheels already there."""
  device_dir = os.path.join(root, DEVICE_DIR)
  wheel_dir = os.path.join(device_dir, WHEELS)
  wheels = download_wheels(wheel_dir) if download else wheels_in(wheel_dir)
  if not wheels:
    raise UserError(f"no wheels in {wheel_dir}: run without --no-download (needs the network)")
  npz = cifar10_npz or os.path.join(os.path.dirname(root), "shared", "data", "cifar10.npz")
  subset = write_cifar10_subset(npz, os.path.join(device_dir, SUBSET), num_train=num_train,
                                num_test=num_test)
  size = tree_bytes(root)
  if size > MAX_TREE_BYTES:
    raise UserError(f"the tree with {DEVICE_DIR}/ is {size / 2**20:.1f} MiB; the device machine "
                    f"takes {MAX_TREE_BYTES // 2**20} MiB: use fewer images (--num-train)")
  return {"wheels": [os.path.relpath(w, root) for w in wheels], "cifar10_subset": subset,
          "tree_mib": size / 2**20, "carry": [DEVICE_DIR], "command": device_command()}
