"""Evaluation: predictions over a whole split, loss/accuracy, and the label-noise breakdown."""

from __future__ import annotations

from typing import Callable

import numpy as np
import jax
import jax.numpy as jnp


def predict_logits(predict: Callable, params, batch_stats, x: np.ndarray,
                   batch_size: int = 1000) -> np.ndarray:
  """Eval-mode logits for every row of ``x`` (N, ...) -> (N, classes) float32.

  Batches have a fixed size (the last one is zero-padded and trimmed) so ``predict`` compiles once.
  """
  n = len(x)
  out = []
  for start in range(0, n, batch_size):
    xb = x[start:start + batch_size]
    real = len(xb)
    if real < batch_size and n > batch_size:
      xb = np.concatenate([xb, np.zeros((batch_size - real,) + xb.shape[1:], xb.dtype)])
    out.append(np.asarray(predict(params, batch_stats, jnp.asarray(xb)))[:real])
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> dict:
  """Mean cross-entropy and accuracy over the N examples of ``logits`` (N, C), ``labels`` (N,)."""
  logits = logits.astype(np.float64)
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  loss = -log_probs[np.arange(len(labels)), labels]
  return {"loss": float(loss.mean()), "accuracy": float((logits.argmax(1) == labels).mean())}


def label_noise_breakdown(predictions: np.ndarray, labels: np.ndarray, true_labels: np.ndarray,
                          noisy: np.ndarray) -> dict:
  """The memorization metrics on a training set with label noise.

  Args:
    predictions: (N,) predicted classes.
    labels: (N,) labels trained on (noisy where ``noisy``).
    true_labels: (N,) clean labels.
    noisy: (N,) bool, True where the label was changed.
  Returns:
    ``clean_accuracy`` (fraction of clean examples predicted right), and over the noisy examples the
    fractions ``noisy_correct`` (predicts the true label), ``noisy_memorized`` (predicts the noisy
    label) and ``noisy_other`` (neither); the three sum to 1. ``num_noisy``/``num_clean`` counts.
  """
  noisy = noisy.astype(bool)
  clean = ~noisy
  out = {"num_clean": int(clean.sum()), "num_noisy": int(noisy.sum())}
  out["clean_accuracy"] = float((predictions[clean] == labels[clean]).mean()) if clean.any() else None
  if noisy.any():
    correct = predictions[noisy] == true_labels[noisy]
    memorized = predictions[noisy] == labels[noisy]
    out["noisy_correct"] = float(correct.mean())
    out["noisy_memorized"] = float(memorized.mean())
    out["noisy_other"] = float((~correct & ~memorized).mean())
  return out
