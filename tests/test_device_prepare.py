"""The accelerator check's preparation (``benchmarks/device_prepare.py``): the wheels install into
an empty target directory with ``pip install --no-index --no-deps`` and the device check's
``--smoke`` runs from that install on CPU. No network: the wheels are those prepared in
``.device/wheels`` (``scripts/prepare_device.py``, run once with the network) where present, and
always a wheel of snnjax built here from the tree."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import device_prepare  # noqa: E402  pylint: disable=wrong-import-position
from snnjax.errors import UserError  # noqa: E402  pylint: disable=wrong-import-position

PREPARED = os.path.join(ROOT, device_prepare.DEVICE_DIR, device_prepare.WHEELS)


def test_wheels_install_without_an_index_and_the_smoke_check_runs_from_them(tmp_path):
  wheels = tmp_path / "wheels"
  built = device_prepare.build_wheel(ROOT, str(wheels))
  prepared = device_prepare.wheels_in(PREPARED)  # ml_collections, mnist1d: where prepared
  for w in prepared:
    assert w.endswith("-none-any.whl"), w
  site = tmp_path / "site"  # empty
  proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                         "--no-compile", "--target", str(site), built, *prepared],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (site / "snnjax" / "train" / "loop.py").is_file()
  # The tree gives benchmarks/ and scripts/ (as on the device); snnjax comes from the install.
  out = tmp_path / "device.json"
  code = (
      "import json, sys, snnjax; from benchmarks import device_check\n"
      f"assert snnjax.__file__.startswith({str(site)!r}), snnjax.__file__\n"
      + "".join(f"import {m}; assert {m}.__file__.startswith({str(site)!r}), {m}.__file__\n"
                for m in ("ml_collections", "mnist1d") if any(
                    os.path.basename(w).startswith(m + "-") for w in prepared))
      + f"res = device_check.run(smoke=True)\njson.dump(res, open({str(out)!r}, 'w'))\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=f"{site}{os.pathsep}{ROOT}")
  proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(out.read_text())
  assert res["smoke"] and res["defaults"]["backend"] == "cpu"
  assert res["resnet32"]["float32"]["images_per_s"] > 0


def test_the_device_command_installs_offline_then_runs_the_check():
  cmd = device_prepare.device_command()
  install, run = cmd.split(" && export ")
  assert "--no-index" in install and "--no-deps" in install and "--target /tmp/site" in install
  assert ".device/wheels/*.whl" in install
  assert "scripts/bench.py --preset device --out $OUT/device.json" in run
  assert len(cmd) < 2000  # the device tool's limit for one command


def test_cifar10_subset(tmp_path):
  src = tmp_path / "full.npz"
  rng = np.random.default_rng(0)
  np.savez(src, x_train=rng.integers(0, 255, (50, 32, 32, 3), dtype=np.uint8),
           y_train=np.arange(50, dtype=np.uint8) % 10,
           x_test=rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8),
           y_test=np.arange(20, dtype=np.uint8) % 10)
  info = device_prepare.write_cifar10_subset(str(src), str(tmp_path / "d" / "s.npz"), num_train=30,
                                             num_test=5)
  assert (info["num_train"], info["num_test"]) == (30, 5) and sum(info["train_classes"]) == 30
  with np.load(tmp_path / "d" / "s.npz") as d, np.load(src) as full:
    np.testing.assert_array_equal(d["x_train"], full["x_train"][:30])
    np.testing.assert_array_equal(d["y_test"], full["y_test"][:5])
  with pytest.raises(UserError, match="no CIFAR-10 npz"):
    device_prepare.write_cifar10_subset(str(tmp_path / "none.npz"), str(tmp_path / "x.npz"))
