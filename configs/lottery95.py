"""Lottery ticket at sparsity 0.95: Sol-D's pruning mask on Sol-D's own initial weights.

  python scripts/train.py --config configs/lottery95.py:quick --workdir runs/lottery95-quick
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import finetune95  # noqa: E402  pylint: disable=wrong-import-position


def get_config(preset: str = ""):
  return finetune95.sparse_config("lottery", 0.95, preset, "lottery95")
