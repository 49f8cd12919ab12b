"""Sol-R at sparsity 0.95: RigL (Evci et al. 2020) from exactly Sol-S's start (the same Init-S and
Sol-F's mask, or ``mask.source=random|erk``): every ``dst.update_every`` steps until ``dst.end_fraction``
of training, each prunable layer drops its lowest-|w| active weights and grows as many where the dense
gradient is largest (drop fraction 0.3, cosine decay). Same presets and schedules as ``scratch95.py``
(``snnjax.train.config_presets``); ``:quick`` updates every 20 steps.

  python scripts/train.py --config configs/rigl95.py --config.dense_workdir=runs/dense
  python scripts/train.py --config configs/rigl95.py:quick --workdir runs/rigl95-quick
  python scripts/train.py --config configs/rigl95.py --config.mask.source=erk   # no Sol-D needed
"""

from snnjax.train import config_presets


def get_config(preset: str = ""):
  return config_presets.sparse_config("rigl", 0.95, preset)
