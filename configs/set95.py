"""SET (Mocanu et al. 2018) at sparsity 0.95 from exactly Sol-S's start (the same Init-S and Sol-F's
mask, or ``mask.source=random|erk``): like ``rigl95.py``, but the grown weights are chosen uniformly at
random (seeded by ``config.seed`` and ``config.dst.seed``). Same presets as ``scratch95.py``.

  python scripts/train.py --config configs/set95.py --config.dense_workdir=runs/dense
  python scripts/train.py --config configs/set95.py:quick --workdir runs/set95-quick
"""

from snnjax.train import config_presets


def get_config(preset: str = ""):
  return config_presets.sparse_config("set", 0.95, preset)
