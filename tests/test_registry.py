"""Tests for snnjax.models.registry."""

import jax
import pytest

from snnjax.errors import UserError
from snnjax.models import registry


def test_names():
  assert registry.model_names() == ("mlp", "cnn", "resnet20", "resnet32", "resnet56",
                                    "wide_resnet32")
  assert set(registry.MODELS) == set(registry.model_names())


def test_wide_resnet32_defaults():
  model = registry.create_model("wide_resnet32", 100)
  assert model.width == 4.0 and model.shortcut == "B" and model.num_blocks == 5
  assert registry.create_model("resnet32", 10, width=4, shortcut="B") == model.clone(
      num_classes=10)


@pytest.mark.parametrize("name,kwargs,match", [
    ("vgg", {}, "unknown model"),
    ("resnet20", {"shortcut": "C"}, "shortcut"),
    ("resnet20", {"width": 0}, "width"),
    ("resnet20", {"depth": 3}, "bad options"),
    ("mlp", {"activation": "gelu"}, "activation"),
    ("cnn", {"channels": (8,), "strides": (1, 2)}, "equal length"),
])
def test_bad_input(name, kwargs, match):
  with pytest.raises(UserError, match=match):
    registry.create_model(name, 10, **kwargs)
  with pytest.raises(UserError, match="num_classes"):
    registry.create_model("mlp", 0)


def test_init_variables_returns_plain_dicts():
  params, batch_stats = registry.init_variables(registry.create_model("mlp", 3),
                                                jax.random.key(0), (5,))
  assert type(params) is dict and batch_stats == {}
