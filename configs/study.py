"""The study end to end: Sol-D, Sol-F and Sol-S, their curvature table and the analyses.

  python scripts/study.py --config configs/study.py:quick --workdir runs/study-quick
  python scripts/study.py --config configs/study.py:cifar10 --workdir runs/study-cifar10
  python scripts/study.py --config configs/study.py:paper --workdir runs/study-paper
  python scripts/study.py --config configs/study.py:cifar10_cpu --workdir runs/study-cifar10_cpu
  python scripts/study.py --config configs/study.py:cifar10_fit --workdir runs/study-cifar10_fit
  python scripts/study.py --config configs/study.py:cifar10_fit_explain --workdir runs/study-cifar10_fit_explain
  python scripts/study.py --config configs/study.py:cifar10_cpu --workdir DIR --dry-run   # the plan

Presets:

* ``quick``: the embedded scikit-learn digits with the small CNN, every stage, one seed, with
  Sol-R (RigL from Init-S, ``configs/rigl95.py``; ``--config.sol_r=True`` adds it to any preset);
  under 10 minutes on a 2-core CPU (the memorization scores' two 64-model ensembles are ~half of
  it). The other presets leave the memorization stage off (two 64-model ensembles of their Sol-D's
  training; ``--config.memorization.enabled=True`` turns it on).
* ``cifar10``: everything on CIFAR-10 / ResNet-32 (``../shared/data/cifar10.npz`` offline).
* ``cifar10_cpu``: every stage on real CIFAR-10 pixels (``../shared/data/cifar10.npz``: the
  20,000-image class-balanced train subset, the full test set) in under two hours on 2 CPU cores.
  Departures from the study's protocol, each for that budget (``CIFAR10_CPU_DEPARTURES``, also
  stated in the report):
  ResNet-20 at half width (8/16/32 channels) instead of ResNet-32; 8 epochs for Sol-D and 6 for
  every sparse run instead of 200 / 250, with the schedules compressed to the same fractions
  (``snnjax.train.config_presets.cifar10_cpu``); two seeds for the table, the regimes, the sanity check and the
  Fisher trend, one seed (0) for label noise, the long-tailed disagreement runs, interpolation
  and closing the gap; Tr(H) from at most 20 Hutchinson probes on 512 examples (study: up to
  100 on 1,024), Tr(F) with 2 sampled labels per example (study: 5), the Jacobian norm on 500
  examples (study: 1,000), the sanity check with at most 50 probes; interpolation evaluates loss/accuracy and recomputes BatchNorm
  statistics on 5,000 training examples (study: all); data-scheduling scores from one sampled
  label per example. Sparsities 0.90, 0.95, 0.98 (label noise and disagreement at 0.95, the
  interpolation at 0.90, as the study).
* ``cifar10_fit``: the converged real-image study (5,000 CIFAR-10 images at 16x16, ResNet-20,
  every run trained to fit; ``CIFAR10_FIT_DEPARTURES``); ``cifar10_fit_budget``: its epoch-budget
  sweep (``scripts/budget_sweep.py``); ``cifar10_fit_explain``: the competing explanations
  (gradient flow, lottery tickets with rewinding, mode connectivity, masks at initialization) on
  its runs at sparsity 0.95, two seeds (``docs/results/cifar10_fit_explain``).
* ``paper``: the study's setups: CIFAR-100 with the 4x-wide ResNet-32 for the table, the
  regimes, the Fisher trend, disagreement and interpolation; CIFAR-10 / ResNet-32 for label noise.

Training configs are named by spec (``file.py:preset``, relative to this directory) per family
(``clean``: the table and the analyses; ``noisy``: label noise) and regime; the study sets each
run's ``seed``, ``sparsity`` and ``dense_workdir`` itself. ``train.overrides`` (a nested dict) is
merged into every run's config (e.g. ``{"num_epochs": 2}`` for a smoke test).
Every stage's settings start from its own defaults (``snnjax.studies.stages.<stage>``, gathered
by ``snnjax.studies.study.default_config``): ``measure`` (the table's protocol), ``regimes``,
``sanity``, ``per_layer``, ``fisher_trend``, ``label_noise``, ``memorization``, ``disagreement``,
``interpolation``,
``closing_gap``;
this file sets what each preset changes. ``--config.<stage>.enabled=False`` skips a stage.
``--config.tensorboard=True`` (any preset; needs tensorboardX) writes every run's training curves
and the study's curvature of it as TensorBoard event files in the run's work dir
(``tensorboard --logdir DIR``; docs/workflow.md); no run's hash changes.
"""

import os

import ml_collections

from snnjax.studies import study
from snnjax.train import config_presets

PRESETS = ("quick", "cifar10", "cifar10_cpu", "cifar10_cpu_budget", "cifar10_fit",
           "cifar10_fit_budget", "cifar10_fit_explain", "paper")

# What the cifar10_fit preset does differently from the study, and why (printed in the report).
CIFAR10_FIT_DEPARTURES = (
    "Data: 5,000 class-balanced images of the 20,000-image CIFAR-10 train subset of "
    "../shared/data/cifar10.npz, at 16x16 (exact 2x2 average pooling of the 32x32 pixels), no "
    "augmentation (the study's own CIFAR-10 loader had none); the full 10,000-image test set at "
    "16x16. Chosen by the convergence pilot (docs/results/pilot/): the cheapest setup in which "
    "Sol-D fits its clean train set (train error 0) and memorizes the noisy labels. The numbers "
    "are not comparable with full-CIFAR-10 results (test accuracy ~0.5).",
    "Model: ResNet-20 (16/32/64, option-A shortcuts, 0.27M weights) instead of the 4x-wide "
    "ResNet-32 (CIFAR-100 table) or ResNet-32 (the poster's label noise).",
    "Optimization: lr 0.1 decayed linearly to 0 (study: x0.1 steps); every clean run 20 epochs "
    "(study: Sol-D 200, Sol-F / Sol-S 250), label-noise runs 30 epochs at lr 0.1 (poster: "
    "lr 0.02 with x0.1 at 40 / 80). Sol-F and Sol-S get the same budget as Sol-D; each run's "
    "train error is checked for a plateau (Regimes section) and one that had not stopped moving "
    "is flagged. `configs/study.py:cifar10_fit_budget` reruns the 0.95 comparison at 0.5x and 2x "
    "the sparse budget (the head-start check).",
    "Sparsities 0.80, 0.90, 0.95 (study: 0.80-0.98): in the pilot Sol-S fits its train set at 0.90 "
    "within the budget and does not at 0.98 (train error 0.24 and still falling), so 0.98 would "
    "only measure the budget. Label noise and disagreement at 0.95, interpolation at 0.90 (as the "
    "study), closing the gap at 0.95 (the largest gap).",
    "Seeds: three (0, 1, 2) for the table, regimes, sanity check, per-layer traces, Fisher trend "
    "and Sol-R; two (0, 1) for label noise; one (0) for the long-tailed disagreement runs, "
    "interpolation and closing the gap.",
    "Measurements: Tr(H) from at most 20 Hutchinson probes (stop at a 2% 95% half-width, after "
    "10) on 512 train examples (study: up to 100 on 1,024, 0.1% relative change); Tr(F) on 1,000 "
    "examples with 2 labels sampled per example (study: 5); the Jacobian norm on 1,000 examples "
    "(as the study). Interpolation on all 5,000 train examples.",
    "Memorization scores (Feldman & Zhang): off. Two ensembles of 64 subset-trained ResNet-20s at "
    "20 epochs on 3,500 images are ~9M images: ~1.7 hours at ~1,500 images/s on 2 cores, more "
    "than the whole preset; `--config.memorization.enabled=True` turns them on (an accelerator "
    "run; on in the quick preset).",
)

# What the cifar10_cpu preset does differently from the study, and why (printed in the report).
CIFAR10_CPU_DEPARTURES = (
    "Data: the 20,000-image class-balanced CIFAR-10 train subset of ../shared/data/cifar10.npz "
    "(the full 10,000-image test set), not the 50,000 images: the numbers are not comparable "
    "with full-CIFAR-10 results.",
    "Model: ResNet-20 at half width (8/16/32 channels, option-A shortcuts, ~68k weights) instead "
    "of ResNet-32 (16/32/64) or the 4x-wide ResNet-32: ~650 instead of ~190 train images/s on 2 "
    "cores.",
    "Epochs: Sol-D 8 (study: 200), Sol-F and Sol-S 6 each (study: 250), the study's step "
    "schedules compressed to the same fractions of the run (Sol-D lr 0.1, x0.1 at 50% and 75%; "
    "Sol-F / Sol-S lr 0.1 reset, x0.1 at 40/60/80%; label noise lr 0.02, x0.1 at 1/3 and 2/3). "
    "Short training favours Sol-F, which starts from trained weights.",
    "Seeds: two (0, 1) for the table, the regimes, the sanity check and the Fisher trend; one "
    "(0) for label noise, the long-tailed disagreement runs, interpolation and closing the gap.",
    "Measurements: Tr(H) from at most 20 Hutchinson probes on 512 train examples (study: up to "
    "100 on 1,024); Tr(F) with 2 labels sampled per example on 1,000 (study: 5); the Jacobian "
    "norm on 500 examples (study: 1,000); the sanity check with at most 50 probes.",
    "Per-epoch evaluation on 5,000 training examples (all of the test set), every second epoch "
    "for clean runs; final numbers use the whole train and test splits.",
    "Interpolation: loss/accuracy and the BatchNorm recomputation on 5,000 training examples "
    "(study: all); data-scheduling scores from one sampled label per example.",
    "Memorization scores: off (64 subset-trained ResNet-20s would exceed the budget; on in the "
    "quick preset).",
)


def _measure_settings(config: ml_collections.ConfigDict, preset: str) -> None:
  settings = config.measure
  if preset == "cifar10_fit":
    settings.hessian.num_examples = 512
    settings.hessian.max_probes = 20
    settings.hessian.rtol = 0.02
    settings.fisher.num_samples = 2
  if preset == "cifar10_cpu":
    settings.hessian.num_examples = 512
    settings.hessian.max_probes = 20
    settings.hessian.rtol = 0.02
    settings.fisher.num_samples = 2
    settings.jacobian.num_examples = 500
  if preset == "quick":
    settings.hessian.num_examples = 512
    settings.hessian.max_probes = 40
    settings.fisher.num_examples = 500
    settings.jacobian.num_examples = 500


def get_config(preset: str = "quick"):
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r} for study.py; choose one of {PRESETS}")
  if preset.endswith("_budget"):
    return _budget_sweep(preset[:-len("_budget")])
  if preset == "cifar10_fit_explain":
    return _explanations("cifar10_fit")
  config = study.default_config()
  config.preset = preset
  config.configs_dir = os.path.dirname(os.path.abspath(__file__))

  # Training configs per family and regime (specs relative to configs_dir).
  train_preset = {"quick": "quick", "cifar10": "", "cifar10_cpu": "cifar10_cpu",
                  "cifar10_fit": "cifar10_fit", "paper": "cifar100"}[preset]
  noisy_preset = {"quick": "quick_noisy", "cifar10": "noisy", "cifar10_cpu": "cifar10_cpu_noisy",
                  "cifar10_fit": "cifar10_fit_noisy", "paper": "noisy"}[preset]
  for regime, path in (("dense", "dense.py"), ("finetune", "finetune95.py"),
                       ("scratch", "scratch95.py"), ("rigl", "rigl95.py")):
    config.train[f"clean_{regime}"] = f"{path}:{train_preset}" if train_preset else path
    config.train[f"noisy_{regime}"] = f"{path}:{noisy_preset}"

  config.sol_r = preset in ("quick", "cifar10_fit")  # Sol-R (RigL from Init-S) in the comparisons
  # The competing explanations (gradient flow, lottery tickets with rewinding, masks at init):
  # on in quick only (their extra runs: 14 per seed, each as short as Sol-S).
  for stage in ("gradient_flow", "lottery", "masks_at_init", "explanations"):
    config[stage].enabled = preset == "quick"
  _measure_settings(config, preset)
  config.fisher_trend.every_epochs = {"quick": 2, "cifar10": 10, "cifar10_cpu": 2,
                                      "cifar10_fit": 2, "paper": 25}[preset]
  config.fisher_trend.num_examples = 256 if preset == "quick" else 512
  config.interpolation.num_examples = 500 if preset == "quick" else 2000
  config.sanity.num_examples = 128 if preset == "paper" else 256
  if preset == "quick":
    # 64 subset models per ensemble (clean and noisy) at 8 of Sol-D's 12 epochs (its schedule
    # rescaled): the models fit their subsets (clean) and the ensembles stay ~1-2 min each.
    config.memorization.scores.num_epochs = 8
  if preset != "quick":
    # Exact scores cost C backward passes per training example: sample the labels instead.
    config.closing_gap.scores.kind = "mc"
    config.closing_gap.scores.num_samples = {"cifar10": 2, "cifar10_cpu": 1, "cifar10_fit": 1,
                                             "paper": 1}[preset]
    config.memorization.fisher.kind = "mc"
    # 2 x 64 subset-trained copies of Sol-D's training: on with --config.memorization.enabled=True
    # (on an accelerator; see snnjax.train.ensemble).
    config.memorization.enabled = False

  if preset in ("cifar10_cpu", "cifar10_fit"):  # the real-image presets on 2 CPU cores
    config.departures = (CIFAR10_CPU_DEPARTURES if preset == "cifar10_cpu"
                         else CIFAR10_FIT_DEPARTURES)
    config.label_noise.seeds = (0,)
    config.disagreement.sparsity = 0.95
    config.disagreement.seeds = (0,)
    config.interpolation.seeds = (0,)
    config.interpolation.eval_examples = 5000
    config.interpolation.bn_examples = 5000
    config.sanity.max_probes = 50
    config.closing_gap.seeds = (0,)
  if preset == "cifar10_cpu":
    config.seeds = (0, 1)
    config.sparsities = (0.90, 0.95, 0.98)
    config.fisher_trend.sparsities = (0.90, 0.98)
  if preset == "cifar10_fit":
    config.seeds = (0, 1, 2)
    # The pilot: Sol-S fits at 0.90 in 20 epochs, not at 0.98 (train error 0.24, still falling).
    config.sparsities = (0.80, 0.90, 0.95)
    config.fisher_trend.sparsities = (0.80, 0.95)
    config.closing_gap.sparsity = 0.95
    config.label_noise.seeds = (0, 1)
  if preset == "paper":
    # Label noise on CIFAR-10 / ResNet-32 (the poster), everything else on CIFAR-100.
    config.disagreement.sparsity = 0.97
  return config


def _budget_sweep(base: str):
  """``base``'s table at sparsity 0.95 alone, for an epoch-budget sweep of Sol-F and Sol-S.

  Pointed at the ``base`` study directory it reuses that study's Sol-D (same config, same run)
  and trains Sol-F and Sol-S with ``--config.sparse_epochs=E`` (the base preset's own epochs: its
  runs, reused); each budget writes its own report folder::

    python scripts/study.py --config configs/study.py:cifar10_fit_budget \\
        --config.sparse_epochs=40 --config.report_dir=report-epochs40 \\
        --workdir runs/study-cifar10_fit

  ``cifar10_cpu_budget``: seed 0 (6 epochs = the study's runs); ``cifar10_fit_budget``: the
  table's three seeds (20 epochs = the study's runs; 10 and 40 are 0.5x and 2x).
  """
  config = get_config(base)
  config.preset = f"{base}_budget"
  config.seeds = (0,) if base == "cifar10_cpu" else tuple(config.seeds)
  config.sparsities = (0.95,)
  config.sparse_epochs = (6 if base == "cifar10_cpu" else
                          config_presets.FIT_EPOCHS["clean"])
  config.sol_r = False
  config.report_dir = "report-budget"
  for stage in ("fisher_trend", "label_noise", "memorization", "disagreement", "interpolation",
                "sanity", "per_layer", "closing_gap", "dynamic_sparsity"):
    config[stage].enabled = False
  config.departures = tuple(config.departures) + (
      "Epoch-budget sweep: only the table at sparsity 0.95 with one seed; the sparse runs' "
      "epochs are `sparse_epochs`, their schedules rescaled to the same fractions.",)
  return config


def _explanations(base: str):
  """The competing explanations (gradient flow, lottery tickets with rewinding, mode
  connectivity, masks at initialization) on ``base``'s real images, beside its table at 0.95.

  The converged real-image study (``cifar10_fit``: 42 runs, ~90 min on 2 cores) has no room for
  the explanations' 14 extra runs per seed, so they have their own preset: ``base``'s runs at
  sparsity 0.95 (the sparsity with the largest Sol-S / Sol-F curvature gap) for two seeds, the
  table there and the four stages; every other analysis is off. Its Sol-D, Sol-F and Sol-S have
  the base study's identities, but the lottery stage needs Sol-D's saved step-k state and the
  gradient-flow stage the runs' gradient-norm records (runtime fields, set while they train), so
  give it its own directory::

    python scripts/study.py --config configs/study.py:cifar10_fit_explain \\
        --workdir runs/study-cifar10_fit_explain

  Cost on 2 CPU cores: see ``docs/results/cifar10_fit_explain/README.md``.
  """
  config = get_config(base)
  config.preset = f"{base}_explain"
  config.seeds = (0, 1)
  config.sparsities = (0.95,)
  config.sol_r = False
  config.report_dir = "report"
  for stage in ("fisher_trend", "label_noise", "memorization", "disagreement", "interpolation",
                "sanity", "per_layer", "closing_gap", "dynamic_sparsity"):
    config[stage].enabled = False
  for stage in ("gradient_flow", "lottery", "masks_at_init", "explanations"):
    config[stage].enabled = True
  # Barriers from 5,000 training inputs' BatchNorm statistics (the interpolation stage's setting).
  config.lottery.bn_examples = 5000
  config.departures = tuple(config.departures) + (
      "Competing explanations on real images: the table at sparsity 0.95 only, two seeds (0, 1), "
      "Sol-R and every analysis but the four explanation stages off; barriers recompute BatchNorm "
      "statistics from 5,000 training inputs.",)
  return config

