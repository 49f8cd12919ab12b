"""Train one run (dense, finetune, scratch, lottery, rigl or set) from a config file.

  python scripts/train.py --config configs/scratch95.py:quick --workdir runs/s95q
  python scripts/train.py --config configs/dense.py --config.num_epochs=10 --workdir runs/dense
  python scripts/train.py --config configs/dense.py:quick --config.ensemble=4 --workdir runs/x4  # seeds 0-3
"""

import sys

from snnjax.train.cli import main

if __name__ == "__main__":
  sys.exit(main())
