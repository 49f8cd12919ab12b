"""Finetune at sparsity 0.96; otherwise identical to `finetune95.py` (same presets).

  python scripts/train.py --config configs/finetune96.py:quick --workdir runs/finetune96-quick
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import finetune95  # noqa: E402  pylint: disable=wrong-import-position


def get_config(preset: str = ""):
  return finetune95.sparse_config("finetune", 0.96, preset, "finetune96")
