"""The training configs' one definition: the defaults, the presets and the per-file builders.

The files under ``configs/`` (``dense.py``, ``finetune95.py``, ``scratch95.py``, ...) are a few lines
each: a docstring with the run commands and ``get_config(preset)`` calling :func:`dense_config` or
:func:`sparse_config`. Presets (``file.py:preset``):

* ``""``: the file's own full setup.
* ``quick``: the embedded scikit-learn digits (8x8, no download) with the small CNN; trains in seconds
  on a laptop CPU. Sparse quick runs train their quick Sol-D prerequisite automatically.
* ``noisy``: 30% symmetric label noise ("uniform", as the study), the poster's schedule.
* ``quick_noisy``: both.
* ``cifar100``: the study's main-table setup: CIFAR-100, 4x-wide ResNet-32 (64/128/256, option-B
  shortcuts); sparse runs use the main table's schedule (lr 0.1, x0.1 at 100/150/200, 250 epochs).
* ``cifar10_cpu``: real CIFAR-10 pixels (``../shared/data/cifar10.npz``, 20k train subset, full
  test set) on a budget that fits a 2-core laptop: ResNet-20 at half width (8/16/32 channels,
  option A), 8 epochs for Sol-D and 6 for Sol-F / Sol-S, the study's schedule shapes compressed
  (see :func:`cifar10_cpu`). ``cifar10_cpu_noisy`` adds the 30% label noise of ``noisy``.
  Too short to fit anything (Sol-D train error 0.33): kept as the under-trained contrast.
* ``cifar10_fit``: real CIFAR-10 in the regime the study is about, chosen by the convergence pilot
  (``docs/results/pilot/``): a 5,000-image class-balanced subset at 16x16 (2x2 average pooling),
  ResNet-20 (16/32/64), no augmentation, lr 0.1 decayed linearly to 0, 20 epochs for every clean
  run: Sol-D fits its train set (train error 0) and so do Sol-F / Sol-S where they can
  (see :func:`cifar10_fit`). ``cifar10_fit_noisy``: 30% label noise, 30 epochs, memorized.

A user's own config file may call these builders and override fields, or stand alone (any module
with ``get_config()`` loads with ``snnjax.train.config_io.load_config_spec``).
"""

from __future__ import annotations

import ml_collections

from snnjax.train.config_io import DST_REGIMES

# Standard CIFAR-10 location here; tests and presets that need it skip/explain when it is absent.
CIFAR10_NPZ = "../shared/data/cifar10.npz"

PRESETS = ("", "quick", "noisy", "quick_noisy", "cifar100", "cifar10_cpu", "cifar10_cpu_noisy",
           "cifar10_fit", "cifar10_fit_noisy")

# The laptop budget (cifar10_cpu): epochs of Sol-D and of every sparse run (Sol-F = Sol-S).
CPU_EPOCHS = {"dense": 8, "sparse": 6}
# The fitted budget (cifar10_fit): epochs of every clean run (Sol-D = Sol-F = Sol-S) and of
# every run with label noise.
FIT_EPOCHS = {"clean": 20, "noisy": 30}


def base_config() -> ml_collections.ConfigDict:
  """The defaults shared by every training config (the study's Sol-D protocol on CIFAR-10 /
  ResNet-32: SGD 0.9, wd 2e-4, batch 128, lr 0.1 x0.1 at epochs 100 and 150, 200 epochs)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # >= 0: the seed of the SGD noise alone (the epochs' shuffle and the augmentation stream), so
  # two runs from one init (``seed``) can see different data orders (instability, Frankle et al.
  # 2020); -1: ``seed``. Left out of the identity at -1.
  config.order_seed = -1
  # dense | finetune | scratch | lottery | rigl | set; rigl / set (dynamic sparse training) add a
  # config.dst block (see :func:`sparse_config`).
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
  config.dataset.downsample = 1            # k > 1: k x k average pooling of the raw pixels (2: 16x16)

  config.model = ml_collections.ConfigDict()
  config.model.name = "resnet32"
  config.model.kwargs = ml_collections.ConfigDict({"shortcut": "A"})

  config.mask = ml_collections.ConfigDict()
  # Where a sparse run's mask comes from: prune_dense (global magnitude pruning of Sol-D, the study's
  # default), random (uniform per layer), erk, or found at init: snip, grasp, synflow (scored on
  # the run's own init; snnjax.sparsity.init_scores); finetune and lottery always prune Sol-D.
  config.mask.source = "prune_dense"
  config.mask.scope = "global"             # global | layerwise (magnitude pruning)
  config.mask.include_first = True         # prune the first conv (the study does)
  config.mask.include_last = False         # prune the classifier (the study does not)
  # (Each field below is left out of a run's identity at its default: config_io.IDENTITY_DEFAULTS.)
  # Init of a scratch / rigl / set run's kept weights: dense (the model's own init, masked) or
  # sparse_aware (each unit's weights N(0, 2 / its active fan-in); snnjax.sparsity.sparse_init).
  config.mask.init = "dense"
  # Permute each prunable layer's mask (its count kept, seeded): the layerwise-shuffle control.
  config.mask.shuffle = False
  config.mask.score_examples = 256         # snip / grasp: the minibatch the scores are taken on
  config.mask.synflow_rounds = 100         # synflow: pruning rounds (exponential schedule)
  # lottery: rewind the kept weights to the root Sol-D's state at this step (0: its init); the
  # Sol-D must have saved it (save_steps).
  config.mask.rewind_step = 0

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
  config.optim.schedule = "step"           # step (boundaries_epochs) | linear | cosine (decay to 0)

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
  # Steps whose train state is also saved in WORKDIR/rewind/<step> (for lottery runs rewound to
  # them; mask.rewind_step). Not part of a run's identity.
  config.save_steps = ()
  # > 0: record the masked gradient norm ||mask * g|| of every n-th step (g the step's mini-batch
  # gradient, before the update) in the epoch records ("grad_norm"). Not part of the identity.
  config.grad_norm_every = 0

  config.precision = "float32"             # float32 | bfloat16 (compute only; params stay float32)
  # A step whose loss, gradients, new params or BatchNorm statistics are not finite: stop (the run
  # stops with an error, nothing of that epoch is saved, the last finite checkpoints are kept) or
  # skip_step (the step leaves the state as it was; the epoch record counts skipped_steps).
  config.nan_policy = "stop"
  config.num_devices = 0                   # data-parallel devices (0 = all local devices)
  # Multi-process runs (jax.distributed; see snnjax/train/parallel.py and the README's recipe).
  # Not part of a run's identity: N processes compute the numbers of one.
  config.distributed = ml_collections.ConfigDict()
  config.distributed.enabled = False
  config.distributed.coordinator_address = ""   # host:port of process 0; "" = detect (SLURM, ...)
  config.distributed.num_processes = 0          # with coordinator_address: the number of processes
  config.distributed.process_id = -1            # with coordinator_address: this process's index
  config.distributed.heartbeat_timeout_s = 100  # a silent peer is declared dead after this long
  config.distributed.initialization_timeout_s = 300
  config.progress = True                   # progress bar on a terminal
  # TensorBoard event files in WORKDIR/tensorboard (snnjax.train.summaries; needs tensorboardX).
  # Not part of a run's identity (config_io.RUNTIME_FIELDS).
  config.tensorboard = False
  return config


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


def cifar10_fit(config: ml_collections.ConfigDict, *, noisy: bool) -> None:
  """Real CIFAR-10 in the study's regime on 2 cores (chosen from the pilot, see the module doc).

  * Data: 5,000 images of the 20,000-image subset (class-balanced, ``dataset.seed``), 16x16 by
    exact 2x2 average pooling; no augmentation (the study's own CIFAR-10 loader had none);
    statistics of the pooled 20,000 images.
  * Model: ResNet-20, full width (16/32/64, option A; 0.27M weights), ~1,500 train images/s.
  * Optimization: SGD 0.9, wd 2e-4, batch 128, lr 0.1 decayed linearly to 0 over the run (in the
    pilot the study's step schedule compressed to 20 epochs fits as well: train error <= 0.01 at
    epoch 14 vs 16, test accuracy 0.490 vs 0.489; the linear decay has no boundaries to move when
    a budget sweep rescales a run and ends at train error 0); every clean run 20 epochs
    (Sol-F and Sol-S: a fresh schedule, the same budget as Sol-D), label-noise runs 30.
  * Evaluation on the whole train subset and test set every 5 epochs (label noise: every 2);
    checkpoints every 5 epochs (the Fisher trend sets its own cadence).
  """
  config.dataset.name = "cifar10"
  config.dataset.downsample = 2
  config.dataset.train_size = 5000
  config.dataset.augment = False
  config.model.name = "resnet20"
  config.model.kwargs = ml_collections.ConfigDict({"shortcut": "A", "width": 1.0})
  config.num_epochs = FIT_EPOCHS["noisy" if noisy else "clean"]
  config.optim.lr = 0.1
  config.optim.schedule = "linear"
  config.optim.boundaries_epochs = ()
  config.optim.warmup_epochs = 0.0
  config.train_eval_size = 0
  # Clean runs: evaluated every 5 epochs (the plateau criterion compares the last quarter's
  # ends); label-noise runs every 2 (the memorization curves).
  config.eval_every_epochs = 2 if noisy else 5
  config.checkpoint_every_epochs = 5


def _quick(config: ml_collections.ConfigDict) -> None:
  """The embedded digits with the small CNN, a seconds-long schedule."""
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


def apply(config: ml_collections.ConfigDict, preset: str, *, name: str) -> ml_collections.ConfigDict:
  """Applies ``preset`` to ``config`` in place and returns it; ``name`` (the config file's name,
  without ``.py``) only names the file in the error for an unknown preset.

  A sparse config (``regime != "dense"``) also gets the matching Sol-D prerequisite:
  ``dense_workdir = runs/dense[-preset]`` and ``dense_config = configs/dense.py[:preset]``.
  """
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
  if preset.startswith("cifar10_fit"):
    cifar10_fit(config, noisy=noisy)
  if quick:
    _quick(config)
  if config.regime != "dense":
    config.dense_workdir = "runs/dense" + (f"-{preset}" if preset else "")
    config.dense_config = f"configs/dense.py:{preset}" if preset else "configs/dense.py"
    if quick:
      config.prerequisites = "train"
  return config


def default_config(preset: str = "") -> ml_collections.ConfigDict:
  """``configs/default.py``: :func:`base_config` with ``preset`` applied."""
  return apply(base_config(), preset, name="default")


def dense_config(preset: str = "", *, name: str = "dense") -> ml_collections.ConfigDict:
  """Sol-D (``configs/dense.py``): the defaults, regime dense, with ``preset`` applied."""
  config = base_config()
  config.regime = "dense"
  config.sparsity = 0.0
  return apply(config, preset, name=name)


def sparse_name(regime: str, sparsity: float) -> str:
  """The config file name of a sparse run: ``scratch95`` for ("scratch", 0.95)."""
  return f"{regime}{round(100 * sparsity):02d}"


def sparse_config(regime: str, sparsity: float, preset: str = "", *, name: str | None = None
                  ) -> ml_collections.ConfigDict:
  """A sparse run (``configs/finetuneXX.py``, ``scratchXX.py``, ``lottery95.py``): the defaults
  with the poster's schedule (lr 0.02, x0.1 at epochs 40 and 80, 120 epochs; the main table's
  lr 0.1, x0.1 at 100/150/200, 250 epochs for ``cifar100``), then ``preset``.

  ``name`` defaults to :func:`sparse_name`; it only names the file in errors.
  """
  config = base_config()
  config.regime = regime
  config.sparsity = sparsity
  poster_schedule(config)
  if preset == "cifar100":
    config.optim.lr = 0.1
    config.optim.boundaries_epochs = (100, 150, 200)
    config.num_epochs = 250
  if regime in DST_REGIMES:
    dst_block(config, preset)
  return apply(config, preset, name=name or sparse_name(regime, sparsity))


# Dynamic sparse training (snnjax.train.dst): only the configs of config_io.DST_REGIMES have a
# config.dst block (so no other run's identity changes).
# The quick preset's update cadence: digits trains 22 steps per epoch x 12 epochs = 264 steps, so
# the paper's 100 would update once before end_fraction (198 steps); 20 updates 9 times.
QUICK_UPDATE_EVERY = 20


def dst_block(config: ml_collections.ConfigDict, preset: str = "") -> None:
  """Adds ``config.dst`` (the RigL paper's defaults: every 100 steps until 75% of training, drop
  fraction 0.3 with cosine decay; ``seed`` is folded into the mask-update key, see
  ``snnjax.train.dst.dst_key``); the ``quick`` presets update every ``QUICK_UPDATE_EVERY`` steps."""
  config.dst = ml_collections.ConfigDict()
  config.dst.update_every = QUICK_UPDATE_EVERY if preset.startswith("quick") else 100
  config.dst.end_fraction = 0.75
  config.dst.drop_fraction = 0.3
  config.dst.decay = "cosine"              # cosine | constant
  config.dst.seed = 0
  # SET's original rule as options (Mocanu et al. 2018; :func:`mocanu_set`, docs/ALGORITHMS.md);
  # at these defaults they are not part of a run's identity (config_io.IDENTITY_DEFAULTS).
  config.dst.drop_rule = "magnitude"       # magnitude (k lowest |w|) | signed (per sign, SET's)
  config.dst.grow_init = "zero"            # zero | normal (grow_std * N(0, 1), SET's)
  config.dst.grow_std = 0.1                # with grow_init=normal (Mocanu's code: randn() / 10)
  config.dst.update_every_epochs = 0       # e > 0: after every e-th epoch (SET: 1), not steps


def mocanu_set(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """SET as published (Mocanu et al. 2018, and its reference code): after every epoch but the
  last, each prunable layer drops the fraction zeta = 0.3 of its smallest positive and of its
  largest negative weights, separately, and grows as many at random, starting at 0.1 * N(0, 1)
  with zero momentum; zeta is constant (no decay) and the rewiring runs to the end of training."""
  config.dst.drop_rule = "signed"
  config.dst.grow_init = "normal"
  config.dst.grow_std = 0.1
  config.dst.update_every_epochs = 1
  config.dst.decay = "constant"
  config.dst.drop_fraction = 0.3
  config.dst.end_fraction = 1.0
  return config
