"""Tests of the measurement settings (the study's protocol by default) and the train subset."""

import json

import numpy as np
import pytest

from snnjax.errors import UserError
from snnjax.studies import measure


def test_defaults_are_the_studys_protocol():
  s = measure.default_settings()
  assert (s.hessian.num_examples, s.hessian.max_probes, s.hessian.params) == (1024, 100, "all")
  assert s.hessian.method == "hutchinson" and s.hessian.bn_mode == "eval"
  assert (s.fisher.kind, s.fisher.num_examples, s.fisher.num_samples) == ("mc", 1000, 5)
  assert s.fisher.params == "kernels"
  assert s.jacobian.squared and s.jacobian.num_projections == 0
  measure.validate_settings(s)
  text = " ".join(measure.describe_settings(s))
  assert "1024 train examples" in text and "5 labels sampled" in text
  assert "conv and linear weights only" in text and "squared Frobenius" in text


@pytest.mark.parametrize("path,value", [
    (("hessian", "method"), "lanczos"), (("fisher", "kind"), "ggn"),
    (("fisher", "params"), "biases"), (("hessian", "max_probes"), 0),
    (("jacobian", "num_examples"), 0), (("hessian", "bn_mode"), "both")])
def test_bad_settings_raise_user_error(path, value):
  s = measure.default_settings()
  s[path[0]][path[1]] = value
  with pytest.raises(UserError, match=path[1]):
    measure.validate_settings(s)


def test_projections_need_the_squared_norm():
  s = measure.default_settings()
  s.jacobian.num_projections = 4
  s.jacobian.squared = False
  with pytest.raises(UserError, match="squared"):
    measure.validate_settings(s)


def test_train_subset_is_seeded_and_nested():
  a = measure.train_subset(100, 10, 0)
  b = measure.train_subset(100, 30, 0)
  np.testing.assert_array_equal(a, b[:10])
  assert len(set(b.tolist())) == 30
  assert len(measure.train_subset(5, 30, 0)) == 5
  assert not np.array_equal(a, measure.train_subset(100, 10, 1))


def test_mask_density_counts_every_prunable_leaf():
  # "b" is prunable but left dense (it counts), "c" is not prunable (it does not).
  mask = {"a": np.array([True, False, False, False]), "b": np.ones(4, bool),
          "c": np.ones(3, bool)}
  out = measure.mask_density(mask, {"a": True, "b": True, "c": False})
  assert out == {"prunable_active": 5, "prunable_total": 8, "measured_sparsity": 0.375}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  from snnjax.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  from tests._train_configs import tiny  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path_factory.mktemp("measure") / "run")
  config = tiny(epochs=2)
  config.checkpoint_every_epochs = 2
  train_and_evaluate(config, workdir)
  return workdir


def _measure_cli(workdir, out, *overrides):
  from snnjax.studies import commands  # pylint: disable=import-outside-toplevel
  assert commands.measure_main(["measure.py", "--workdir", workdir, "--out", out, "--quiet",
                           "--config.hessian.num_examples=16", "--config.hessian.min_probes=2",
                           "--config.hessian.rtol=0", "--config.fisher.num_examples=16",
                           "--config.jacobian.enabled=false", *overrides]) == 0
  with open(out + ".json") as f:
    return json.load(f)


def test_measure_cli_overrides_change_the_settings_used(tiny_run, tmp_path):
  """--config.* overrides reach the measurement: the probes and examples the output reports."""
  three = _measure_cli(tiny_run, str(tmp_path / "a"), "--config.hessian.max_probes=3")
  five = _measure_cli(tiny_run, str(tmp_path / "b"), "--config.hessian.max_probes", "5",
                      "--config.fisher.kind=exact")
  (row3,), (row5,) = three["rows"], five["rows"]
  assert row3["measurement"]["tr_h"]["num_probes"] == 3
  assert row5["measurement"]["tr_h"]["num_probes"] == 5
  assert row3["measurement"]["tr_h"]["num_examples"] == 16
  assert row3["measurement"]["jacobian"] is None              # --config.jacobian.enabled=false
  assert (three["settings"]["fisher"]["kind"], five["settings"]["fisher"]["kind"]) == ("mc", "exact")
  assert any("exact expectation" in t for t in five["settings_text"])
  # Every ± says what it covers, in the JSON and in measure.md's columns.
  assert "random probes only" in row3["measurement"]["tr_h"]["plus_minus"]
  assert "labels sampled" in row3["measurement"]["tr_f"]["plus_minus"]
  assert row5["measurement"]["tr_f"]["plus_minus"] is None and five["plus_minus"]["tr_f"] is None
  head = open(str(tmp_path / "a") + ".md").read().splitlines()[0]
  assert "Tr(F) ± stderr: examples + sampled labels" in head and "Tr(H) ± stderr: probes" in head
