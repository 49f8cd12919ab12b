"""The study end to end: train (or reuse) every solution, measure, analyze, write the report.

  python scripts/study.py --config configs/study.py:quick --workdir runs/study-quick
  python scripts/study.py --config configs/study.py:cifar10 --workdir runs/study-cifar10
  python scripts/study.py --config configs/study.py:paper --workdir runs/study-paper
"""

import sys

from snnjax.studies.commands import exit_cli, study_main

if __name__ == "__main__":
  exit_cli(study_main())
