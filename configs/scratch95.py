"""Sol-S at sparsity 0.95: a fresh random init (Init-S, saved in WORKDIR/init) with Sol-F's mask (global
magnitude pruning of Sol-D), trained from scratch. CIFAR-10 / ResNet-32, the poster's setup (lr 0.02,
x0.1 at epochs 40 and 80, 120 epochs); ``:noisy`` adds 30% symmetric label noise; ``:cifar100`` is the
main table's setup. Presets: ``snnjax.train.config_presets``.

  python scripts/train.py --config configs/scratch95.py --config.dense_workdir=runs/dense
  python scripts/train.py --config configs/scratch95.py:quick --workdir runs/scratch95-quick
  python scripts/train.py --config configs/scratch95.py --config.mask.source=erk   # no Sol-D needed
"""

from snnjax.train import config_presets


def get_config(preset: str = ""):
  return config_presets.sparse_config("scratch", 0.95, preset)
