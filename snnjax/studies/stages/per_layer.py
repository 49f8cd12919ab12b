"""The per-layer stage: where Sol-S's extra curvature sits, layer by layer, against Sol-F.

For the first seed and each sparsity, Sol-F and Sol-S (same mask) are measured on the same
training examples (eval-mode BatchNorm, active coordinates of all trainable params): Tr(H) by
Hutchinson with ``blocks="layer"`` (per-layer traces from the same probes as the total, which is
their sum) and the exact true-Fisher trace Tr(F) per layer (``fisher_trace(labels="exact",
blocks="layer")``, exact for the given examples). The report shows, per layer, both solutions'
traces, the difference Sol-S - Sol-F and its share of the total difference, and a figure of the
per-layer Tr(F) of both.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from snnjax.studies import figures
from snnjax.studies import measure as measure_lib
from snnjax.studies.stage import Stage
from snnjax.train import config_io
from snnjax.train.run_dir import RunDir


def default_settings() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.enabled = True
  s.num_examples = 256          # training examples both solutions are measured on
  s.num_probes = 20             # Hutchinson probes for the per-layer Tr(H)
  return s


def validate(config) -> None:
  config_io.check_int(config.per_layer.num_examples, "study per_layer.num_examples", 2,
                      config_io.MAX_COUNT)
  config_io.check_int(config.per_layer.num_probes, "study per_layer.num_probes", 2,
                      config_io.MAX_PROBES)


def layer_traces(solution, dataset, *, num_examples: int, num_probes: int, seed: int = 0
                 ) -> dict:
  """Per-layer Tr(H) (Hutchinson, same probes as the total) and exact Tr(F) of ``solution``."""
  tr_h, tr_f = measure_lib.subset_traces(solution, dataset, num_examples=num_examples,
                                         num_probes=num_probes, seed=seed, blocks="layer")
  return {"tr_h": tr_h.value, "tr_h_stderr": tr_h.stderr, "tr_f": tr_f.value,
          "layers": {name: {"tr_h": b.value, "tr_h_stderr": b.stderr,
                            "tr_f": tr_f.blocks[name].value}
                     for name, b in tr_h.blocks.items()},
          "num_examples": tr_h.num_examples, "num_probes": int(num_probes)}


def _pairs(clean: dict) -> list:
  """(sparsity, Sol-F spec, Sol-S spec) of the first seed, by sparsity."""
  if not clean:
    return []
  seed = min(s.seed for s in clean)
  by = {(s.regime, s.sparsity): s for s in clean if s.seed == seed}
  return [(sp, by[("finetune", sp)], by[("scratch", sp)])
          for sp in sorted({s.sparsity for s in clean if s.regime != "dense"})
          if ("finetune", sp) in by and ("scratch", sp) in by]


def compute(ctx) -> dict:
  settings = ctx.config.per_layer
  out = {}
  for sparsity, *specs in _pairs(ctx.clean):
    row = {}
    for spec in specs:
      run = ctx.runs[spec]

      def one(run=run):
        return layer_traces(RunDir(run.workdir).solution(), ctx.dataset(run),
                            num_examples=int(settings.num_examples),
                            num_probes=int(settings.num_probes))
      row[spec.regime] = ctx.cache.cached(f"per_layer-{spec.name}",
                                          {"run": run.hash, "settings": settings}, one)
    out[f"{sparsity:g}"] = row
  return out


def _figure(sparsity: str, row: dict, path: str) -> str:
  names = list(row["finetune"]["layers"])
  x = np.arange(len(names))
  fig, ax = figures.plt.subplots(figsize=(max(6.0, 0.3 * len(names) + 2), 4.0))
  for shift, regime in ((-0.2, "finetune"), (0.2, "scratch")):
    ax.bar(x + shift, [row[regime]["layers"][n]["tr_f"] for n in names], width=0.4,
           color=figures.COLORS[regime], label=figures.NAMES[regime])
  ax.set_xticks(x, names, rotation=90, fontsize=6)
  ax.set_ylabel("exact Tr(F) of the layer")
  ax.set_title(f"Per-layer Fisher trace, sparsity {sparsity}")
  ax.legend(fontsize=8)
  return figures.save(fig, path)


def report(rc, result) -> list[str]:
  if not result:
    return []
  md = ["## Per-layer curvature: where Sol-S's extra curvature sits", "",
        "Per layer (param leaves grouped by layer), on the same training examples, active "
        "coordinates, eval-mode BatchNorm: Tr(H) by Hutchinson (layer traces from the same "
        "probes, summing to the total; ± one stderr) and the exact true-Fisher trace Tr(F). "
        "share = the layer's part of the total Sol-S - Sol-F difference in Tr(F).", ""]
  for sparsity, row in result.items():
    f, s = row["finetune"], row["scratch"]
    path = _figure(sparsity, row, os.path.join(rc.outdir, f"per_layer_{sparsity}.png"))
    total = s["tr_f"] - f["tr_f"]
    md += [f"### Sparsity {sparsity}", "", f"![per-layer Tr(F)]({os.path.basename(path)})", "",
           "| layer | Sol-F Tr(H) | Sol-S Tr(H) | Sol-F Tr(F) | Sol-S Tr(F) | S - F, Tr(F) "
           "| share |", "|---|---|---|---|---|---|---|"]
    for name, lf in f["layers"].items():
      ls = s["layers"][name]
      diff = ls["tr_f"] - lf["tr_f"]
      share = f"{diff / total:.0%}" if total else "-"
      md.append(f"| {name} | {lf['tr_h']:.3g} ± {lf['tr_h_stderr']:.2g} | {ls['tr_h']:.3g} ± "
                f"{ls['tr_h_stderr']:.2g} | {lf['tr_f']:.3g} | {ls['tr_f']:.3g} | "
                f"{diff:+.3g} | {share} |")
    md += [f"| **total** | {f['tr_h']:.3g} | {s['tr_h']:.3g} | {f['tr_f']:.3g} | "
           f"{s['tr_f']:.3g} | {total:+.3g} | 100% |", ""]
  return md


def estimate(costs) -> float:
  seconds = 0.0
  for _, *specs in _pairs(costs.clean):
    for spec in specs:
      run = costs.clean[spec]
      if not costs.has(f"per_layer-{spec.name}", run.hash):
        d, g, _ = costs.unit(spec.name)
        n = min(int(costs.config.per_layer.num_examples), d.num_train)
        seconds += n * g * (costs.EXACT_FISHER_G * d.num_classes
                            + 2 * costs.PROBE_G * int(costs.config.per_layer.num_probes))
  return seconds


STAGE = Stage(name="per_layer", default_settings=default_settings, validate=validate,
              compute=compute, report=report, estimate=estimate)
