"""Scratch at sparsity 0.94; otherwise identical to `scratch95.py` (same presets).

  python scripts/train.py --config configs/scratch94.py:quick --workdir runs/scratch94-quick
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import finetune95  # noqa: E402  pylint: disable=wrong-import-position


def get_config(preset: str = ""):
  return finetune95.sparse_config("scratch", 0.94, preset, "scratch94")
