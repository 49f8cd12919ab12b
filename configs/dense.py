"""Sol-D: a dense network trained normally (the study's protocol: SGD 0.9, wd 2e-4, batch 128,
lr 0.1 x0.1 at epochs 100 and 150, 200 epochs). Default: CIFAR-10 / ResNet-32 (option A).
Presets: ``snnjax.train.config_presets``.

  python scripts/train.py --config configs/dense.py --workdir runs/dense
  python scripts/train.py --config configs/dense.py:quick --workdir runs/dense-quick
  python scripts/train.py --config configs/dense.py:cifar100 --workdir runs/dense-cifar100
"""

from snnjax.train import config_presets


def get_config(preset: str = ""):
  return config_presets.dense_config(preset)
