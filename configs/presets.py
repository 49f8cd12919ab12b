"""Presets shared by the training configs (``file.py:preset``).

* ``""``: the file's own full setup.
* ``quick``: the embedded scikit-learn digits (8x8, no download) with the small CNN; trains in seconds
  on a laptop CPU. Sparse quick runs train their quick Sol-D prerequisite automatically.
* ``noisy``: 30% symmetric label noise ("uniform", as the study), the poster's schedule.
* ``quick_noisy``: both.
* ``cifar100``: the study's main-table setup: CIFAR-100, 4x-wide ResNet-32 (64/128/256, option-B
  shortcuts).
"""

import ml_collections

PRESETS = ("", "quick", "noisy", "quick_noisy", "cifar100")


def poster_schedule(config: ml_collections.ConfigDict) -> None:
  """The label-noise poster's optimization: lr 0.02, x0.1 at epochs 40 and 80.

  The poster does not state the total; snnjax uses 120 epochs (40 epochs after the last decay).
  """
  config.optim.lr = 0.02
  config.optim.boundaries_epochs = (40, 80)
  config.num_epochs = 120


def apply(config: ml_collections.ConfigDict, preset: str, *, name: str) -> ml_collections.ConfigDict:
  """Applies ``preset`` to ``config`` (a config of file ``name``, used for default work dirs)."""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r} for {name}.py; choose one of {PRESETS}")
  quick = preset.startswith("quick")
  noisy = preset.endswith("noisy")
  if noisy:
    config.dataset.label_noise = 0.3
    config.dataset.noise_kind = "uniform"
    poster_schedule(config)
  if preset == "cifar100":
    config.dataset.name = "cifar100"
    config.dataset.npz_path = ""
    config.model.name = "wide_resnet32"
    config.model.kwargs = ml_collections.ConfigDict({})
  if quick:
    config.dataset.name = "digits"
    config.dataset.source = "auto"
    config.dataset.npz_path = ""
    config.model.name = "cnn"
    config.model.kwargs = ml_collections.ConfigDict({})
    config.dataset.augment = False  # pad-4 crops and mirror images destroy 8x8 digits
    config.optim.lr = 0.05
    config.optim.weight_decay = 5e-4
    config.num_epochs = 12
    config.optim.boundaries_epochs = (8,)
    config.batch_size = 64
    config.eval_batch_size = 500
    config.checkpoint_every_epochs = 4
  if config.regime != "dense":
    suffix = {"": "", "quick": "-quick", "noisy": "-noisy", "quick_noisy": "-quick_noisy",
              "cifar100": "-cifar100"}[preset]
    config.dense_workdir = f"runs/dense{suffix}"
    config.dense_config = f"configs/dense.py:{preset}" if preset else "configs/dense.py"
    if quick:
      config.prerequisites = "train"
  return config
