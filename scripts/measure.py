"""Measure solutions (train error, test accuracy, Tr(H), Tr(F), Jacobian) with the study's protocol.

  python scripts/measure.py --workdir runs/finetune90-quick --workdir runs/scratch90-quick
  python scripts/measure.py --checkpoint runs/scratch90-quick/init --fisher-kind exact
  python scripts/measure.py --workdir DIR --config configs/study.py:quick --out results/table
"""

import sys

from snnjax.studies.cli import measure_main

if __name__ == "__main__":
  sys.exit(measure_main())
