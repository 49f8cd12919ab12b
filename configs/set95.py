"""SET (Mocanu et al. 2018) at sparsity 0.95 from exactly Sol-S's start (the same Init-S and Sol-F's
mask, or ``mask.source=random|erk``): like ``rigl95.py``, but the grown weights are chosen uniformly at
random (seeded by ``config.seed`` and ``config.dst.seed``). Same presets as ``scratch95.py``.

``:mocanu`` (and ``:quick_mocanu``) is SET as published (``config_presets.mocanu_set``): rewiring
once per epoch with a constant zeta = 0.3, dropping the smallest positive and the largest negative
weights separately, new weights at 0.1 * N(0, 1). The default is snnjax's SET (docs/ALGORITHMS.md:
the k smallest |w| overall, grown at 0, RigL's cosine schedule every ``dst.update_every`` steps).

  python scripts/train.py --config configs/set95.py --config.dense_workdir=runs/dense
  python scripts/train.py --config configs/set95.py:quick --workdir runs/set95-quick
  python scripts/train.py --config configs/set95.py:quick_mocanu --workdir runs/set95-mocanu-quick
"""

from snnjax.train import config_presets


def get_config(preset: str = ""):
  mocanu = preset == "mocanu" or preset.endswith("_mocanu")
  base = preset.removesuffix("mocanu").removesuffix("_")
  config = config_presets.sparse_config("set", 0.95, base, name="set95")
  return config_presets.mocanu_set(config) if mocanu else config
