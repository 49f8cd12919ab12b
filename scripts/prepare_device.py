"""Prepare the accelerator check (run here, once, with the network): wheels of what the GPU image
lacks and a CIFAR-10 subset in .device/, then print the one command to run there.

  python scripts/prepare_device.py                 # .device/wheels/*.whl, .device/cifar10-subset.npz
  python scripts/prepare_device.py --no-download   # keep the wheels already there

See BENCHMARKS.md, "The accelerator check"; benchmarks/device_prepare.py does the work.
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from benchmarks import device_prepare  # noqa: E402  pylint: disable=wrong-import-position
from snnjax.errors import UserError  # noqa: E402  pylint: disable=wrong-import-position


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--cifar10-npz", default=None, help="default ../shared/data/cifar10.npz")
  ap.add_argument("--num-train", type=int, default=4000)
  ap.add_argument("--num-test", type=int, default=1000)
  ap.add_argument("--no-download", action="store_true", help="keep .device/wheels as they are")
  args = ap.parse_args(argv)
  try:
    if not (1 <= args.num_train <= 50_000 and 1 <= args.num_test <= 10_000):
      raise UserError("--num-train must be in [1, 50000] and --num-test in [1, 10000]")
    result = device_prepare.prepare(cifar10_npz=args.cifar10_npz, num_train=args.num_train,
                                    num_test=args.num_test, download=not args.no_download)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({k: v for k, v in result.items() if k != "command"}, indent=2),
        file=sys.stderr)
  print(result["command"])
  return 0


if __name__ == "__main__":
  sys.exit(main())
