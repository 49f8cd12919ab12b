"""Measure solutions (train error, test accuracy, Tr(H), Tr(F), Jacobian) with the study's protocol.

  python scripts/measure.py --workdir runs/finetune90-quick --workdir runs/scratch90-quick
  python scripts/measure.py --checkpoint runs/scratch90-quick/init --config.fisher.kind=exact
  python scripts/measure.py --workdir DIR --config configs/study.py:quick --out results/table
  python scripts/measure.py --workdir DIR --config.hessian.max_probes=20 --config.hessian.num_examples=512

Settings are ``snnjax.studies.measure.default_settings()`` (or the ``measure`` field of the study config
given with ``--config``), then the ``--config.FIELD=VALUE`` overrides, fields relative to the settings
(``--help`` lists them); ``--config.hessian.enabled=false`` skips Tr(H).
"""

import sys

from snnjax.studies.commands import exit_cli, measure_main

if __name__ == "__main__":
  exit_cli(measure_main())
