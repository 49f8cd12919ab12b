"""Recomputing BatchNorm running statistics for a new set of weights.

Used at every point theta(alpha) of an interpolation: the stored statistics belong to the endpoint
networks, not to the weights in between. The statistics are recomputed as exact population statistics
of the training set (one pass in train mode over equal-size batches), not as a running average.
"""

from __future__ import annotations

import functools

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def _train_mode_stats(apply_fn, params, batch_stats, x):
  _, updates = apply_fn({"params": params, "batch_stats": batch_stats}, x, train=True,
                        mutable=["batch_stats"])
  return updates["batch_stats"]


# One compilation per (apply_fn, shapes): pass the same apply_fn object (e.g. ``model.apply``).
_train_mode_stats_jit = jax.jit(_train_mode_stats, static_argnums=0)


def recompute_batch_stats(apply_fn: Callable, params: PyTree, batch_stats: PyTree, x: np.ndarray, *,
                          batch_size: int = 500) -> PyTree:
  """Population BatchNorm statistics of ``x`` (N, ...) under ``params``.

  Every batch's per-channel mean ``m_b`` and (biased) variance ``v_b`` are read off one train-mode call
  (the running-average update ``new = mu * old + (1 - mu) * batch`` is inverted with a measured
  ``mu``), then combined exactly: ``mean = avg_b m_b``, ``var = avg_b (v_b + m_b^2) - mean^2``. Only
  ``floor(N / batch_size)`` full batches are used (all of ``x`` when ``batch_size >= N``).

  Returns:
    A ``batch_stats`` pytree with the structure of ``batch_stats``; ``{}`` stays ``{}``.
  """
  if not batch_stats:
    return batch_stats
  n = len(x)
  batch_size = min(batch_size, n)
  stats_fn = functools.partial(_train_mode_stats_jit, apply_fn)
  zeros = jax.tree.map(jnp.zeros_like, batch_stats)
  ones = jax.tree.map(jnp.ones_like, batch_stats)
  x0 = jnp.asarray(x[:batch_size])
  # momentum per leaf: the difference of two updates whose old values differ by exactly 1.
  momentum = jax.tree.map(lambda a, b: a - b, stats_fn(params, ones, x0), stats_fn(params, zeros, x0))
  sums = None
  num_batches = n // batch_size
  for i in range(num_batches):
    raw = stats_fn(params, zeros, jnp.asarray(x[i * batch_size:(i + 1) * batch_size]))
    batch = jax.tree.map(lambda r, mu: r / (1.0 - mu), raw, momentum)
    # collect E[x] and E[x^2] per channel: BatchNorm leaves come as {"mean", "var"} pairs.
    moments = _to_moments(batch)
    sums = moments if sums is None else jax.tree.map(jnp.add, sums, moments)
  avg = jax.tree.map(lambda s: s / num_batches, sums)
  return _from_moments(avg)


def _to_moments(stats):
  if isinstance(stats, dict) and set(stats) == {"mean", "var"}:
    return {"mean": stats["mean"], "var": stats["var"] + stats["mean"] ** 2}
  return {k: _to_moments(v) for k, v in stats.items()}


def _from_moments(moments):
  if isinstance(moments, dict) and set(moments) == {"mean", "var"}:
    return {"mean": moments["mean"], "var": moments["var"] - moments["mean"] ** 2}
  return {k: _from_moments(v) for k, v in moments.items()}
