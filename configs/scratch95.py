"""Sol-S at sparsity 0.95: a fresh random init (Init-S, saved in WORKDIR/init) with Sol-F's mask (global
magnitude pruning of Sol-D), trained from scratch. CIFAR-10 / ResNet-32, the poster's setup (lr 0.02,
x0.1 at epochs 40 and 80, 120 epochs); ``:noisy`` adds 30% symmetric label noise; ``:cifar100`` is the
main table's setup.

  python scripts/train.py --config configs/scratch95.py --config.dense_workdir=runs/dense
  python scripts/train.py --config configs/scratch95.py:quick --workdir runs/scratch95-quick
  python scripts/train.py --config configs/scratch95.py --config.mask.source=erk   # no Sol-D needed
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import finetune95  # noqa: E402  pylint: disable=wrong-import-position

SPARSITY = 0.95


def get_config(preset: str = ""):
  return finetune95.sparse_config("scratch", SPARSITY, preset, "scratch95")
