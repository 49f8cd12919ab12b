"""Tests for snnjax.sparsity.selection."""

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.models import registry
from snnjax.sparsity import selection


def _resnet20_shapes(shortcut="A"):
  model = registry.create_model("resnet20", 10, shortcut=shortcut)
  return jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False),
                        jax.random.key(0))["params"]


def _selected(tree, flags):
  return {selection.path_str(p) for (p, _), f in
          zip(jax.tree_util.tree_flatten_with_path(tree)[0], jax.tree.leaves(flags)) if f}


def test_study_default_all_kernels_but_head():
  params = _resnet20_shapes("B")
  flags = selection.prunable(params)
  assert all(isinstance(f, bool) for f in jax.tree.leaves(flags))
  assert jax.tree.structure(flags) == jax.tree.structure(params)
  chosen = _selected(params, flags)
  assert "stem/kernel" in chosen and "stage2_block0/shortcut_conv/kernel" in chosen
  assert "head/kernel" not in chosen and "head/bias" not in chosen
  assert not any("bn" in c or c.endswith("bias") or c.endswith("scale") for c in chosen)
  # 19 convs + 2 shortcut convs.
  assert len(chosen) == 21


def test_first_and_last_selectable():
  params = _resnet20_shapes()
  chosen = _selected(params, selection.prunable(params, include_first=False,
                                                   include_last=True))
  assert "stem/kernel" not in chosen and "head/kernel" in chosen and "head/bias" not in chosen


def test_custom_names_and_rank():
  params = {"input": {"kernel": np.zeros((4, 3))}, "out": {"kernel": np.zeros((3, 2))},
            "vec": {"kernel": np.zeros(3)}}
  flags = selection.prunable(params, include_first=False, first_name="input",
                                last_name="out")
  assert flags == {"input": {"kernel": False}, "out": {"kernel": False},
                   "vec": {"kernel": False}}
  assert selection.prunable(params, last_name="out", include_last=True)["out"]["kernel"]


def test_path_str():
  (path, _), = jax.tree_util.tree_flatten_with_path({"a": [None, {"b": 1}]})[0]
  assert selection.path_str(path) == "a/1/b"
