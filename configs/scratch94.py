"""Scratch at sparsity 0.94; otherwise identical to `scratch95.py` (same presets).

  python scripts/train.py --config configs/scratch94.py:quick --workdir runs/scratch94-quick
"""

from snnjax.train import config_presets


def get_config(preset: str = ""):
  return config_presets.sparse_config("scratch", 0.94, preset)
