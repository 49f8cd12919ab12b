"""Loss, accuracy and barrier along the segment between two checkpoints (``snnjax.interpolate``).

  python scripts/interpolate.py runs/scratch90-quick/init runs/scratch90-quick
  python scripts/interpolate.py runs/dense-quick runs/finetune90-quick --mask b --out results/
  python scripts/interpolate.py RUN RUN --step-a 220 --bn stored --alphas 0,0.5,1

Writes OUT.json (every number; see ``snnjax.studies.interpolate.interpolate``) and OUT.png;
``--help`` lists the options.
"""

import sys

from snnjax.studies.commands import interpolate_main

if __name__ == "__main__":
  sys.exit(interpolate_main())
