"""Blocks of parameters: per-leaf / per-layer / user-grouped breakdowns of a curvature total.

Every estimator that takes ``blocks=`` computes its per-probe or per-example values once per
param leaf (L leaves, ``jax.tree.leaves`` order) from the same probes or per-example gradients as
its total, then sums leaves into blocks on the host in float64. The blocks partition the leaves,
so they sum to the total (itself the sum over leaves) up to float64 rounding.

``blocks`` is one of:

* ``"leaf"``: one block per leaf, named by its path (``"stem/kernel"``; for ``flax.nnx`` states
  (``nnx.split``) the trailing ``/value`` of each Variable is left out, so nnx and linen models
  get the same names);
* ``"layer"``: leaves grouped by their path minus the last key (``"stem/kernel"`` and
  ``"stem/bias"`` -> ``"stem"``);
* a mapping ``{block name: [path prefixes]}``: a leaf joins the first block one of whose prefixes
  its path starts with, as plain strings (``"stage1"`` matches ``"stage1_block0/conv1/kernel"``,
  ``"stem"`` also ``"stem_bn/scale"``; end a prefix with ``"/"`` to match one module only);
  leaves that match none form the block ``"(other)"``;
* a callable ``path -> block name``.

Block order: first appearance over the leaves.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import numpy as np

from snnjax.errors import UserError

PyTree = Any
BlockSpec = str | Mapping[str, Sequence[str]] | Callable[[str], str]
OTHER = "(other)"


class Blocks(NamedTuple):
  """A partition of the param leaves: ``names`` (B,) and ``of_leaf`` (L,) block indices."""
  names: tuple[str, ...]
  of_leaf: np.ndarray

  def sum_leaves(self, values: Any) -> np.ndarray:
    """Per-leaf values (..., L) -> per-block sums (..., B), float64."""
    values = np.asarray(values, np.float64)
    out = np.zeros(values.shape[:-1] + (len(self.names),))
    for leaf, block in enumerate(self.of_leaf):
      out[..., block] += values[..., leaf]
    return out


def _key_str(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


_WRAPPER_ATTRS = ("value", "raw_value")  # a Variable's array (flax.nnx State leaves: .../value)


def _path_keys(path: tuple) -> list[str]:
  """The keys of one leaf path as strings, without a trailing Variable wrapper attribute."""
  keys = list(path)
  while (len(keys) > 1 and isinstance(keys[-1], jax.tree_util.GetAttrKey)
         and keys[-1].name in _WRAPPER_ATTRS):
    keys.pop()
  return [_key_str(k) for k in keys]


def leaf_paths(params: PyTree) -> list[str]:
  """The params' leaf paths as ``"a/b/c"`` strings, in ``jax.tree.leaves`` order.

  A trailing ``.value`` (the array of a ``flax.nnx`` Variable: ``nnx.split`` states) is left
  out, so an nnx state's paths (``"stem/kernel"``) and blocks are named as the linen params'.
  """
  return ["/".join(_path_keys(path))
          for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _name_of(spec: BlockSpec) -> Callable[[str], str]:
  if spec == "leaf":
    return lambda path: path
  if spec == "layer":
    return lambda path: path.rsplit("/", 1)[0] if "/" in path else path
  if isinstance(spec, Mapping):
    groups = []
    for name, prefixes in spec.items():
      if isinstance(prefixes, str):
        prefixes = [prefixes]
      groups.append((str(name), tuple(str(p) for p in prefixes)))

    def grouped(path):
      for name, prefixes in groups:
        if any(path.startswith(p) for p in prefixes):
          return name
      return OTHER
    return grouped
  if callable(spec):
    return lambda path: str(spec(path))
  raise UserError(f"blocks must be 'leaf', 'layer', a mapping name -> path prefixes or a "
                  f"callable path -> name, got {spec!r}")


def make_blocks(params: PyTree, spec: BlockSpec) -> Blocks:
  """The partition of ``params``' leaves that ``spec`` describes (module doc)."""
  name_of = _name_of(spec)
  names: list[str] = []
  of_leaf = []
  for path in leaf_paths(params):
    name = name_of(path)
    if name not in names:
      names.append(name)
    of_leaf.append(names.index(name))
  if not names:
    raise UserError("params hold no leaves to group into blocks")
  return Blocks(tuple(names), np.asarray(of_leaf, np.int64))
