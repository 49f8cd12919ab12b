"""Which parameters a mask may prune, and readable names for pytree paths.

The study prunes every conv and linear weight (``kernel`` leaves of rank >= 2) except the
last (classifier) layer; the first conv and shortcut convs are pruned. Biases and BatchNorm
scales/biases are never pruned.
"""

from __future__ import annotations

from typing import Any

import jax

PyTree = Any


def path_str(path) -> str:
  """``"stage1_block0/conv1/kernel"`` for a ``jax.tree_util`` key path."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def _components(path) -> list[str]:
  return path_str(path).split("/")


def prunable(params: PyTree, *, include_first: bool = True, include_last: bool = False,
             first_name: str = "stem", last_name: str = "head") -> PyTree:
  """A pytree of Python bools with ``params``' structure: True where a leaf may be pruned.

  A leaf is prunable when its name is ``kernel`` and it has rank >= 2 (conv and dense
  weights). Leaves under a module called ``first_name`` (any path component) are prunable
  only with ``include_first``; under ``last_name`` only with ``include_last``.

  Args:
    params: a params pytree (arrays or anything with ``.ndim`` / ``.shape``).
    include_first: prune the first layer's kernel (the study does).
    include_last: prune the classifier's kernel (the study does not).
    first_name: module name of the first layer.
    last_name: module name of the classifier.
  """

  def leaf_rule(path, leaf):
    names = _components(path)
    if names[-1] != "kernel" or len(getattr(leaf, "shape", ())) < 2:
      return False
    if first_name in names[:-1] and not include_first:
      return False
    if last_name in names[:-1] and not include_last:
      return False
    return True

  return jax.tree_util.tree_map_with_path(leaf_rule, params)
