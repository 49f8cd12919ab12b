"""Smoke tests of the benchmarks: ``scripts/bench.py --smoke`` end to end (JSON keys, no timings
asserted), its error handling, the CPU-variant building blocks, and the PyTorch peer script when
its venv exists."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import cpu_speed  # noqa: E402  pylint: disable=wrong-import-position
from benchmarks import jax_bench  # noqa: E402  pylint: disable=wrong-import-position

TORCH_PYTHON = "/root/peers/bin/python"


def _run(args, **kw):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench.py"), *args],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600, **kw)


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "bench.json"
  proc = _run(["--smoke", "--out", str(out)])
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(out) as f:
    return json.load(f), proc.stdout


def test_smoke_machine_info(smoke_report):
  res, stdout = smoke_report
  m = res["machine"]
  for key in ("cpu_model", "cores", "backend", "device_kind", "date", "loadavg_1m"):
    assert key in m
  for pkg in ("jax", "jaxlib", "flax", "optax"):
    assert m["versions"][pkg]
  assert res["smoke"] is True
  assert "train:" in stdout and "estimators:" in stdout


def test_smoke_train_section(smoke_report):
  t = smoke_report[0]["train"]
  for variant in ("unmasked", "dense_mask", "masked"):
    for key in ("step_ms", "min_ms", "images_per_s", "compile_s"):
      assert t[variant][key] > 0
  assert t["masked"]["masked_weights_stay_zero"] is True
  assert t["masked_over_unmasked"] > 0 and t["masked_over_dense_mask"] > 0


def test_smoke_estimators_section(smoke_report):
  e = smoke_report[0]["estimators"]
  assert e["gradient_s"] > 0 and e["forward_s"] > 0
  assert e["hvp"]["over_gradient"] > 0
  # Buffer-assignment sizes are available on CPU; an HVP keeps more intermediates than a gradient.
  assert e["hvp"]["memory_gradient"]["temp_bytes"] > 0
  assert e["hvp"]["temp_memory_ratio"] > 1
  flops = e["gflop"]  # compile-time counts: an HVP does more than a quadratic form, which does more
  assert flops["hvp"] > flops["quad_form"] > flops["gradient"] > 0  # than a gradient
  for key in ("per_probe_s", "setup_s", "per_probe_over_gradient"):
    assert key in e["hutchinson"]
  assert e["fisher_mc"]["over_gradient"] > 0
  assert e["per_example_grad_norms"]["over_gradient"] > 0
  assert e["fisher_exact"]["per_example_over_gradient"] > 0
  assert e["jacobian_exact"]["over_forward"] > 0


def test_smoke_dst_section(smoke_report):
  d = smoke_report[0]["dst"]
  assert d["step_ms"] > 0 and d["rigl_step_over_plain"] > 1
  for name in ("rigl", "set"):
    assert d[name]["update_ms"] > 0 and d[name]["update_over_step"] > 0
  assert "dst:" in smoke_report[1]


def test_smoke_scaling_and_peers(smoke_report):
  res = smoke_report[0]
  rows = res["scaling"]["rows"]
  assert [r["devices"] for r in rows] == [1, 2]
  assert all("images_per_s" in r for r in rows), rows
  assert "overhead" in res["scaling"]["note"]
  assert "skipped" in res["peers"]


def test_bad_sections_is_user_error(tmp_path):
  proc = _run(["--smoke", "--sections", "train,bogus", "--out", str(tmp_path / "b.json")])
  assert proc.returncode == 2
  assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "b.json").exists()


def test_setup_model_kwargs():
  full = jax_bench.Setup.full(materialize=False)
  assert full.model_kwargs() == {"width": 1.0, "shortcut": "A", "materialize": False}
  assert full.model_kwargs("B")["shortcut"] == "B"
  assert jax_bench.Setup.smoke().model_kwargs() == {"width": 0.25}


def test_peer_ratios_pair_the_right_times():
  ours = {"train_step_s": 2.0, "train_step_masked_s": 3.0, "train_step_min_s": 1.0,
          "train_step_masked_min_s": 1.5}
  for s in ("A", "B"):
    ours.update({f"gradient_train_mode_s_{s}": 4.0, f"gradient_train_mode_min_s_{s}": 2.0,
                 f"hutchinson_per_probe_s_{s}": 6.0, f"hutchinson_per_probe_min_s_{s}": 3.0,
                 f"hutchinson_trace_s_{s}": 30.0, f"per_example_grad_norms_s_{s}": 8.0,
                 f"per_example_grad_norms_min_s_{s}": 4.0})
  theirs = {"train_step": {"dense_s": 1.0, "masked_s": 1.0, "dense_min_s": 0.5,
                           "masked_min_s": 0.5},
            "gradient_s": 2.0, "gradient_min_s": 1.0,
            "pyhessian": {"per_probe_s": 3.0, "per_probe_min_s": 1.5, "trace_s": 14.0,
                          "setup_s": 1.0}}
  tb = dict(theirs, backpack={"per_sample_grad_norms_s": 4.0, "per_sample_grad_norms_min_s": 2.0})
  med = jax_bench._peer_ratios(ours, theirs, tb, "median")  # pylint: disable=protected-access
  mins = jax_bench._peer_ratios(ours, theirs, tb, "min")  # pylint: disable=protected-access
  assert med == {"train_step_dense_A": 2.0, "train_step_masked_A": 3.0,
                 "gradient_train_mode_A": 2.0, "gradient_train_mode_B": 2.0,
                 "hutchinson_per_probe_A": 2.0, "hutchinson_per_probe_B": 2.0,
                 "hutchinson_trace_incl_setup_A": 2.0, "hutchinson_trace_incl_setup_B": 2.0,
                 "per_sample_grad_norms_B_vs_backpack": 2.0}
  assert mins["train_step_dense_A"] == 2.0 and mins["per_sample_grad_norms_B_vs_backpack"] == 2.0
  assert "hutchinson_trace_incl_setup_A" not in mins
  # BackPACK's option-A failure: no ratio rather than a crash.
  failed = jax_bench._peer_ratios(  # pylint: disable=protected-access
      ours, theirs, dict(theirs, backpack={"error": "x"}), "median")
  assert "per_sample_grad_norms_B_vs_backpack" not in failed


@pytest.mark.parametrize("impl", ["nchw", "im2col", "shift"])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_impls_match_lax(impl, stride):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 3))
  k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 4))
  ref = cpu_speed.conv(x, k, stride, "nhwc")
  got = cpu_speed.conv(jnp.transpose(x, (0, 3, 1, 2)) if impl == "nchw" else x, k, stride, impl)
  if impl == "nchw":
    got = jnp.transpose(got, (0, 2, 3, 1))
  chex.assert_trees_all_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["div", "exp", "barrier"])
@pytest.mark.parametrize("jit", [False, True])
def test_materialize_is_identity_with_identity_gradient(method, jit):
  x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4)), jnp.float32)

  def fn(t):
    return cpu_speed.materialize(t, method)
  fn = jax.jit(fn) if jit else fn
  out, vjp = jax.vjp(fn, x)
  chex.assert_trees_all_equal(out, x)
  chex.assert_trees_all_equal(vjp(jnp.ones_like(x))[0], jnp.ones_like(x))


def test_materialize_div_survives_nonfinite_first_entry():
  x = jnp.asarray([jnp.inf, 1.0, -2.0])
  out = cpu_speed.materialize(x, "div")
  assert np.isinf(out[0]) and float(out[1]) == 1.0 and float(out[2]) == -2.0


@pytest.mark.skipif(not os.path.exists(TORCH_PYTHON), reason="no PyTorch peer venv")
def test_torch_peers_smoke():
  proc = subprocess.run([TORCH_PYTHON, os.path.join(ROOT, "benchmarks", "torch_peers.py"),
                         "--smoke"], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  res = json.loads(proc.stdout)
  assert res["machine"]["torch_threads"] >= 1
  for name in ("resnet8_A", "resnet8_B"):
    assert res[name]["train_step"]["dense_s"] > 0
    assert res[name]["gradient_s"] > 0
    assert res[name]["pyhessian"]["probes"] == 2
  assert res["resnet8_B"]["backpack"]["per_sample_grad_norms_s"] > 0
  assert "error" in res["resnet8_A"]["backpack"]  # BackPACK's converter rejects option A


def test_device_check_smoke_writes_json_and_markdown(tmp_path):
  """``scripts/bench.py --preset device --smoke``: every section's keys and the Markdown table."""
  sys.path.insert(0, os.path.join(ROOT, "scripts"))
  import bench  # noqa: E402  pylint: disable=import-outside-toplevel,import-error
  out = tmp_path / "device.json"
  assert bench.main(["--preset", "device", "--smoke", "--out", str(out)]) == 0
  res = json.loads(out.read_text())
  for name, precisions in (("resnet32", ("float32", "bfloat16")), ("wide_resnet32", ("float32",))):
    for precision in precisions:
      r = res[name][precision]
      assert r["finite"] and r["step_ms"] > 0 and r["epoch_s"] > 0
      assert r["epoch_steps"] == r["epoch_images"] // r["batch"]
  probes = res["estimators"]["probes"]
  # Sequential and vmapped probes are the same probes: the same estimate.
  assert probes["sequential"]["value"] == pytest.approx(probes["vmapped"]["value"], rel=1e-5)
  assert res["defaults"]["backend"] == "cpu"
  md = (tmp_path / "device.md").read_text()
  assert "| resnet32 epoch" in md and "vmapped / sequential probes" in md


def test_cpu_rewrites_switch_off_on_other_backends(monkeypatch):
  """The grouped-conv rewrite of the estimators and the ResNet residual materialization are on
  for the CPU backend only: forcing the backend's name to gpu / tpu turns both off."""
  from benchmarks import device_check  # noqa: E402  pylint: disable=import-outside-toplevel
  assert device_check.backend_defaults()["estimators_grouped_conv_rewrite"] is True
  assert device_check.backend_defaults()["resnet_residual_materialize"] is True
  for backend in ("gpu", "tpu"):
    monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
    got = device_check.backend_defaults()
    assert got == {"backend": backend, "estimators_grouped_conv_rewrite": False,
                   "resnet_residual_materialize": False}
