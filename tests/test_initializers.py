"""Tests for snnjax.models.initializers."""

import jax
import numpy as np

from snnjax.models import initializers


def test_kaiming_fan_out_std_for_conv_and_dense():
  conv = initializers.kaiming_normal_fan_out(jax.random.key(0), (3, 3, 64, 128))
  np.testing.assert_allclose(np.std(conv), np.sqrt(2.0 / (9 * 128)), rtol=0.02)
  dense = initializers.kaiming_normal_fan_out(jax.random.key(1), (512, 256))
  np.testing.assert_allclose(np.std(dense), np.sqrt(2.0 / 256), rtol=0.02)
  # Untruncated normal: some draws lie beyond 2 standard deviations (~4.6%).
  assert np.mean(np.abs(dense) > 2 * np.sqrt(2.0 / 256)) > 0.03


def test_head_init():
  head = initializers.head(7)
  params = head.init(jax.random.key(0), np.zeros((1, 1000), np.float32))["params"]
  assert params["kernel"].shape == (1000, 7)
  np.testing.assert_allclose(np.std(params["kernel"]), 0.01, rtol=0.05)
  np.testing.assert_array_equal(params["bias"], 0.0)
