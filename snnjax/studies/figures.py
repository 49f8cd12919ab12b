"""Plotting helpers shared by the stages' figures (matplotlib, Agg backend; no display needed).

Each stage draws its own figures (in its module) with these colours and names, labelled axes with
units, and :func:`save`.
"""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position

COLORS = {"dense": "#444444", "finetune": "#1f77b4", "scratch": "#d62728", "rigl": "#ff7f0e"}
NAMES = {"dense": "Sol-D (dense)", "finetune": "Sol-F (pruned + finetuned)",
         "scratch": "Sol-S (sparse from scratch)", "rigl": "Sol-R (RigL from Init-S)"}
plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
                     "legend.fontsize": 8, "figure.dpi": 110})


def save(fig, path: str) -> str:
  """Lays out ``fig``, writes it to ``path`` (PNG) and closes it; returns ``path``."""
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def log_axis(ax) -> None:
  """A log y axis with plain-number tick labels."""
  ax.set_yscale("log")
  ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
  ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
