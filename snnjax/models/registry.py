"""Model registry: ``create_model(name, num_classes, **kwargs)`` and ``init_variables``."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from snnjax.errors import UserError
from snnjax.models import cnn
from snnjax.models import mlp
from snnjax.models import resnet

PyTree = Any


def _mlp(num_classes: int, *, hidden_sizes: Sequence[int] = (100, 100),
         activation: str = "relu") -> nn.Module:
  if activation not in mlp.ACTIVATIONS:
    raise UserError(f"mlp activation must be one of {tuple(mlp.ACTIVATIONS)}, got {activation!r}")
  hidden_sizes = tuple(int(h) for h in hidden_sizes)
  if any(h < 1 for h in hidden_sizes):
    raise UserError(f"mlp hidden_sizes must be positive, got {hidden_sizes}")
  return mlp.MLP(num_classes, hidden_sizes, activation)


def _cnn(num_classes: int, *, channels: Sequence[int] = (32, 64, 64),
         strides: Sequence[int] = (1, 2, 2), width: float = 1.0) -> nn.Module:
  channels = tuple(int(round(c * width)) for c in channels)
  strides = tuple(int(s) for s in strides)
  if not channels or len(channels) != len(strides):
    raise UserError(f"cnn channels {channels} and strides {strides} must be non-empty and "
                    f"of equal length")
  if any(c < 1 for c in channels) or any(s < 1 for s in strides):
    raise UserError(f"cnn channels and strides must be positive, got {channels}, {strides}")
  return cnn.CNN(num_classes, channels, strides)


def _resnet(num_blocks: int, default_width: float = 1.0, default_shortcut: str = "A"
            ) -> Callable[..., nn.Module]:

  def factory(num_classes: int, *, width: float = default_width,
              shortcut: str = default_shortcut, materialize: bool | None = None) -> nn.Module:
    if shortcut not in resnet.SHORTCUTS:
      raise UserError(f"resnet shortcut must be one of {resnet.SHORTCUTS}, got {shortcut!r}")
    if not width > 0:
      raise UserError(f"resnet width must be > 0, got {width}")
    return resnet.ResNet(num_classes, num_blocks, float(width), shortcut,
                         materialize=materialize)

  factory.__doc__ = (f"CIFAR ResNet-{6 * num_blocks + 2} (width {default_width}, shortcut "
                     f"{default_shortcut}).")
  return factory


# name -> factory(num_classes, **kwargs) -> flax.linen.Module
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "resnet20": _resnet(3),
    "resnet32": _resnet(5),
    "resnet56": _resnet(9),
    # The study's main model: ResNet-32 with 64/128/256 channels and 1x1-conv shortcuts.
    "wide_resnet32": _resnet(5, default_width=4.0, default_shortcut="B"),
}


def model_names() -> tuple[str, ...]:
  """The names :func:`create_model` accepts."""
  return tuple(MODELS)


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Builds a registered model.

  Args:
    name: one of :func:`model_names`: ``"mlp"`` (kwargs ``hidden_sizes``, ``activation``),
      ``"cnn"`` (``channels``, ``strides``, ``width``), ``"resnet20"``, ``"resnet32"``,
      ``"resnet56"``, ``"wide_resnet32"`` (``width``, ``shortcut``).
    num_classes: number of output logits.
    **kwargs: model options, as listed.

  Returns:
    A ``flax.linen.Module`` called as ``model.apply(variables, x, train=bool)``.
  """
  if name not in MODELS:
    raise UserError(f"unknown model {name!r}; choose one of {model_names()}")
  if int(num_classes) != num_classes or num_classes < 1:
    raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
  try:
    return MODELS[name](int(num_classes), **kwargs)
  except TypeError as e:
    raise UserError(f"bad options for model {name!r}: {e}") from e


# The compiled init of each (model, input shape, options, key type): runs of one architecture
# (an ensemble's members, a study's seeds) compile it once per process.
_COMPILED_INITS: dict = {}


def _compile_init(model, key, input_shape, fast_compile):
  x = jnp.zeros((1, *tuple(input_shape)), jnp.float32)
  lowered = jax.jit(lambda k: model.init(k, x, train=False)).lower(key)
  if fast_compile:
    try:
      return lowered.compile(compiler_options=_FAST_COMPILE_OPTIONS)
    except Exception:  # pylint: disable=broad-except  # A backend without that option.
      pass
  return lowered.compile()


def init_variables(model: nn.Module, key: jax.Array, input_shape: Sequence[int], *,
                   fast_compile: bool = True) -> tuple[PyTree, PyTree]:
  """Initializes ``model`` on a dummy batch of one example of shape ``input_shape``.

  The init is jitted (XLA drops the dummy forward pass; what is left are the random
  initializers). With ``fast_compile`` it is compiled at XLA backend optimization level 0:
  on CPU that compiles a ResNet's init ~5x faster, and the values match ``model.init``'s to
  float32 rounding (~1e-7; they are a deterministic function of ``key`` either way).

  Args:
    model: a module from :func:`create_model`.
    key: PRNG key for the initializers.
    input_shape: shape of one example, without the batch axis, e.g. (32, 32, 3) or (40,).
    fast_compile: compile at optimization level 0 (False: XLA's default level).

  Returns:
    ``(params, batch_stats)``, plain dicts; ``batch_stats`` is ``{}`` for models without
    BatchNorm.
  """
  cache_key = (model, tuple(input_shape), bool(fast_compile), jax.typeof(key))
  try:
    compiled = _COMPILED_INITS.get(cache_key)
  except TypeError:  # an unhashable model option (a list): compiled for this call only
    cache_key, compiled = None, None
  if compiled is None:
    compiled = _compile_init(model, key, input_shape, fast_compile)
    if cache_key is not None:
      _COMPILED_INITS[cache_key] = compiled
  variables = compiled(key)
  return variables["params"], variables.get("batch_stats", {})


_FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0}
