"""Which of the study's findings a run reproduced, with the study's own numbers beside ours.

The study's numbers (``../shared/STUDY-NOTES.md``) are for CIFAR-100 with the 4x-wide ResNet-32;
only the ``paper`` preset has that setup, so elsewhere only the *direction* of each finding is
compared (the study itself notes that its later blog table differs in absolute values).
"""

from __future__ import annotations

from snnjax.studies import closing_gap as closing_gap_lib

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


def _means(rows, metric):
  out = {}
  for r in rows:
    if r[metric] is not None:
      out[(r["regime"], r["sparsity"])] = r[metric]["mean"]
  return out


def _pairs(rows, metric):
  m = _means(rows, metric)
  sparsities = sorted({s for (reg, s) in m if reg == "scratch" and ("finetune", s) in m})
  return [(s, m[("finetune", s)], m[("scratch", s)]) for s in sparsities]


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


def _finding(name, claim, study, ours, status):
  return {"name": name, "claim": claim, "study": study, "ours": ours, "status": status}


def _verdict(ok) -> str:
  if ok is None:
    return "not measured"
  return "reproduced" if ok else "not reproduced"


def evaluate_findings(results: dict, setups_match: bool) -> list[dict]:
  """The study's findings, each with its status: reproduced / not reproduced / not measured."""
  rows = results.get("table", {}).get("rows", [])
  out = []

  def study_pairs(metric):
    if metric == "train_error":
      return "Sol-S train acc .976 (0.92), .944 (0.94), .905 (0.96); Sol-F ~1.0"
    return "; ".join(f"{s:.2f}: F {study_value(metric, 'finetune', s)} vs "
                     f"S {study_value(metric, 'scratch', s)}" for s in (0.90, 0.94, 0.96))

  for metric, claim in (
      ("test_accuracy", "Sol-S has lower test accuracy than Sol-F at every sparsity"),
      ("train_error", "Sol-S fits the training set worse than Sol-F (higher train error)"),
      ("tr_f", "Tr(F) of Sol-S exceeds that of Sol-F at every sparsity"),
      ("tr_h", "Tr(H) of Sol-S exceeds that of Sol-F at every sparsity"),
      ("jacobian", "the Jacobian norm of Sol-S exceeds that of Sol-F at every sparsity")):
    comparisons = compare_over_seeds(rows, metric, scratch_higher=metric != "test_accuracy")
    if not comparisons:
      out.append(_finding(metric, claim, study_pairs(metric), "-", "not measured"))
      continue
    out.append(_finding(metric, claim, study_pairs(metric), describe_comparisons(comparisons),
                        verdict_over_seeds(comparisons)))
    out[-1]["comparisons"] = comparisons

  for metric, label in (("tr_f", "Tr(F)"), ("tr_h", "Tr(H)")):
    m = _means(rows, metric)
    pairs = _pairs(rows, metric)
    if len(pairs) >= 2:
      rising = all(b[1] >= a[1] and b[2] >= a[2] for a, b in zip(pairs, pairs[1:]))
      ours = "; ".join(f"{s:.2f}: F {f:.3g}, S {sc:.3g}" for s, f, sc in pairs)
      out.append(_finding(f"{metric}_rises", f"{label} rises with sparsity (Sol-F and Sol-S)",
                          "yes (table above)", ours, _verdict(rising)))
    dense = [v for (reg, _), v in m.items() if reg == "dense"]
    sparse = [v for (reg, _), v in m.items() if reg != "dense"]
    if dense and sparse:
      ok = dense[0] < min(sparse)
      out.append(_finding(f"{metric}_dense_lowest", f"Sol-D has the smallest {label}",
                          f"Sol-D {STUDY[metric]['dense']}, sparse >= "
                          f"{min(STUDY[metric]['finetune'].values())}",
                          f"Sol-D {dense[0]:.3g}, sparse min {min(sparse):.3g}", _verdict(ok)))

  ln = results.get("label_noise", {})
  finals = {r["regime"]: r["final"] for r in ln.values() if r.get("seed") == _first_seed(ln)}
  if "finetune" in finals and "scratch" in finals:
    f, s = finals["finetune"], finals["scratch"]
    ok = s["noisy_memorized"] < f["noisy_memorized"]
    # Binomial standard error of the difference of two fractions over the noisy examples.
    n = max(1.0, f["num_train"] * f["effective_noise_rate"])
    se = (sum(x["noisy_memorized"] * (1 - x["noisy_memorized"]) for x in (f, s)) / n) ** 0.5
    within = abs(s["noisy_memorized"] - f["noisy_memorized"]) < 2 * se
    out.append(_finding(
        "label_noise_memorization",
        "with 30% label noise, Sol-S memorizes fewer noisy labels than Sol-F (end of training)",
        "the study's argument (sparse-from-scratch fits hard / atypical examples less); the "
        "poster's CIFAR-10 numbers are not in our notes",
        f"memorized: F {f['noisy_memorized']:.3f} vs S {s['noisy_memorized']:.3f}; "
        f"correct: F {f['noisy_correct']:.3f} vs S {s['noisy_correct']:.3f}; clean test acc: "
        f"F {f['test_accuracy']:.3f} vs S {s['test_accuracy']:.3f}; memorized difference "
        f"{s['noisy_memorized'] - f['noisy_memorized']:+.3f} (2 x binomial stderr "
        f"{2 * se:.3f}, {n:.0f} noisy examples)",
        "within sampling noise" if within else _verdict(ok)))
  else:
    out.append(_finding("label_noise_memorization",
                        "with label noise, Sol-S memorizes fewer noisy labels than Sol-F",
                        "poster", "-", "not measured"))

  dis = results.get("disagreement", {})
  lt = [v for k, v in dis.items() if k.startswith("longtail")]
  if lt:
    t = lt[0]["train"]
    ok = t["concentration"] is not None and t["concentration"] > 1.0
    out.append(_finding(
        "disagreement_tail",
        "Sol-S and Sol-F disagree mostly on long-tailed / hard examples (long-tailed train set: "
        "tail classes over-represented among the disagreements)",
        "CIFAR-100 at 0.97: concentrated on the people classes (long-tailed, hard)",
        f"tail share of disagreements {t['tail_share_of_disagreements']:.2f} vs of examples "
        f"{t['tail_share_of_examples']:.2f}", _verdict(ok)))
  bal = [v for k, v in dis.items() if k.startswith("clean")]
  if bal:
    t = bal[0]["test"]
    ok = (t["finetune_correct"] is not None and t["scratch_correct"] is not None
          and t["finetune_correct"] > t["scratch_correct"])
    out.append(_finding(
        "disagreement_who_right",
        "where they disagree on the test set, Sol-F is right more often than Sol-S",
        "implied by the accuracy gap",
        f"F right {_pct(t['finetune_correct'])}, S right {_pct(t['scratch_correct'])} of "
        f"{t['num_disagree']} test disagreements", _verdict(ok)))

  interp = results.get("interpolation", {})
  if interp:
    line = next(iter(interp.values()))["init_s"]
    non_monotone = not line["monotone_train_loss_01"]
    out.append(_finding(
        "interpolation_not_monotone",
        "the train loss along Init-S -> Sol-F is not monotone (it first rises)",
        "not monotone: first rose", "not monotone" if non_monotone else "monotone decreasing",
        _verdict(non_monotone)))
  if results.get("closing_gap"):
    out.extend(closing_gap_lib.findings(results["closing_gap"]))
  for f in out:
    f["setups_match"] = setups_match
  return out


def _pct(x) -> str:
  return "-" if x is None else f"{100 * x:.0f}%"


def _first_seed(results: dict):
  seeds = sorted(r.get("seed", 0) for r in results.values())
  return seeds[0] if seeds else None
