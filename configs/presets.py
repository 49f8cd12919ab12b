"""Presets shared by the training configs (``file.py:preset``).

* ``""``: the file's own full setup.
* ``quick``: the embedded scikit-learn digits (8x8, no download) with the small CNN; trains in seconds
  on a laptop CPU. Sparse quick runs train their quick Sol-D prerequisite automatically.
* ``noisy``: 30% symmetric label noise ("uniform", as the study), the poster's schedule.
* ``quick_noisy``: both.
* ``cifar100``: the study's main-table setup: CIFAR-100, 4x-wide ResNet-32 (64/128/256, option-B
  shortcuts).
* ``cifar10_cpu``: real CIFAR-10 pixels (``../shared/data/cifar10.npz``, 20k train subset, full
  test set) on a budget that fits a 2-core laptop: ResNet-20 at half width (8/16/32 channels,
  option A), 8 epochs for Sol-D and 6 for Sol-F / Sol-S, the study's schedule shapes compressed
  (see :func:`cifar10_cpu`). ``cifar10_cpu_noisy`` adds the 30% label noise of ``noisy``.
"""

import ml_collections

PRESETS = ("", "quick", "noisy", "quick_noisy", "cifar100", "cifar10_cpu", "cifar10_cpu_noisy")

# The laptop budget (cifar10_cpu): epochs of Sol-D and of every sparse run (Sol-F = Sol-S).
CPU_EPOCHS = {"dense": 8, "sparse": 6}


def poster_schedule(config: ml_collections.ConfigDict) -> None:
  """The label-noise poster's optimization: lr 0.02, x0.1 at epochs 40 and 80.

  The poster does not state the total; snnjax uses 120 epochs (40 epochs after the last decay).
  """
  config.optim.lr = 0.02
  config.optim.boundaries_epochs = (40, 80)
  config.num_epochs = 120


def _at(fractions, num_epochs: int) -> tuple[int, ...]:
  """Epoch boundaries at ``fractions`` of ``num_epochs`` (rounded, distinct, inside the run)."""
  out = sorted({min(num_epochs - 1, max(1, round(f * num_epochs))) for f in fractions})
  return tuple(out)


def cifar10_cpu(config: ml_collections.ConfigDict, *, noisy: bool) -> None:
  """The laptop budget on real CIFAR-10 (departures from the study, each for the 2-hour budget).

  * Model: ResNet-20 at width 0.5 (8/16/32 channels, option-A shortcuts) instead of ResNet-32
    (16/32/64): ~850 train images/s on 2 cores instead of ~190.
  * Epochs: Sol-D 8 (study: 200), Sol-F and Sol-S 6 each (study: 250), with the study's
    step schedules compressed to the same fractions of the run: Sol-D lr 0.1, x0.1 at 50% and
    75% (100/150 of 200); Sol-F / Sol-S lr 0.1 reset, x0.1 at 40/60/80% (100/150/200 of 250).
    Label noise keeps the poster's lr 0.02 with x0.1 at 1/3 and 2/3 of the run (40/80 of 120).
  * Per-epoch evaluation on 5,000 training examples (all of the test set), every second epoch
    for clean runs (every epoch with label noise, for the memorization curves); the final
    epoch is always evaluated.
  """
  config.dataset.name = "cifar10"
  config.model.name = "resnet20"
  config.model.kwargs = ml_collections.ConfigDict({"shortcut": "A", "width": 0.5})
  sparse = config.regime != "dense"
  config.num_epochs = CPU_EPOCHS["sparse" if sparse else "dense"]
  config.optim.warmup_epochs = 0.0
  if noisy:
    config.optim.lr = 0.02
    config.optim.boundaries_epochs = _at((1 / 3, 2 / 3), config.num_epochs)
  else:
    config.optim.lr = 0.1
    fractions = (0.4, 0.6, 0.8) if sparse else (0.5, 0.75)
    config.optim.boundaries_epochs = _at(fractions, config.num_epochs)
  config.train_eval_size = 5000
  config.eval_every_epochs = 1 if noisy else 2


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
  if preset.startswith("cifar10_cpu"):
    cifar10_cpu(config, noisy=noisy)
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
              "cifar100": "-cifar100", "cifar10_cpu": "-cifar10_cpu",
              "cifar10_cpu_noisy": "-cifar10_cpu_noisy"}[preset]
    config.dense_workdir = f"runs/dense{suffix}"
    config.dense_config = f"configs/dense.py:{preset}" if preset else "configs/dense.py"
    if quick:
      config.prerequisites = "train"
  return config
