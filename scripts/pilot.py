"""The convergence pilot on real CIFAR-10 (issue 19): dense candidates, curves, a figure and JSON.

  python scripts/pilot.py --workdir runs/pilot --out docs/results/pilot
  python scripts/pilot.py --workdir runs/pilot --out docs/results/pilot --only w1-16px-5k,w1-16px-5k-noisy
  python scripts/pilot.py --workdir runs/pilot --out docs/results/pilot --collect-only

Each candidate (``snnjax.studies.pilot.CANDIDATES``) is a dense run in ``WORKDIR/<name>``
(rerunning resumes; a finished run is not retrained); ``OUT/pilot.json`` and ``OUT/pilot.png``
hold every curve found.
"""

import sys

from snnjax.studies.commands import pilot_main

if __name__ == "__main__":
  sys.exit(pilot_main())
