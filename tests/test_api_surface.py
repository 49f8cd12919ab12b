"""The stable public surface: deprecated names work with a warning, every public name is documented."""

import os
import warnings

import jax
import pytest

import _tiny as tiny
from snnjax import estimators as est

DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "estimators.md")


def test_fisher_trace_kind_keyword_still_works_with_a_deprecation_warning():
  model, batch = tiny.classifier("mlp")
  with pytest.warns(DeprecationWarning, match="labels='data'"):
    old = est.fisher_trace(model.logits_fn, model.params, batch, kind="empirical")
  assert old.value == est.fisher_trace(model.logits_fn, model.params, batch,
                                       labels="data").value


def test_eigen_result_extra_still_works_with_a_deprecation_warning():
  model, batch = tiny.curvature("linear")
  res = est.top_eigenvalues(model.loss_fn, model.params, batch, k=2, key=jax.random.key(0),
                            num_iters=10)
  with pytest.warns(DeprecationWarning):
    extra = res.extra
  assert extra["eigenvalues"][0] == res.value and extra["method"] == "lanczos"
  with pytest.warns(DeprecationWarning):
    assert res.stderr == res.residual
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    res.as_dict()  # the current API warns nothing


def test_every_public_name_is_in_the_reference_page():
  with open(DOCS, encoding="utf-8") as f:
    text = f.read()
  missing = [name for name in est.__all__ if f"`{name}" not in text and f"{name}(" not in text]
  assert not missing, missing
