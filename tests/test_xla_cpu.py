"""snnjax.xla_cpu.tune: adds the flag once, respects the user's XLA_FLAGS and the opt-out."""

import importlib.metadata

from snnjax import xla_cpu


def test_tune_appends_once_and_respects_settings(monkeypatch):
  monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.10.2")
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert xla_cpu.tune(env)
  assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=4 {xla_cpu.FLAG}"
  assert not xla_cpu.tune(env)  # already there
  assert not xla_cpu.tune({"SNNJAX_XLA_TUNING": "0"})
  user = {"XLA_FLAGS": f"--{xla_cpu.FLAG_NAME}=individual_convolution"}
  assert not xla_cpu.tune(user) and user["XLA_FLAGS"].endswith("=individual_convolution")


def test_unverified_jaxlib_is_left_alone(monkeypatch):
  monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.11.2")
  env = {}
  assert not xla_cpu.tune(env) and "XLA_FLAGS" not in env
