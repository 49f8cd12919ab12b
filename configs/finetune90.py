"""Finetune at sparsity 0.90; otherwise identical to `finetune95.py` (same presets).

  python scripts/train.py --config configs/finetune90.py:quick --workdir runs/finetune90-quick
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import finetune95  # noqa: E402  pylint: disable=wrong-import-position


def get_config(preset: str = ""):
  return finetune95.sparse_config("finetune", 0.90, preset, "finetune90")
