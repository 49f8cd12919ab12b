"""The defaults shared by every training config (the study's Sol-D protocol on CIFAR-10 / ResNet-32).

Every field is defined and documented once, in ``snnjax.train.config_presets.base_config``; the
variants (``dense.py``, ``finetune95.py``, ``scratch95.py``, ...) call that module's builders, and
presets are its ``PRESETS`` (``default.py:quick`` trains a quick Sol-D).

  python scripts/train.py --config configs/default.py --workdir runs/dense
"""

from snnjax.train import config_presets


def get_config(preset: str = ""):
  return config_presets.default_config(preset)
