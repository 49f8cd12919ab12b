"""The head-start check: Sol-F vs Sol-S at several sparse-run budgets, summarized in one table.

  python scripts/budget_sweep.py --config configs/study.py:cifar10_fit_budget \
      --workdir runs/study-cifar10_fit --epochs 10,20,40
  python scripts/budget_sweep.py --config configs/study.py:cifar10_fit_budget \
      --workdir runs/study-cifar10_fit --epochs 10,20,40 --summary-only

Each budget is the ``<preset>_budget`` study (the table at one sparsity) with ``sparse_epochs=E``,
its report in ``DIR/report-epochs<E>`` (the base study's own budget reuses its runs); the summary
(``DIR/budget-sweep.md`` / ``.json``, ``snnjax.studies.budget``) puts the test-accuracy gap,
train errors and plateau verdicts of every budget and seed side by side.
"""

import sys

from snnjax.studies.commands import budget_main

if __name__ == "__main__":
  sys.exit(budget_main())
