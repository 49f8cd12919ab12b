"""Defaults shared by every training config (the study's Sol-D protocol on CIFAR-10 / ResNet-32).

Variants import this module and override fields; see ``dense.py``, ``finetune95.py``, ``scratch95.py``.
Run::

  python scripts/train.py --config configs/default.py --workdir runs/dense
"""

import ml_collections

# Standard CIFAR-10 location here; tests and presets that need it skip/explain when it is absent.
CIFAR10_NPZ = "../shared/data/cifar10.npz"


def get_config(preset: str = ""):
  """The defaults; ``preset`` as in ``presets.py`` (``default.py:quick`` trains a quick Sol-D)."""
  config = base_config()
  if preset:
    import os  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import presets  # pylint: disable=import-outside-toplevel
    presets.apply(config, preset, name="default")
  return config


def base_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  # dense | finetune | scratch | lottery (see snnjax/train/starting_point.py).
  config.regime = "dense"
  # Fraction of the prunable weights removed (0 for dense).
  config.sparsity = 0.0

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "cifar10"          # mnist1d | digits | cifar10 | cifar100
  config.dataset.source = "auto"           # auto | npz | tfds
  config.dataset.npz_path = CIFAR10_NPZ
  config.dataset.data_dir = ""             # tfds data_dir ("" = tfds default)
  config.dataset.train_size = 0            # 0 = the whole train split
  config.dataset.label_noise = 0.0         # symmetric label-noise rate r in [0, 1)
  config.dataset.noise_kind = "uniform"    # uniform (the study's) | flip (always a different class)
  config.dataset.imbalance_ratio = 1.0     # >1: exponential long-tailed train set
  config.dataset.seed = 0                  # subset / noise seed
  config.dataset.augment = True            # pad-4 random crop + horizontal flip (images only)

  config.model = ml_collections.ConfigDict()
  config.model.name = "resnet32"
  config.model.kwargs = ml_collections.ConfigDict({"shortcut": "A"})

  config.mask = ml_collections.ConfigDict()
  # Where a sparse run's mask comes from: prune_dense (global magnitude pruning of Sol-D, the study's
  # default), random (uniform per layer) or erk; finetune always prunes Sol-D.
  config.mask.source = "prune_dense"
  config.mask.scope = "global"             # global | layerwise (magnitude pruning)
  config.mask.include_first = True         # prune the first conv (the study does)
  config.mask.include_last = False         # prune the classifier (the study does not)

  # The Sol-D run that finetune / lottery / scratch(prune_dense) start from: a work dir.
  config.dense_workdir = ""
  # What to do when that run is missing: error (default) or train (train it first with `dense_config`).
  config.prerequisites = "error"
  config.dense_config = ""                 # a config spec, e.g. "configs/dense.py:quick"

  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 0.1
  config.optim.momentum = 0.9
  config.optim.nesterov = False
  config.optim.weight_decay = 2e-4
  config.optim.boundaries_epochs = (100, 150)
  config.optim.decay = 0.1
  config.optim.warmup_epochs = 0.0

  # Fisher-information regularization (the study's proposal; Jastrzebski et al. 2021's "Fisher
  # penalty"): loss + weight * ||masked grad of CE at model-sampled labels||^2 on `num_examples` of
  # each batch (0 = all), for epochs < until_epoch (0 = the whole run). weight 0 = off.
  config.fisher_reg = ml_collections.ConfigDict()
  config.fisher_reg.weight = 0.0
  config.fisher_reg.until_epoch = 0
  config.fisher_reg.num_examples = 32

  # Data scheduling: for epochs < until_epoch each batch is the lowest (low_first, the blog's
  # description) or highest (high_first, the paper's) scored part of a random pool of
  # pool_factor * batch_size examples; scores_path is an .npy of per-example scores (N,).
  config.curriculum = ml_collections.ConfigDict()
  config.curriculum.kind = "none"          # none | low_first | high_first
  config.curriculum.scores_path = ""
  config.curriculum.until_epoch = 0
  config.curriculum.pool_factor = 2.0

  config.num_epochs = 200
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.eval_every_epochs = 1
  config.train_eval_size = 0               # examples of the train set evaluated per epoch (0 = all)
  config.checkpoint_every_epochs = 1
  config.checkpoint_keep = 2
  config.select_best_on_test = False       # also keep the best-test-accuracy epoch (the study's choice)

  config.precision = "float32"             # float32 | bfloat16 (compute only; params stay float32)
  config.num_devices = 0                   # data-parallel devices (0 = all local devices)
  config.distributed = False               # call jax.distributed.initialize() (multi-host)
  config.progress = True                   # progress bar on a terminal
  return config
