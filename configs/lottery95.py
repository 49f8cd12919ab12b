"""Lottery ticket at sparsity 0.95: Sol-D's pruning mask on Sol-D's own initial weights (the
schedule and presets of ``finetune95.py``).

  python scripts/train.py --config configs/lottery95.py:quick --workdir runs/lottery95-quick
"""

from snnjax.train import config_presets


def get_config(preset: str = ""):
  return config_presets.sparse_config("lottery", 0.95, preset)
