"""Sol-D: a dense network trained normally (the study's protocol: SGD 0.9, wd 2e-4, batch 128,
lr 0.1 x0.1 at epochs 100 and 150, 200 epochs). Default: CIFAR-10 / ResNet-32 (option A).

  python scripts/train.py --config configs/dense.py --workdir runs/dense
  python scripts/train.py --config configs/dense.py:quick --workdir runs/dense-quick
  python scripts/train.py --config configs/dense.py:cifar100 --workdir runs/dense-cifar100
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # noqa: E402  pylint: disable=wrong-import-position
import presets  # noqa: E402  pylint: disable=wrong-import-position


def get_config(preset: str = ""):
  config = default.base_config()
  config.regime = "dense"
  config.sparsity = 0.0
  return presets.apply(config, preset, name="dense")
