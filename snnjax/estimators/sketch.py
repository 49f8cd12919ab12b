"""XTrace and XDiag (Epperly, Tropp & Webber 2024): exchangeable leave-one-out sketches, with errors.

For a symmetric operator A (dim x dim) and s test vectors w_1..w_s (Rademacher, ``2 s`` products
with A in all): Y = A W, Q an orthonormal basis of range(Y), Z = A Q. For each i, Q_(i) is an
orthonormal basis of range(Y without column i) (inside range(Q), so A Q_(i) = Z C_i costs no
product) and

  t_i = Tr(Q_(i)^T A Q_(i)) + r_i^T A r_i,   r_i = (I - Q_(i) Q_(i)^T) w_i,

an unbiased estimate of Tr(A) (w_i is independent of Q_(i): a Hutch++ with the sketch of the
other vectors and w_i as its single residual probe). XTrace returns mean_i t_i, and as its error
estimate the standard error std(t_i) / sqrt(s) of those (exchangeable, not independent) values,
the paper's error estimate: it covers the whole estimate, sketch included.

Which to pick (measured, BENCHMARKS.md section "curvature toolkit"): Hutch++ and XTrace beat
Hutchinson per product when A has a few dominant eigenvalues (low-rank + small rest: their
sketch removes the top of the spectrum); on the flat, indefinite Hessian spectrum of a trained
ResNet the sketch removes little and plain Hutchinson (whose quadratic forms also cost less than
Hessian-vector products) is as good or better per unit of compute. XTrace uses all 2s products
for both the sketch and the residual and reports an error that covers its whole estimate;
Hutch++'s stderr covers only its residual part.

:func:`xdiag` is the same construction for the diagonal (XDiag): diag(P_i A) exactly from the
sketch plus w_i ⊙ (I - P_i) A w_i, averaged over i.

Pure numpy on host arrays in float64 (products ``matmat`` may be float32): memory ~ 4 s dim
doubles.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

MatMat = Callable[[np.ndarray], np.ndarray]  # (k, dim) rows -> (k, dim) rows A z
_RANK_RTOL = 1e-6  # singular values below this times the largest: outside the sketch's range


def _orth(a: np.ndarray) -> np.ndarray:
  """Orthonormal basis (rows, cols') of the column space of ``a`` (rank-revealing SVD)."""
  if a.shape[1] == 0:
    return a
  u, sv, _ = np.linalg.svd(a, full_matrices=False)
  if sv.size == 0 or sv[0] == 0:
    return u[:, :0]
  return u[:, sv > _RANK_RTOL * sv[0]]


def xtrace(matmat: MatMat, omega: np.ndarray) -> tuple[float, float, np.ndarray, int]:
  """XTrace estimate of Tr(A) from the test vectors ``omega`` (s, dim), s >= 2.

  Returns (estimate, error estimate std(t_i) / sqrt(s), the s leave-one-out estimates t_i,
  products with A used (s for Y, rank(Y) <= s for Z)).
  """
  omega = np.asarray(omega, np.float64)
  s = omega.shape[0]
  if s < 2:
    raise ValueError("xtrace needs at least 2 test vectors")
  y = np.asarray(matmat(omega), np.float64).T  # (dim, s)
  q = _orth(y)  # (dim, r)
  z = np.asarray(matmat(q.T), np.float64).T if q.shape[1] else q  # (dim, r) = A Q
  h = q.T @ z
  h = 0.5 * (h + h.T)
  g = q.T @ y  # (r, s): Y in the basis Q
  w = q.T @ omega.T  # (r, s)
  ests = np.zeros(s)
  for i in range(s):
    c = _orth(np.delete(g, i, axis=1))  # (r, c): Q_(i) = Q c
    proj = c @ (c.T @ w[:, i])  # coordinates in Q of Q_(i) Q_(i)^T w_i
    r = omega[i] - q @ proj
    ar = y[:, i] - z @ proj
    ests[i] = np.trace(c.T @ h @ c) + r @ ar
  return float(ests.mean()), float(ests.std(ddof=1) / np.sqrt(s)), ests, s + q.shape[1]


def xdiag(matmat: MatMat, omega: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
  """XDiag-style estimate of diag(A) from the test vectors ``omega`` (s, dim), s >= 2.

  For each i, with P_i = Q_(i) Q_(i)^T as in :func:`xtrace`: diag(A) = diag(P_i A) +
  diag((I - P_i) A), the first exact given P_i (rowsums of Q_(i) ⊙ A Q_(i), no product) and the
  second estimated by w_i ⊙ (I - P_i) A w_i (unbiased: w_i is independent of P_i). Exact when
  rank(A) < s. Returns (mean over i (dim,), its error estimate std_i / sqrt(s) (dim,), products).
  """
  omega = np.asarray(omega, np.float64)
  s = omega.shape[0]
  if s < 2:
    raise ValueError("xdiag needs at least 2 test vectors")
  y = np.asarray(matmat(omega), np.float64).T  # (dim, s)
  q = _orth(y)
  z = np.asarray(matmat(q.T), np.float64).T if q.shape[1] else q
  g = q.T @ y
  ests = np.zeros((s, omega.shape[1]))
  for i in range(s):
    c = _orth(np.delete(g, i, axis=1))
    qc, zc = q @ c, z @ c  # Q_(i) and A Q_(i)
    low = np.sum(qc * zc, axis=1)
    resid = y[:, i] - qc @ (zc.T @ omega[i])  # (I - P_i) A w_i, with Q_(i)^T A w_i = (A Q_(i))^T w_i
    ests[i] = low + omega[i] * resid
  return ests.mean(axis=0), ests.std(axis=0, ddof=1) / np.sqrt(s), s + q.shape[1]
