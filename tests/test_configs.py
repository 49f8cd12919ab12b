"""The training config files under configs/: every file x preset loads, validates, carries the fields
its name promises and matches the committed per-spec hashes (run hashes of cached studies depend on
every field); the files share one definition (snnjax.train.config_presets), without sys.path edits."""

import hashlib
import json
import os

import pytest

from snnjax import models
from snnjax.train import config_io, config_presets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
HASHES = os.path.join(ROOT, "tests", "data", "config_hashes.json")
IDENTITIES = os.path.join(ROOT, "tests", "data", "identity_hashes.json")

# file name -> (regime, sparsity)
TRAIN_FILES = {
    "default": ("dense", 0.0), "dense": ("dense", 0.0),
    "finetune90": ("finetune", 0.90), "finetune94": ("finetune", 0.94),
    "finetune95": ("finetune", 0.95), "finetune96": ("finetune", 0.96),
    "scratch90": ("scratch", 0.90), "scratch94": ("scratch", 0.94),
    "scratch95": ("scratch", 0.95), "scratch96": ("scratch", 0.96),
    "lottery95": ("lottery", 0.95), "rigl95": ("rigl", 0.95), "set95": ("set", 0.95),
}
SPECS = [f"configs/{name}.py" + (f":{p}" if p else "")
         for name in TRAIN_FILES for p in config_presets.PRESETS]


def spec_digest(d: dict) -> str:
  """sha256 (16 hex digits) of a config dict, every field included, key order ignored."""
  text = json.dumps(d, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def load(spec: str):
  return config_io.load_config_spec(os.path.join(ROOT, spec))


def _name_and_preset(spec: str):
  path, _, preset = spec.partition(":")
  return os.path.basename(path).removesuffix(".py"), preset


@pytest.mark.parametrize("spec", SPECS)
def test_every_file_and_preset_loads_validates_and_names_its_fields(spec):
  config = load(spec)
  config_io.validate_config(config, models.model_names())
  name, preset = _name_and_preset(spec)
  regime, sparsity = TRAIN_FILES[name]
  assert config.regime == regime
  assert config.sparsity == sparsity
  noisy = preset.endswith("noisy")
  assert config.dataset.label_noise == (0.3 if noisy else 0.0)
  expected_data = {"quick": "digits", "quick_noisy": "digits", "cifar100": "cifar100"}
  assert config.dataset.name == expected_data.get(preset, "cifar10")
  if regime == "dense":
    assert (config.dense_workdir, config.dense_config) == ("", "")
  else:
    assert config.dense_workdir == "runs/dense" + (f"-{preset}" if preset else "")
    assert config.dense_config == "configs/dense.py" + (f":{preset}" if preset else "")
    assert config.prerequisites == ("train" if preset.startswith("quick") else "error")
    # The sparse runs' own schedule: the poster's, the main table's for cifar100.
    if preset == "":
      assert (config.optim.lr, tuple(config.optim.boundaries_epochs), config.num_epochs) == (
          0.02, (40, 80), 120)
    if preset == "cifar100":
      assert (config.optim.lr, tuple(config.optim.boundaries_epochs), config.num_epochs) == (
          0.1, (100, 150, 200), 250)
  if preset.startswith("cifar10_cpu"):
    sparse = regime != "dense"
    assert config.num_epochs == config_presets.CPU_EPOCHS["sparse" if sparse else "dense"]
    assert config.model.name == "resnet20"


def test_configs_match_the_committed_hashes():
  """Each spec's config, field by field, as when the hashes were recorded (any change to a field
  changes the run hashes of cached studies; regenerate tests/data/config_hashes.json on purpose)."""
  with open(HASHES) as f:
    expected = json.load(f)
  got = {spec: spec_digest(config_io.config_to_dict(load(spec))) for spec in SPECS}
  assert got == expected


def test_run_identities_never_change():
  """The identity (``config_io.result_fields``) of every spec as committed: a new config field
  must leave it alone (at its default), or every cached run and study would be retrained."""
  with open(IDENTITIES) as f:
    expected = json.load(f)
  got = {spec: config_io.digest(config_io.result_fields(config_io.config_to_dict(load(spec))))
         for spec in expected}
  assert got == expected


def test_only_dynamic_sparse_configs_have_a_dst_block():
  """config.dst exists in rigl / set configs only (the other runs' identities are unchanged), with
  the RigL paper's defaults, and the quick presets' cadence gives several updates."""
  for spec in SPECS:
    config = load(spec)
    regime = config.regime
    assert ("dst" in config) == (regime in config_io.DST_REGIMES), spec
    if regime in config_io.DST_REGIMES:
      quick = _name_and_preset(spec)[1].startswith("quick")
      assert config.dst.to_dict() == {
          "update_every": config_presets.QUICK_UPDATE_EVERY if quick else 100,
          "end_fraction": 0.75, "drop_fraction": 0.3, "decay": "cosine", "seed": 0,
          # SET's original rule, off (config_io.IDENTITY_DEFAULTS: not in any identity)
          "drop_rule": "magnitude", "grow_init": "zero", "grow_std": 0.1,
          "update_every_epochs": 0}
  bad = load("configs/rigl95.py:quick")
  bad.dst.decay = "linear"
  with pytest.raises(config_io.UserError, match="dst.decay"):
    config_io.validate_config(bad)


def test_unknown_preset_names_the_file():
  with pytest.raises(ValueError, match=r"unknown preset 'bogus' for scratch95\.py"):
    load("configs/scratch95.py:bogus")


@pytest.mark.parametrize("name", [n for n in TRAIN_FILES if n not in ("default", "dense")])
def test_sparse_files_are_the_shared_builder(name):
  regime, sparsity = TRAIN_FILES[name]
  assert config_presets.sparse_name(regime, sparsity) == name
  for preset in config_presets.PRESETS:
    spec = f"configs/{name}.py" + (f":{preset}" if preset else "")
    built = config_presets.sparse_config(regime, sparsity, preset)
    assert config_io.config_to_dict(load(spec)) == config_io.config_to_dict(built)


def test_dense_and_default_files_are_the_shared_defaults():
  assert config_io.config_to_dict(load("configs/default.py")) == config_io.config_to_dict(
      config_presets.base_config())
  for preset in config_presets.PRESETS:
    suffix = f":{preset}" if preset else ""
    assert config_io.config_to_dict(load("configs/dense.py" + suffix)) == config_io.config_to_dict(
        config_presets.dense_config(preset))
    assert config_io.config_to_dict(load("configs/default.py" + suffix)) == (
        config_io.config_to_dict(config_presets.default_config(preset)))


def test_no_config_file_edits_sys_path():
  for name in sorted(os.listdir(CONFIGS)):
    if name.endswith(".py"):
      with open(os.path.join(CONFIGS, name)) as f:
        assert "sys.path" not in f.read(), f"configs/{name} edits sys.path"


def test_the_study_configs_training_specs_load():
  """configs/study.py names its training configs by spec relative to configs/."""
  for preset in ("quick", "cifar10", "cifar10_cpu", "paper"):
    study = load(f"configs/study.py:{preset}")
    for key, spec in study.train.items():
      if isinstance(spec, str) and key != "overrides":
        path, sep, arg = spec.partition(":")
        config_io.validate_config(config_io.load_config_spec(
            os.path.join(study.configs_dir, path) + sep + arg))


def test_a_standalone_user_config_file_loads(tmp_path):
  path = tmp_path / "mine.py"
  path.write_text("import ml_collections\n\n\ndef get_config(arg='a'):\n"
                  "  return ml_collections.ConfigDict({'arg': arg})\n")
  assert config_io.load_config_spec(str(path)).arg == "a"
  assert config_io.load_config_spec(f"{path}:b").arg == "b"


def test_config_presets_is_a_training_layer_module():
  """The training layer imports only snnjax.data/models/sparsity/train (never snnjax.studies)."""
  with open(config_presets.__file__) as f:
    imports = [l.split()[1] for l in f if l.startswith(("import ", "from "))]
  assert all(not m.startswith("snnjax") or m.split(".")[1] in ("data", "models", "sparsity", "train")
             for m in imports), imports


def test_new_fields_at_their_defaults_keep_identities_and_change_them_when_set():
  """dataset.downsample and optim.schedule are nested identity defaults: left out at 1 / step
  (every earlier run keeps its identity), part of the identity otherwise; bad values refused."""
  from snnjax.errors import UserError  # pylint: disable=import-outside-toplevel
  config = load("configs/scratch95.py:quick")
  base = config_io.identity_hash(config)
  assert "downsample" not in config_io.result_fields(config_io.config_to_dict(config))["dataset"]
  config.dataset.downsample = 2
  assert config_io.identity_hash(config) != base
  config.dataset.downsample = 1
  config.optim.schedule = "cosine"
  assert config_io.identity_hash(config) != base
  config.optim.schedule = "step"
  assert config_io.identity_hash(config) == base
  for field, value in (("schedule", "exp"),):
    bad = load("configs/dense.py:quick")
    bad.optim[field] = value
    with pytest.raises(UserError, match="optim.schedule"):
      config_io.validate_config(bad)
  bad = load("configs/dense.py:quick")
  bad.dataset.downsample = 0
  with pytest.raises(UserError, match="downsample"):
    config_io.validate_config(bad)
