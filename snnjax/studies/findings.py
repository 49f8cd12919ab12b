"""How a finding is judged: the study's numbers, and verdicts against the spread between seeds.

Each stage writes its own rows of the findings table (``Stage.findings``) with these helpers.

The study's numbers (``../shared/STUDY-NOTES.md``) are for CIFAR-100 with the 4x-wide ResNet-32;
only the ``paper`` preset has that setup, so elsewhere only the *direction* of each finding is
compared (the study itself notes that its later blog table differs in absolute values).
"""

from __future__ import annotations

# Every status a finding can have.
STATUSES = ("reproduced", "not reproduced", "within seed spread", "within sampling noise",
            "not measured")

# CIFAR-100, wide ResNet-32, read from the study's figures (+-0.002) and its paper table.
STUDY = {
    "setup": "CIFAR-100, 4x-wide ResNet-32",
    "dense_test_accuracy": 0.776,
    "test_accuracy": {"finetune": {0.90: 0.769, 0.94: 0.760, 0.96: 0.746},
                      "scratch": {0.90: 0.743, 0.94: 0.722, 0.96: 0.714}},
    "train_accuracy": {"scratch": {0.94: 0.944, 0.96: 0.905}},
    "tr_f": {"dense": 53.8, "finetune": {0.90: 543, 0.94: 2574, 0.96: 4376},
             "scratch": {0.90: 2702, 0.94: 9841, 0.96: 15819}},
    "tr_h": {"dense": 66.3, "finetune": {0.90: 720, 0.94: 4198, 0.96: 9618},
             "scratch": {0.90: 10453, 0.94: 12906, 0.96: 20715}},
    "jacobian": {"dense": 35.6, "finetune": {0.90: 43.3, 0.94: 52.3, 0.96: 67.9},
                 "scratch": {0.90: 63.7, 0.94: 66.4, 0.96: 70.1}},
}


def study_value(metric: str, regime: str, sparsity: float):
  """The study's number for a table cell, or None."""
  if metric == "test_accuracy":
    if regime == "dense":
      return STUDY["dense_test_accuracy"]
    return STUDY["test_accuracy"].get(regime, {}).get(round(sparsity, 2))
  if metric == "train_error":
    if regime == "scratch":
      acc = STUDY["train_accuracy"]["scratch"].get(round(sparsity, 2))
      return None if acc is None else round(1.0 - acc, 3)
    return None
  if metric in ("tr_f", "tr_h", "jacobian"):
    if regime == "dense":
      return STUDY[metric]["dense"]
    return STUDY[metric].get(regime, {}).get(round(sparsity, 2))
  return None


def _values(rows, metric) -> dict:
  """``{(regime, sparsity): [value per seed]}``."""
  return {(r["regime"], r["sparsity"]): list(r[metric]["values"]) for r in rows if r[metric]}


def compare_over_seeds(rows, metric: str, scratch_higher: bool) -> list[dict]:
  """Per sparsity, Sol-S against Sol-F in ``metric`` with the spread between seeds.

  ``gap`` is mean(Sol-S) - mean(Sol-F); ``direction`` whether its sign is the study's
  (``scratch_higher``: Sol-S above Sol-F); ``separated`` (several seeds on both sides) whether the
  gap exceeds the spread between seeds: the two ranges over seeds (min-max) do not overlap, so
  every seed's Sol-S value lies on the same side of every seed's Sol-F value; None with one seed.
  """
  vals = _values(rows, metric)
  out = []
  for (regime, sp), s_vals in sorted(vals.items(), key=lambda kv: kv[0][1]):
    if regime != "scratch" or ("finetune", sp) not in vals:
      continue
    f_vals = vals[("finetune", sp)]
    gap = sum(s_vals) / len(s_vals) - sum(f_vals) / len(f_vals)
    separated = None
    if len(s_vals) > 1 and len(f_vals) > 1:
      separated = min(s_vals) > max(f_vals) or max(s_vals) < min(f_vals)
    out.append({"sparsity": sp, "gap": gap, "direction": gap > 0 if scratch_higher else gap < 0,
                "separated": separated, "finetune": f_vals, "scratch": s_vals})
  return out


def verdict_over_seeds(comparisons: list[dict]) -> str:
  """``reproduced``: the study's direction at every sparsity, beyond the seed spread where there
  are several seeds; ``not reproduced``: the opposite direction somewhere (beyond the spread when
  there are several seeds); ``within seed spread``: neither (some gap, of either sign, is not
  beyond the spread, and none contradicts the study beyond it); ``not measured``."""
  if not comparisons:
    return "not measured"
  if any(not c["direction"] and c["separated"] is not False for c in comparisons):
    return "not reproduced"
  if all(c["direction"] and c["separated"] is not False for c in comparisons):
    return "reproduced"
  return "within seed spread"


def _range(values, digits: int) -> str:
  if len(values) == 1:
    return f"{values[0]:.{digits}g}"
  return f"{min(values):.{digits}g}-{max(values):.{digits}g}"


def describe_comparisons(comparisons: list[dict], digits: int = 3) -> str:
  """``0.90: F 0.81-0.82 vs S 0.74-0.76 (gap -0.07, beyond spread); ...`` (ranges over seeds)."""
  parts = []
  for c in comparisons:
    note = ("one seed" if c["separated"] is None else "within seed spread"
            if not c["separated"] else "beyond seed spread" if c["direction"]
            else "opposite to the study, beyond seed spread")
    parts.append(f"{c['sparsity']:.2f}: F {_range(c['finetune'], digits)} vs "
                 f"S {_range(c['scratch'], digits)} (S - F {c['gap']:+.{digits}g}, {note})")
  return "; ".join(parts)


def _z2(a: float, b: float, se: float | None) -> bool | None:
  """Whether ``|a - b|`` exceeds 2 ``se`` (None without an error)."""
  return None if se is None else abs(a - b) > 2 * se


def compare_toward(f: dict, s: dict, r: dict, *, binomial_n: int = 0) -> dict:
  """Whether a third solution R (Sol-R) lies closer to Sol-F than Sol-S does, from three
  ``seeds.over_seeds`` cells (Sol-F, Sol-S, R) of one metric.

  ``toward``: ``|R - F| < |S - F|`` (means); ``beyond_noise``: whether ``R - S`` exceeds the noise
  (several seeds: the seed ranges of R and S do not overlap; one seed: 2 standard errors, the
  estimators' or, with ``binomial_n``, binomial over that many examples); None when unknown.
  """
  fm, sm, rm = f["mean"], s["mean"], r["mean"]
  noise = "seed spread"
  if len(s["values"]) > 1 and len(r["values"]) > 1:
    beyond = min(r["values"]) > max(s["values"]) or max(r["values"]) < min(s["values"])
  else:
    noise = "sampling noise"
    se = None
    if r.get("stderr") is not None and s.get("stderr") is not None:
      se = (r["stderr"] ** 2 + s["stderr"] ** 2) ** 0.5
    elif binomial_n:
      se = ((rm * (1 - rm) + sm * (1 - sm)) / binomial_n) ** 0.5
    beyond = _z2(rm, sm, se)
  return {"finetune": fm, "scratch": sm, "rigl": rm, "gap_scratch": sm - fm, "gap_rigl": rm - fm,
          "toward": abs(rm - fm) < abs(sm - fm), "beyond_noise": beyond, "noise": noise}


def verdict_toward(comparisons: list[dict]) -> str:
  """The verdict of :func:`compare_toward` comparisons: ``reproduced``: R closer to Sol-F at
  every sparsity, beyond the noise; ``not reproduced``: not closer somewhere, beyond the noise;
  else ``within seed spread`` / ``within sampling noise`` (``not measured`` without any)."""
  if not comparisons:
    return "not measured"
  # Noise unknown (one seed, an exact value on a subset): the direction decides, as
  # verdict_over_seeds does with one seed.
  beyond = [c["beyond_noise"] is not False for c in comparisons]
  if any(not c["toward"] and b for c, b in zip(comparisons, beyond)):
    return "not reproduced"
  if all(c["toward"] and b for c, b in zip(comparisons, beyond)):
    return "reproduced"
  noisy = [c for c in comparisons if c["beyond_noise"] is False]
  return "within seed spread" if noisy and noisy[0]["noise"] == "seed spread" else (
      "within sampling noise")


def finding(name, claim, study, ours, status) -> dict:
  """One row of the findings table."""
  return {"name": name, "claim": claim, "study": study, "ours": ours, "status": status}


def verdict(ok) -> str:
  """``reproduced`` / ``not reproduced`` for a yes/no outcome (None: ``not measured``)."""
  if ok is None:
    return "not measured"
  return "reproduced" if ok else "not reproduced"


def percent(x) -> str:
  return "-" if x is None else f"{100 * x:.0f}%"
