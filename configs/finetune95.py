"""Sol-F at sparsity 0.95: Sol-D (``runs/dense``) pruned by global weight magnitude, then finetuned
with that fixed mask, fresh optimizer. CIFAR-10 / ResNet-32 with the poster's schedule (lr 0.02, x0.1
at epochs 40 and 80, 120 epochs); ``:cifar100`` gives the main table's protocol (lr 0.1, x0.1 at
100/150/200, 250 epochs, wide ResNet-32).

  python scripts/train.py --config configs/finetune95.py --config.dense_workdir=runs/dense --workdir runs/finetune95
  python scripts/train.py --config configs/finetune95.py:quick --workdir runs/finetune95-quick
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # noqa: E402  pylint: disable=wrong-import-position
import presets  # noqa: E402  pylint: disable=wrong-import-position

SPARSITY = 0.95


def sparse_config(regime: str, sparsity: float, preset: str, name: str):
  """The shared body of finetuneXX.py / scratchXX.py."""
  config = default.base_config()
  config.regime = regime
  config.sparsity = sparsity
  presets.poster_schedule(config)
  if preset == "cifar100":
    config.optim.lr = 0.1
    config.optim.boundaries_epochs = (100, 150, 200)
    config.num_epochs = 250
  return presets.apply(config, preset, name=name)


def get_config(preset: str = ""):
  return sparse_config("finetune", SPARSITY, preset, "finetune95")
