"""Sol-F at sparsity 0.95: Sol-D (``runs/dense``) pruned by global weight magnitude, then finetuned
with that fixed mask, fresh optimizer. CIFAR-10 / ResNet-32 with the poster's schedule (lr 0.02, x0.1
at epochs 40 and 80, 120 epochs); ``:cifar100`` gives the main table's protocol (lr 0.1, x0.1 at
100/150/200, 250 epochs, wide ResNet-32). Presets: ``snnjax.train.config_presets``.

  python scripts/train.py --config configs/finetune95.py --config.dense_workdir=runs/dense --workdir runs/finetune95
  python scripts/train.py --config configs/finetune95.py:quick --workdir runs/finetune95-quick
"""

from snnjax.train import config_presets


def get_config(preset: str = ""):
  return config_presets.sparse_config("finetune", 0.95, preset)
