"""The train state: everything a run needs to continue, as one pytree."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Params, BatchNorm statistics, the fixed mask, optimizer state and the step count.

  ``mask`` has the params' structure with bool leaves (all True for a dense run). ``batch_stats`` is
  ``{}`` for models without BatchNorm.
  """

  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  mask: PyTree
  opt_state: PyTree

  @classmethod
  def create(cls, params, batch_stats, mask, tx) -> "TrainState":
    return cls(step=jnp.asarray(0, jnp.int32), params=params, batch_stats=batch_stats, mask=mask,
               opt_state=tx.init(params))

  def to_dict(self) -> dict:
    return {"step": self.step, "params": self.params, "batch_stats": self.batch_stats,
            "mask": self.mask, "opt_state": self.opt_state}

  @classmethod
  def from_dict(cls, d: dict) -> "TrainState":
    return cls(step=d["step"], params=d["params"], batch_stats=d["batch_stats"], mask=d["mask"],
               opt_state=d["opt_state"])
