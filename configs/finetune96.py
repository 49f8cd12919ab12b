"""Finetune at sparsity 0.96; otherwise identical to `finetune95.py` (same presets).

  python scripts/train.py --config configs/finetune96.py:quick --workdir runs/finetune96-quick
"""

from snnjax.train import config_presets


def get_config(preset: str = ""):
  return config_presets.sparse_config("finetune", 0.96, preset)
