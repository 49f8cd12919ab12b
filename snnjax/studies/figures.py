"""The study's figures as PNG files (matplotlib, Agg backend; no display needed).

Each function takes the JSON-able result of one stage and a path, draws one figure with labelled
axes (units in the labels) and returns the path.
"""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position
import numpy as np  # noqa: E402  pylint: disable=wrong-import-position

COLORS = {"dense": "#444444", "finetune": "#1f77b4", "scratch": "#d62728"}
NAMES = {"dense": "Sol-D (dense)", "finetune": "Sol-F (pruned + finetuned)",
         "scratch": "Sol-S (sparse from scratch)"}
plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
                     "legend.fontsize": 8, "figure.dpi": 110})


def _save(fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def _err(cell):
  if cell is None:
    return None
  return cell["spread"] if cell["spread"] is not None else cell["stderr"]


def table_figure(rows: list[dict], path: str) -> str:
  """Train error, test accuracy, Tr(F), Tr(H), Jacobian vs sparsity for Sol-F / Sol-S (Sol-D as a
  horizontal line); error bars: spread over seeds, or the estimator's stderr with one seed."""
  panels = [("train_error", "train error (fraction)", False),
            ("test_accuracy", "test accuracy (fraction)", False),
            ("tr_f", "Tr(F) (per-example mean)", True),
            ("tr_h", "Tr(H) (mean loss)", True),
            ("jacobian", "E ||J||_F^2 (logits / input)", True)]
  fig, grid = plt.subplots(2, 3, figsize=(14, 7.5))
  axes = grid.ravel()
  for ax, (metric, ylabel, log) in zip(axes, panels):
    for regime in ("finetune", "scratch"):
      pts = [(r["sparsity"], r[metric]) for r in rows if r["regime"] == regime and r[metric]]
      if not pts:
        continue
      xs = [p[0] for p in pts]
      ys = [p[1]["mean"] for p in pts]
      es = [_err(p[1]) or 0.0 for p in pts]
      ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=COLORS[regime],
                  label=NAMES[regime])
    for r in rows:
      if r["regime"] == "dense" and r[metric]:
        ax.axhline(r[metric]["mean"], color=COLORS["dense"], ls="--", label=NAMES["dense"])
    if log and all(r[metric] is None or r[metric]["mean"] > 0 for r in rows):
      ax.set_yscale("log")
      ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
      ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("sparsity (fraction of prunable weights removed)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  handles, labels = axes[0].get_legend_handles_labels()
  axes[-1].axis("off")
  axes[-1].legend(handles, labels, loc="center", fontsize=10,
                  title="error bars: sd over seeds, or stderr (1 seed)")
  fig.suptitle("Sparse solutions: fit, accuracy and curvature")
  return _save(fig, path)


def fisher_trend_figure(trend: dict, labels: dict, path: str) -> str:
  """Tr(F) on the probe subset vs epoch, one line per solution (colour by regime, style by
  sparsity); with several seeds the line is their mean and the band their range (min-max)."""
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  styles = ["-", "--", ":", "-."]
  sparsities = sorted({labels[n]["sparsity"] for n in trend if labels[n]["regime"] != "dense"})
  groups: dict[tuple, list] = {}
  for name, points in sorted(trend.items()):
    info = labels[name]
    groups.setdefault((info["regime"], info["sparsity"], info["label"]), []).append(points)
  order = {"dense": 0, "finetune": 1, "scratch": 2}
  for (regime, sparsity, label), runs in sorted(groups.items(),
                                                key=lambda kv: (order[kv[0][0]], kv[0][1])):
    ls = "-" if regime == "dense" else styles[sparsities.index(sparsity) % 4]
    epochs = sorted(set.intersection(*[{p["epoch"] for p in pts} for pts in runs]))
    values = np.array([[next(p["tr_f"]["value"] for p in pts if p["epoch"] == e)
                        for e in epochs] for pts in runs], np.float64)
    text = label + (f" (mean of {len(runs)} seeds, band: range)" if len(runs) > 1 else "")
    ax.plot(epochs, values.mean(0), ls=ls, marker="o", ms=3, color=COLORS[regime], label=text)
    if len(runs) > 1:
      ax.fill_between(epochs, values.min(0), values.max(0), color=COLORS[regime], alpha=0.15)
  ax.set_yscale("log")
  ax.set_xlabel("epoch")
  ax.set_ylabel("Tr(F) on the probe subset (per-example mean)")
  ax.set_title("Fisher trace during training")
  ax.grid(alpha=0.3)
  ax.legend(loc="best")
  return _save(fig, path)


def label_noise_figure(results: dict, path: str) -> str:
  """Per-epoch curves of the noisy runs: train accuracy on the noisy labels, clean test accuracy,
  clean-train accuracy, and on the noisy examples the correct / memorized fractions."""
  panels = [("train_accuracy", "train accuracy on the (noisy) labels trained on"),
            ("test_accuracy", "test accuracy (clean labels)"),
            ("train_clean_accuracy", "accuracy on clean train examples"),
            ("train_noisy", "noisy train examples: fraction")]
  fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
  multi_seed = len({r["seed"] for r in results.values()}) > 1
  for ax, (key, ylabel) in zip(axes, panels):
    for name, r in sorted(results.items()):
      c = r["curves"]
      color = COLORS[r["regime"]]
      if multi_seed:
        r = {**r, "label": f"{r['label']} seed {r['seed']}"}
      if key == "train_noisy":
        ax.plot(c["epoch"], c["train_noisy_memorized"], color=color, ls="-",
                label=f"{r['label']}: memorized (noisy label)")
        ax.plot(c["epoch"], c["train_noisy_correct"], color=color, ls="--",
                label=f"{r['label']}: correct (true label)")
      else:
        ax.plot(c["epoch"], c[key], color=color, label=r["label"])
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction")
    ax.set_title(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
  return _save(fig, path)


def disagreement_figure(results: dict, path: str) -> str:
  """Per key (balanced / long-tailed) and split: class distribution of the disagreements (bars)
  beside the class sizes (line, right axis), and the fraction each model gets right."""
  keys = sorted(results)
  fig, axes = plt.subplots(len(keys), 3, figsize=(15, 3.4 * len(keys)), squeeze=False)
  for row, key in zip(axes, keys):
    r = results[key]
    names = r.get("class_names")
    for ax, split in zip(row[:2], ("train", "test")):
      s = r[split]
      k = len(s["class_counts"])
      ax.bar(np.arange(k), s["class_counts"], color="#9467bd", label="disagreements")
      ax.set_xlabel("class (true label)")
      ax.set_ylabel("examples where Sol-S != Sol-F")
      ax.set_title(f"{key}, {split}: {s['num_disagree']} of {s['num_examples']} "
                   f"({100 * s['fraction_disagree']:.1f}%)")
      if names and k <= 20:
        ax.set_xticks(np.arange(k))
        ax.set_xticklabels(names, rotation=60, fontsize=7)
      twin = ax.twinx()
      twin.plot(np.arange(k), s["class_sizes"], color="#2ca02c", marker=".", label="class size")
      twin.set_ylabel("examples in the class")
      twin.set_ylim(bottom=0)
    ax = row[2]
    splits = ("train", "test")
    width = 0.27
    for j, (field, label, color) in enumerate(
        (("scratch_correct", "Sol-S right", COLORS["scratch"]),
         ("finetune_correct", "Sol-F right", COLORS["finetune"]),
         ("neither_correct", "neither right", "#7f7f7f"))):
      vals = [r[s][field] or 0.0 for s in splits]
      ax.bar(np.arange(2) + (j - 1) * width, vals, width, color=color, label=label)
    ax.set_xticks(np.arange(2))
    ax.set_xticklabels(splits)
    ax.set_ylabel("fraction of the disagreements")
    ax.set_ylim(0, 1)
    ax.set_title(f"{key}: who is right where they differ")
    ax.legend(loc="best")
  return _save(fig, path)


def interpolation_figure(lines: dict, path: str) -> str:
  """Loss and accuracy (train: true labels; test) along alpha for each line."""
  fig, axes = plt.subplots(1, 2, figsize=(12, 4))
  styles = {"init_s": ("Init-S -> Sol-F", "-"), "init_f": ("Init-F -> Sol-F", "--")}
  for name, line in sorted(lines.items()):
    label, ls = styles[name]
    a = line["alphas"]
    axes[0].plot(a, line["train_loss"], ls=ls, marker="o", ms=3, color="#1f77b4",
                 label=f"{label}, train")
    axes[0].plot(a, line["test_loss"], ls=ls, marker="o", ms=3, color="#ff7f0e",
                 label=f"{label}, test")
    axes[1].plot(a, line["train_accuracy"], ls=ls, marker="o", ms=3, color="#1f77b4",
                 label=f"{label}, train")
    axes[1].plot(a, line["test_accuracy"], ls=ls, marker="o", ms=3, color="#ff7f0e",
                 label=f"{label}, test")
  axes[0].set_ylabel("cross-entropy (nats per example)")
  axes[0].set_yscale("log")
  axes[1].set_ylabel("accuracy (fraction)")
  for ax in axes:
    ax.set_xlabel("alpha (0 = init, 1 = Sol-F)")
    ax.axvline(0, color="k", lw=0.5)
    ax.axvline(1, color="k", lw=0.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
  axes[0].set_title("loss along theta(alpha), BN statistics recomputed")
  axes[1].set_title("accuracy along theta(alpha)")
  return _save(fig, path)


def cosine_figure(lines: dict, num_classes: int, path: str) -> str:
  """Violins of cos(-g_i, Sol-F - init) per alpha (one panel per line) and the class distribution
  of the top cosines at each alpha."""
  names = sorted(lines)
  fig, axes = plt.subplots(2, len(names), figsize=(6.5 * len(names), 7.5), squeeze=False)
  titles = {"init_s": "Init-S -> Sol-F", "init_f": "Init-F -> Sol-F"}
  for col, name in enumerate(names):
    cos = lines[name]["cosines"]
    alphas = sorted(cos, key=float)
    data = [[v for v in cos[a]["values"] if v is not None] for a in alphas]
    ax = axes[0][col]
    if data and all(data):
      ax.violinplot(data, showmedians=True)
    ax.set_xticks(np.arange(1, len(alphas) + 1))
    ax.set_xticklabels([f"alpha={a}" for a in alphas])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("cos(-grad_i, Sol-F - init) (dimensionless)")
    ax.set_title(f"{titles.get(name, name)}: per-example gradient alignment")
    ax.grid(alpha=0.3)
    ax = axes[1][col]
    width = 0.8 / max(1, len(alphas))
    for j, a in enumerate(alphas):
      top = cos[a]["top"]
      counts = np.asarray(top["class_counts"], float)
      share = counts / counts.sum() if counts.sum() else counts
      ax.bar(np.arange(num_classes) + (j - (len(alphas) - 1) / 2) * width, share, width,
             label=f"alpha={a} (top {top['k']})")
    sizes = np.asarray(cos[alphas[0]]["top"]["class_sizes"], float) if alphas else None
    if sizes is not None and sizes.sum():
      ax.plot(np.arange(num_classes), sizes / sizes.sum(), "k.--", label="all measured examples")
    ax.set_xlabel("class (true label)")
    ax.set_ylabel("share of the top-cosine examples")
    ax.set_title("class distribution of the top cosines")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
  return _save(fig, path)


def closing_gap_figure(result: dict, path: str) -> str:
  """The closing-the-gap variants beside plain Sol-S and Sol-F: test accuracy, train error and
  Tr(F) as bars (means over seeds; error bars: sd over seeds, or the estimator's stderr), Sol-S and
  Sol-F as horizontal lines; and test accuracy per epoch of every run (first seed)."""
  rows = {r["name"]: r for r in result["rows"]}
  variants = [r["name"] for r in result["rows"] if r["name"] not in ("scratch", "finetune")]
  colors = ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
  panels = [("test_accuracy", "test accuracy (fraction)"),
            ("train_error", "train error (fraction)"),
            ("tr_f", "Tr(F) (per-example mean)")]
  fig, axes = plt.subplots(1, 4, figsize=(18, 4.4))
  for ax, (metric, ylabel) in zip(axes, panels):
    for j, name in enumerate(variants):
      cell = rows[name][metric]
      if cell is None:
        continue
      err = cell["sd"] if cell["sd"] is not None else cell.get("stderr")
      ax.bar(j, cell["mean"], 0.6, yerr=err, capsize=3 if err else 0,
             color=colors[j % len(colors)])
    for ref in ("scratch", "finetune"):
      cell = rows[ref][metric]
      if cell is not None:
        ax.axhline(cell["mean"], color=COLORS[ref], ls="--", label=rows[ref]["label"])
    ax.set_xticks(np.arange(len(variants)))
    ax.set_xticklabels([rows[n]["short_label"] for n in variants], fontsize=8)
    ax.set_xlabel("Sol-S variant")
    ax.set_ylabel(ylabel)
    values = [rows[n][metric]["mean"] for n in list(rows) if rows[n][metric] is not None]
    if values and metric != "tr_f":
      lo, hi = min(values), max(values)
      pad = max(0.1 * (hi - lo), 0.002)
      ax.set_ylim(max(0.0, lo - 3 * pad), hi + 3 * pad)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="best")
  ax = axes[3]
  seed_key = sorted(result["per_seed"])[0]
  entry = result["per_seed"][seed_key]
  for name in ("scratch", "finetune"):
    c = entry[name]["curve"]
    ax.plot(c["epoch"], c["test_accuracy"], color=COLORS[name], ls="--", label=rows[name]["label"])
  for j, name in enumerate(variants):
    c = entry[name]["curve"]
    ax.plot(c["epoch"], c["test_accuracy"], color=colors[j % len(colors)], marker="o", ms=3,
            label=rows[name]["label"])
  ax.set_xlabel("epoch")
  ax.set_ylabel("test accuracy (fraction)")
  ax.set_title(f"test accuracy during training ({seed_key})")
  ax.grid(alpha=0.3)
  ax.legend(loc="best", fontsize=7)
  fig.suptitle(f"Closing the gap at sparsity {result['sparsity']:.2f}: Sol-S variants vs plain "
               "Sol-S and Sol-F (dashed)")
  return _save(fig, path)
