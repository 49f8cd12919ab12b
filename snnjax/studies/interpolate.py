"""Linear interpolation between any two checkpoints: loss, accuracy and barrier along the segment.

``interpolate(a, b)`` evaluates theta(alpha) = (1 - alpha) * theta_a + alpha * theta_b for every
alpha of ``alphas`` (0 and 1 always added; the default runs beyond the segment, -0.2 ... 1.2), where
a and b are checkpoints of two runs of one architecture and dataset (two seeds, two regimes, Init-S
and Sol-F: any work dir, ``WORKDIR/init``, ``WORKDIR/checkpoints/<step>``, or a work dir and a
step). The library behind ``scripts/interpolate.py`` and the study's interpolation stage.

- **Mask**: the segment lives in the union of the two masks (default: every weight either network
  uses), or within one endpoint's mask (``mask="a"`` / ``"b"``) or their intersection; coordinates
  outside it are 0 at every alpha (an endpoint with weights outside it is then not reproduced at
  its alpha: ``endpoints_exact`` says whether both are, bit for bit).
- **BatchNorm statistics**: the running statistics stored with a checkpoint belong to its weights,
  not to the points in between, so by default (``bn="recompute"``) they are recomputed at every
  alpha, endpoints included, as exact population statistics of the training inputs
  (``snnjax.train.recompute_batch_stats``). ``bn="stored"`` interpolates the two endpoints' stored
  statistics linearly (at alpha 0 and 1: each endpoint's own, so the endpoints reproduce their
  ``metrics.jsonl`` numbers exactly); ``bn="a"`` / ``"b"`` uses one endpoint's stored statistics at
  every alpha (wrong at the other end: shown for comparison only).
- **Metrics**: mean cross-entropy (nats per example) and accuracy, eval mode, on the test split and
  on training examples: by default the very examples and labels a run's ``metrics.jsonl`` records
  (``config.train_eval_size`` of endpoint a, labels trained on, noisy ones included), or ``true``
  labels (``train_labels="true"``) on ``train_examples`` seeded examples.
- **Barrier** (linear mode connectivity, Frankle et al. 2020): for a quantity q (loss, or error =
  1 - accuracy) the height is max over the evaluated alpha in [0, 1] of
  q(alpha) - ((1 - alpha) q(0) + alpha q(1)): how far the path rises above the chord between the
  endpoints (>= 0; 0 when no point lies above it). Reported for train and test, loss and error.
- **Distance and disagreement**: the L2 distance ||theta_b - theta_a|| within the mask, and the
  fraction of test examples whose predicted class differs between alpha = 0 and alpha = 1 (each
  endpoint with the statistics of the chosen ``bn`` mode).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.errors import UserError, check
from snnjax.train import config_io
from snnjax.train import evaluate as evaluate_lib
from snnjax.train.batchnorm import recompute_batch_stats
from snnjax.train.run_dir import RunDir
from snnjax.train.solution import Solution, load_solution

PyTree = Any

DEFAULT_ALPHAS = tuple(round(-0.2 + 0.1 * i, 10) for i in range(15))  # -0.2, -0.1, ..., 1.2
MASKS = ("union", "intersection", "a", "b")
BN_MODES = ("recompute", "stored", "a", "b")
TRAIN_LABELS = ("trained", "true")
QUANTITIES = ("train_loss", "train_error", "test_loss", "test_error")


def interpolate_params(start: PyTree, end: PyTree, alpha: float, mask: PyTree) -> PyTree:
  """(1 - alpha) * start + alpha * end on the active coordinates of ``mask``, 0 elsewhere.

  At alpha = 0 and alpha = 1 this returns ``start`` and ``end`` bit for bit (on their active
  coordinates): (1 - 1) * a + 1 * b = b and 1 * a + 0 * b = a exactly in floating point. A
  coordinate where ``start`` and ``end`` agree keeps that value at every alpha (in floating point
  (1 - alpha) * a + alpha * a may differ from a in the last bit), so a segment from a network to
  itself is that network at every alpha.
  """
  return jax.tree.map(
      lambda a, b, m: jnp.where(jnp.asarray(m, bool),
                                jnp.where(a == b, a, (1.0 - alpha) * a + alpha * b),
                                jnp.zeros_like(a)), start, end, mask)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
  return jax.tree.map(jnp.subtract, a, b)


def l2_norm(tree: PyTree, mask: PyTree | None = None) -> float:
  """sqrt(sum of squares) of every leaf of ``tree`` (restricted to ``mask``), in float64."""
  if mask is not None:
    tree = jax.tree.map(lambda t, m: np.where(np.asarray(m, bool), np.asarray(t), 0), tree, mask)
  return float(np.sqrt(sum(float(np.vdot(np.asarray(t, np.float64), np.asarray(t, np.float64)))
                           for t in jax.tree.leaves(tree))))


def combine_masks(mask_a: PyTree, mask_b: PyTree, how: str) -> PyTree:
  """The mask of the segment: ``union`` | ``intersection`` | ``a`` | ``b`` (bool pytree)."""
  check(how in MASKS, f"mask must be one of {MASKS}, got {how!r}")
  op = {"union": np.logical_or, "intersection": np.logical_and,
        "a": lambda x, y: x, "b": lambda x, y: y}[how]
  return jax.tree.map(lambda x, y: np.asarray(op(np.asarray(x, bool), np.asarray(y, bool))),
                      mask_a, mask_b)


def barrier(alphas: Sequence[float], values: Sequence[float]) -> dict:
  """``{"height", "alpha"}``: max over alpha in [0, 1] of values(alpha) minus the chord
  (1 - alpha) values(0) + alpha values(1), and where it is reached; ``alphas`` must hold 0 and 1.

  The endpoints lie on the chord, so the height is >= 0 (0: nothing evaluated rises above it).
  """
  alphas = [float(a) for a in alphas]
  check(0.0 in alphas and 1.0 in alphas, "a barrier needs the values at alpha 0 and 1")
  v0, v1 = float(values[alphas.index(0.0)]), float(values[alphas.index(1.0)])
  best, where = 0.0, 0.0
  for a, v in zip(alphas, values):
    if 0.0 <= a <= 1.0:
      excess = float(v) - (v0 + a * (v1 - v0))  # the chord; exactly v0 when v1 == v0
      if excess > best:
        best, where = excess, a
  return {"height": best, "alpha": where}


@dataclasses.dataclass(frozen=True)
class Path:
  """What :func:`evaluate_path` evaluates along one segment.

  ``model`` is any ``Solution`` of the architecture (its ``predict`` is used with other params
  and statistics). ``stats_at(alpha, params) -> batch_stats`` gives the BatchNorm statistics at a
  point (see :func:`stats_function`).
  """

  model: Solution
  start: PyTree
  end: PyTree
  mask: PyTree
  stats_at: Callable[[float, PyTree], PyTree]


def stats_function(bn: str, model: Solution, start_stats: PyTree, end_stats: PyTree, *,
                   bn_x: np.ndarray | None = None, bn_batch_size: int = 500
                   ) -> Callable[[float, PyTree], PyTree]:
  """``stats_at(alpha, params)`` of a BatchNorm mode (``BN_MODES``, see the module docstring);
  ``bn_x`` (N, ...) are the inputs whose population statistics ``recompute`` uses."""
  check(bn in BN_MODES, f"bn must be one of {BN_MODES}, got {bn!r}")
  if bn == "recompute":
    check(bn_x is not None and len(bn_x) > 0, "bn=recompute needs training inputs (bn_x)")
    return lambda alpha, params: recompute_batch_stats(model.apply_fn, params, end_stats, bn_x,
                                                       batch_size=bn_batch_size)
  if bn == "stored":
    return lambda alpha, params: jax.tree.map(lambda a, b: (1.0 - alpha) * a + alpha * b,
                                              start_stats, end_stats)
  fixed = start_stats if bn == "a" else end_stats
  return lambda alpha, params: fixed


def evaluate_path(path: Path, alphas: Sequence[float], *, train: tuple, test: tuple,
                  on_point: Callable | None = None, keep_predictions: Sequence[float] = (),
                  batch_size: int = 500, log: Callable | None = None) -> tuple[dict, dict]:
  """Loss and accuracy at every alpha of ``alphas`` (in the order given).

  Args:
    path: the segment (:class:`Path`).
    train, test: ``(x (N, ...), y (N,))`` numpy; the mean cross-entropy and accuracy are over
      their N examples, eval mode, with the statistics of ``path.stats_at``.
    on_point: ``on_point(alpha, params, stats)`` at every alpha (the study's cosines).
    keep_predictions: alphas whose predicted test classes are returned.
  Returns:
    ``({"alphas", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}: lists of floats,
    {alpha: (N_test,) int predicted classes})``.
  """
  log = log or (lambda m: None)
  out = {"alphas": [float(a) for a in alphas], "train_loss": [], "train_accuracy": [],
         "test_loss": [], "test_accuracy": []}
  kept = {}
  keep = {float(a) for a in keep_predictions}
  for alpha in out["alphas"]:
    params = interpolate_params(path.start, path.end, alpha, path.mask)
    stats = path.stats_at(alpha, params)
    tr = path.model.evaluate(train[0], train[1], params=params, batch_stats=stats,
                             batch_size=batch_size)
    logits = path.model.predict(test[0], params=params, batch_stats=stats, batch_size=batch_size)
    te = evaluate_lib.loss_and_accuracy(logits, np.asarray(test[1]))
    if alpha in keep:
      kept[alpha] = logits.argmax(1)
    for split, m in (("train", tr), ("test", te)):
      out[f"{split}_loss"].append(m["loss"])
      out[f"{split}_accuracy"].append(m["accuracy"])
    log(f"alpha={alpha:+.2f} train loss {tr['loss']:.4f} test acc {te['accuracy']:.4f}")
    if on_point is not None:
      on_point(alpha, params, stats)
  return out, kept


def load_endpoint(spec, step: int | None = None) -> Solution:
  """A ``Solution`` from a ``Solution``, a ``RunDir`` or a path ``load_solution`` reads (a work
  dir: its latest checkpoint or, with ``step``, the kept checkpoint at that step;
  ``WORKDIR/init``: Init-S / Init-F / Sol-D's init; ``WORKDIR/checkpoints/<step>``)."""
  if isinstance(spec, Solution):
    check(step is None or step == spec.step, f"a loaded solution is at step {spec.step}, not {step}")
    return spec
  if isinstance(spec, RunDir):
    spec = spec.path
  return load_solution(os.fspath(spec), step=step)


def _workdir(sol: Solution) -> str:
  return os.path.dirname(os.path.dirname(sol.path))  # WORKDIR/{checkpoints,init,...}/<step>


def _stored_metrics(sol: Solution) -> dict | None:
  """The metrics.jsonl record of the checkpoint's step (train/test loss and accuracy), if any."""
  if os.path.basename(os.path.dirname(sol.path)) != "checkpoints":
    return None
  try:
    records = RunDir(_workdir(sol)).epoch_records()
  except UserError:
    return None
  for r in reversed(records):
    if r.get("step") == sol.step and r.get("test_accuracy") is not None:
      return {k: r.get(k) for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")}
  return None


def _describe(sol: Solution) -> dict:
  workdir = _workdir(sol)
  try:
    identity = RunDir(workdir).identity
  except UserError:
    identity = None
  return {"checkpoint": sol.path, "workdir": workdir, "step": int(sol.step),
          "epoch": int(sol.epoch), "regime": sol.config.regime,
          "sparsity": float(sol.config.sparsity), "seed": int(sol.config.seed),
          "identity": identity, "stored_metrics": _stored_metrics(sol)}


def subset(n: int, size: int, seed: int) -> np.ndarray:
  """All of ``range(n)`` (size 0 or >= n) or a sorted seeded subset of ``size``."""
  if size <= 0 or size >= n:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def _check_pair(a: Solution, b: Solution) -> None:
  if a.architecture != b.architecture:
    raise UserError(f"the endpoints have different architectures ({a.config.model.name} "
                    f"{dict(a.config.model.kwargs)} vs {b.config.model.name} "
                    f"{dict(b.config.model.kwargs)}); interpolation needs one parameter space")
  da = config_io.config_to_dict(a.config.dataset)
  db = config_io.config_to_dict(b.config.dataset)
  diff = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k) and k != "augment")
  if diff:
    raise UserError(f"the endpoints were trained on different data (dataset.{diff[0]}: "
                    f"{da.get(diff[0])!r} vs {db.get(diff[0])!r}); pass dataset= to choose one")


def interpolate(a, b, *, alphas: Sequence[float] = DEFAULT_ALPHAS, step_a: int | None = None,
                step_b: int | None = None, mask: str = "union", bn: str = "recompute",
                dataset=None, train_examples: int | None = None, train_labels: str = "trained",
                bn_examples: int = 0, bn_batch_size: int = 500, seed: int = 0,
                batch_size: int = 500, log: Callable | None = None) -> dict:
  """Evaluates the segment from checkpoint ``a`` (alpha 0) to checkpoint ``b`` (alpha 1).

  Args:
    a, b: a ``Solution``, a ``RunDir`` or a path (work dir, ``WORKDIR/init``,
      ``WORKDIR/checkpoints/<step>``); ``step_a`` / ``step_b`` pick a kept checkpoint of a work dir.
    alphas: the points (0 and 1 are always added; sorted). Default -0.2, -0.1, ..., 1.2.
    mask: ``union`` (default) | ``intersection`` | ``a`` | ``b``: where the segment lives.
    bn: ``recompute`` (default) | ``stored`` | ``a`` | ``b``: BatchNorm statistics at each point.
    dataset: a ``snnjax.data.Dataset`` (default: loaded from a's config; a and b must agree).
    train_examples: training examples evaluated; None (default): a's ``config.train_eval_size``
      subset (seed ``config.seed``), as its metrics.jsonl; 0: all; n: n seeded by ``seed``.
    train_labels: ``trained`` (default: the labels trained on, as metrics.jsonl) | ``true``.
    bn_examples: training inputs for ``recompute`` (0 = all; n: n seeded by ``seed + 1``).
    bn_batch_size: the batch size of ``recompute`` (only full batches are used).
  Returns:
    A JSON-able dict: ``a``, ``b`` (checkpoint, workdir, step, epoch, regime, sparsity, seed,
    identity, ``stored_metrics``: the metrics.jsonl record at that step or None), the settings
    (``mask``, ``mask_density``: active fraction of all parameters, ``bn``, ``train_labels``,
    ``num_train_examples``, ``num_test_examples``), ``alphas`` and per alpha ``train_loss``,
    ``train_accuracy``, ``test_loss``, ``test_accuracy``; ``barrier``: ``{q: {"height",
    "alpha"}}`` for q in ``train_loss``, ``train_error``, ``test_loss``, ``test_error``;
    ``l2_distance`` (||theta_b - theta_a|| within the mask), ``test_disagreement`` (fraction of
    test examples predicted differently at alpha 0 and 1), ``endpoints_exact``, ``same_mask``.
  Raises:
    UserError: a bad setting, a missing checkpoint, endpoints of different architectures or data.
  """
  check(bn in BN_MODES, f"bn must be one of {BN_MODES}, got {bn!r}")
  check(mask in MASKS, f"mask must be one of {MASKS}, got {mask!r}")
  check(train_labels in TRAIN_LABELS, f"train_labels must be one of {TRAIN_LABELS}, "
                                      f"got {train_labels!r}")
  try:
    alpha_list = sorted({float(x) for x in alphas} | {0.0, 1.0})
  except (TypeError, ValueError) as e:
    raise UserError(f"alphas must be numbers, got {alphas!r}") from e
  check(all(np.isfinite(alpha_list)), f"alphas must be finite, got {alphas!r}")
  check(train_examples is None or int(train_examples) >= 0, "train_examples must be >= 0")
  check(int(bn_examples) >= 0 and int(bn_batch_size) >= 1,
        "bn_examples must be >= 0 and bn_batch_size >= 1")
  sol_a, sol_b = load_endpoint(a, step_a), load_endpoint(b, step_b)
  if dataset is None:
    _check_pair(sol_a, sol_b)
    from snnjax import data as data_lib  # pylint: disable=import-outside-toplevel
    dataset = data_lib.load_dataset(sol_a.config.dataset)
  elif sol_a.architecture != sol_b.architecture:
    _check_pair(sol_a, sol_b)
  if train_examples is None:
    idx = subset(dataset.num_train, int(sol_a.config.train_eval_size), int(sol_a.config.seed))
  else:
    idx = subset(dataset.num_train, int(train_examples), int(seed))
  labels = dataset.y_train if train_labels == "trained" else dataset.y_train_true
  bn_x = dataset.x_train[subset(dataset.num_train, int(bn_examples), int(seed) + 1)]
  seg_mask = combine_masks(sol_a.mask, sol_b.mask, mask)
  path = Path(model=sol_a, start=sol_a.params, end=sol_b.params, mask=seg_mask,
              stats_at=stats_function(bn, sol_a, sol_a.batch_stats, sol_b.batch_stats,
                                      bn_x=bn_x, bn_batch_size=int(bn_batch_size)))
  line, predictions = evaluate_path(
      path, alpha_list, train=(dataset.x_train[idx], labels[idx]),
      test=(dataset.x_test, dataset.y_test), keep_predictions=(0.0, 1.0),
      batch_size=int(batch_size), log=log)
  out = {"a": _describe(sol_a), "b": _describe(sol_b), "mask": mask,
         "mask_density": _density(seg_mask), "bn": bn, "train_labels": train_labels,
         "num_train_examples": int(idx.size), "num_test_examples": int(dataset.num_test),
         **line}
  out["barrier"] = {
      f"{split}_{kind}": barrier(alpha_list, out[f"{split}_loss"] if kind == "loss"
                                 else [1.0 - v for v in out[f"{split}_accuracy"]])
      for split in ("train", "test") for kind in ("loss", "error")}
  out["l2_distance"] = l2_norm(tree_sub(sol_b.params, sol_a.params), seg_mask)
  out["test_disagreement"] = float(np.mean(predictions[0.0] != predictions[1.0]))
  out["endpoints_exact"] = bool(
      trees_equal(interpolate_params(sol_a.params, sol_b.params, 0.0, seg_mask), sol_a.params)
      and trees_equal(interpolate_params(sol_a.params, sol_b.params, 1.0, seg_mask), sol_b.params))
  out["same_mask"] = trees_equal(sol_a.mask, sol_b.mask)
  return out


def trees_equal(x: PyTree, y: PyTree) -> bool:
  return all(bool(np.array_equal(np.asarray(p), np.asarray(q)))
             for p, q in zip(jax.tree.leaves(x), jax.tree.leaves(y)))


def _density(mask: PyTree) -> float:
  leaves = [np.asarray(m, bool) for m in jax.tree.leaves(mask)]
  return float(sum(int(m.sum()) for m in leaves) / max(1, sum(m.size for m in leaves)))


def plot(result: dict, path: str, *, title: str | None = None) -> str:
  """Loss (log scale) and error along alpha, train and test, with each chord between the
  endpoints (dotted) and the barrier heights in the titles; PNG at ``path``."""
  from snnjax.studies import figures  # pylint: disable=import-outside-toplevel (matplotlib)
  alphas = np.asarray(result["alphas"])
  fig, axes = figures.plt.subplots(1, 2, figsize=(12, 4.2))
  colors = {"train": "#1f77b4", "test": "#ff7f0e"}
  for ax, kind in zip(axes, ("loss", "error")):
    for split in ("train", "test"):
      values = (np.asarray(result[f"{split}_loss"]) if kind == "loss"
                else 1.0 - np.asarray(result[f"{split}_accuracy"]))
      v0, v1 = values[list(alphas).index(0.0)], values[list(alphas).index(1.0)]
      h = result["barrier"][f"{split}_{kind}"]["height"]
      ax.plot(alphas, values, marker="o", ms=3, color=colors[split],
              label=f"{split} (barrier {h:.3g})")
      ax.plot([0.0, 1.0], [v0, v1], ls=":", color=colors[split], lw=1)
    ax.axvline(0, color="k", lw=0.5)
    ax.axvline(1, color="k", lw=0.5)
    ax.set_xlabel("alpha (0 = a, 1 = b)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
  figures.log_axis(axes[0])
  axes[0].set_ylabel("cross-entropy (nats per example)")
  axes[1].set_ylabel("error (fraction misclassified)")
  a, b = result["a"], result["b"]
  name = lambda e: f"{os.path.basename(e['workdir'])} step {e['step']}"
  fig.suptitle(title or f"{name(a)} -> {name(b)}; mask {result['mask']}, BN statistics "
               f"{result['bn']}; dotted: the chord between the endpoints")
  return figures.save(fig, path)
