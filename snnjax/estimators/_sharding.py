"""Examples split into chunks and sharded over local devices.

Every per-example estimator in this package runs a Python loop over chunks of examples, each
chunk one call of a jitted function that vmaps over the chunk's examples (never a conv inside
``lax.map``/``lax.scan``: 25-50x slower on CPU). The ``devices`` keyword of the estimators picks
where a chunk runs:

* ``None``: the default device, no sharding;
* ``"all"``: every local device (``jax.local_devices()``);
* a sequence of ``jax.Device``; under ``jax.distributed``, ``jax.devices()`` spans every
  process's devices (each process passes the same data and gets the same answer).

With devices, a chunk's leading (example) axis is placed on a 1-D mesh with the axis ``"data"``
(``NamedSharding(mesh, P("data"))``) and the params, mask and keys are replicated
(``NamedSharding(mesh, P())``). The per-chunk function then runs under ``jax.shard_map``: each
device computes the per-example results of its own examples with the whole params, and the
results stay sharded along ``"data"`` until they come back to the host, where they are averaged
in float64. The estimate thus does not depend on the number of devices beyond float32 rounding.

Why shard_map and not plain GSPMD (jit of the vmapped function on sharded inputs): on XLA:CPU
(jax 0.10.2) GSPMD miscompiles the per-example conv-kernel gradients that ``vmap(grad)`` produces
(a batch-grouped convolution) when the batch axis is sharded: the examples on devices other than
the first get wrong kernel gradients (tests/test_estimators_multidevice.py would catch it).
The shard_map runs with ``check_vma=False``: the body is device-local code, so a gradient with
respect to the replicated params stays the gradient of the device's own examples (with
``check_vma=True`` autodiff would sum the cotangents of an unvarying input over the devices, and
cotangents built from constants would need casting to device-varying).

Padding: a chunk holds ``min(chunk_size, n)`` examples rounded up to a multiple of the device
count; the last chunk of a batch is padded to that size by repeating its last example, and the
padded examples' results are dropped. Every chunk of a batch therefore has one shape (one
compilation). :func:`shard_batch`, meant for estimators that average a loss over a whole batch
(where padding would change the result), pads nothing and requires the batch size to be a multiple
of the device count.

The same ``devices`` keyword, with the same values, is on every estimator that loops over data:
the per-example ones above (``fisher``, ``jacobian``) and the Hessian-based ones (``hessian``,
``lanczos``), which shard each batch with :func:`shard_batch` (a batch that is not a multiple of
the device count is split, see ``snnjax.estimators.hessian``) and replicate the params.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from snnjax.errors import UserError

PyTree = Any
DATA_AXIS = "data"
DEFAULT_CHUNK_SIZE = 32


def resolve_devices(devices: None | str | Sequence[jax.Device]) -> tuple[jax.Device, ...] | None:
  """Returns the devices to shard over, or None for the default device.

  Args:
    devices: None, ``"all"`` (every local device) or a non-empty sequence of ``jax.Device``.
  """
  if devices is None:
    return None
  if isinstance(devices, str):
    if devices != "all":
      raise UserError(f"devices must be None, 'all' or a sequence of jax devices, got {devices!r}")
    return tuple(jax.local_devices())
  try:
    devs = tuple(devices)
  except TypeError:
    raise UserError(
        f"devices must be None, 'all' or a sequence of jax devices, got {devices!r}") from None
  if not devs or not all(isinstance(d, jax.Device) for d in devs):
    raise UserError(f"devices must be None, 'all' or a non-empty sequence of jax devices, "
                    f"got {devices!r}")
  if len(set(devs)) != len(devs):
    raise UserError("devices lists the same device more than once")
  return devs


def data_mesh(devices: None | str | Sequence[jax.Device] = "all") -> Mesh:
  """A 1-D mesh with the axis ``"data"`` over ``devices`` (None means the default device)."""
  devs = resolve_devices(devices)
  if devs is None:
    devs = (jax.devices()[0],)
  return Mesh(np.asarray(devs), (DATA_AXIS,))


def replicate(tree: PyTree, devices: None | str | Sequence[jax.Device] = "all") -> PyTree:
  """Places every array leaf of ``tree`` whole on each device (``P()``); None devices: unchanged."""
  devs = resolve_devices(devices)
  if devs is None:
    return tree
  sharding = NamedSharding(data_mesh(devs), PartitionSpec())
  return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)


def _leading_size(tree: PyTree) -> int:
  sizes = {int(np.shape(a)[0]) if np.ndim(a) else -1 for a in jax.tree.leaves(tree)}
  if not sizes:
    raise UserError("a batch with no arrays")
  if len(sizes) != 1 or -1 in sizes:
    raise UserError(f"the arrays of a batch need one common leading (example) axis, "
                    f"got sizes {sorted(sizes)}")
  return sizes.pop()


def shard_batch(batch: PyTree, devices: None | str | Sequence[jax.Device] = "all") -> PyTree:
  """Places the leading (example) axis of every leaf of ``batch`` on the ``"data"`` mesh axis.

  Args:
    batch: a pytree (usually the batch dict) of arrays with one common leading size n.
    devices: see :func:`resolve_devices`; None returns ``batch`` unchanged.

  Returns:
    The batch with each leaf sharded along axis 0 (``NamedSharding(mesh, P("data"))``).

  Raises:
    UserError: n is not a multiple of the number of devices (no padding here: padding would
      change a loss averaged over the batch).
  """
  devs = resolve_devices(devices)
  if devs is None:
    return batch
  n = _leading_size(batch)
  if n % len(devs):
    raise UserError(f"batch size {n} is not a multiple of the {len(devs)} devices")
  sharding = NamedSharding(data_mesh(devs), PartitionSpec(DATA_AXIS))
  return jax.tree.map(lambda a: jax.device_put(a, sharding), batch)


def pad_examples(tree: PyTree, size: int) -> PyTree:
  """Pads the leading axis of every leaf to ``size`` by repeating the last example."""
  def pad(a):
    n = a.shape[0]
    if n == size:
      return a
    if n == 0 or n > size:
      raise ValueError(f"cannot pad {n} examples to {size}")
    if isinstance(a, jax.Array):  # device data stays on the device
      return jnp.concatenate([a, jnp.repeat(a[-1:], size - n, axis=0)], axis=0)
    a = np.asarray(a)  # host data: padded on the host (an eager jnp op compiles per size)
    return np.concatenate([a, np.repeat(a[-1:], size - n, axis=0)], axis=0)
  return jax.tree.map(pad, tree)


def check_chunk_size(chunk_size: int | None) -> int:
  """Returns the chunk size to use (``DEFAULT_CHUNK_SIZE`` for None); raises on a bad value."""
  if chunk_size is None:
    return DEFAULT_CHUNK_SIZE
  if (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
      or chunk_size < 1):
    raise UserError(f"chunk_size must be a positive integer, got {chunk_size!r}")
  return int(chunk_size)


def example_chunks(
    arrays: Mapping[str, Any], chunk_size: int, devices: None | str | Sequence[jax.Device] = None,
    pad_to: int | None = None,
) -> Iterator[tuple[int, int, dict]]:
  """Splits per-example ``arrays`` into equal chunks, placed for ``devices``.

  Args:
    arrays: dict of arrays with one common leading size n (examples).
    chunk_size: maximum examples per chunk (rounded up to a multiple of the device count).
    devices: see :func:`resolve_devices`.
    pad_to: chunk size to use instead of ``min(chunk_size, n)`` (rounded up likewise): callers
      looping over several batches pass the first batch's size so that a short last batch is
      padded to the same chunk shape (one compilation).

  Yields:
    ``(start, num_valid, chunk)``: the chunk's first example, how many of its examples are real
    (the rest repeat the last one) and the dict of (c, ...) arrays, sharded along axis 0 on the
    ``"data"`` mesh when ``devices`` is given.
  """
  devs = resolve_devices(devices)
  n = _leading_size(dict(arrays))
  num_dev = 1 if devs is None else len(devs)
  size = min(chunk_size, n) if pad_to is None else int(pad_to)
  size = -(-size // num_dev) * num_dev
  sharding = None if devs is None else NamedSharding(data_mesh(devs), PartitionSpec(DATA_AXIS))
  for start in range(0, n, size):
    stop = min(start + size, n)
    chunk = pad_examples({k: jax.tree.map(lambda a: a[start:stop], v)  # noqa: B023
                          for k, v in arrays.items()}, size)
    if sharding is not None:
      chunk = jax.tree.map(lambda a: jax.device_put(a, sharding), chunk)
    yield start, stop - start, chunk


@dataclasses.dataclass(frozen=True)
class ChunkFn:
  """A per-chunk function with its static keyword arguments, hashable (a jit cache key).

  ``ChunkFn(f, (("logits_fn", logits_fn),))(replicated, chunk)`` calls
  ``f(replicated, chunk, logits_fn=logits_fn)``.
  """
  fn: Callable[..., PyTree]
  static: tuple[tuple[str, Any], ...] = ()

  def __call__(self, replicated: PyTree, chunk: dict) -> PyTree:
    return self.fn(replicated, chunk, **dict(self.static))


def host_array(a: Any) -> np.ndarray:
  """``a`` as a numpy array; a jax array spread over several processes' devices (``devices=
  jax.devices()`` under ``jax.distributed``) is gathered from every process first."""
  if isinstance(a, jax.Array) and not a.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
  return np.asarray(a)


def chunk_fn(fn: Callable[..., PyTree], **static: Any) -> ChunkFn:
  """``ChunkFn`` of ``fn`` with the (hashable) static keyword arguments ``static``."""
  return ChunkFn(fn, tuple(sorted(static.items())))


@functools.partial(jax.jit, static_argnames=("fn", "devices"))
def _sharded_call(replicated, chunk, *, fn, devices):
  """``fn(replicated, chunk)`` under shard_map: each device runs its share of the examples."""
  mesh = Mesh(np.asarray(devices), (DATA_AXIS,))

  return jax.shard_map(fn, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(DATA_AXIS)),
                       out_specs=PartitionSpec(DATA_AXIS), check_vma=False)(replicated, chunk)


def map_examples(
    fn: ChunkFn, replicated: PyTree, arrays: Mapping[str, Any], *,
    chunk_size: int, devices: None | str | Sequence[jax.Device] = None, to_host: bool = True,
    pad_to: int | None = None,
) -> PyTree:
  """Applies a per-chunk function to all examples, chunk by chunk, and concatenates the results.

  Args:
    fn: ``fn(replicated, chunk) -> pytree of (c, ...) per-example results`` (see
      :func:`chunk_fn`), where examples do not interact: with devices it runs under shard_map
      on each device's examples.
    replicated: arguments shared by all examples (params, mask, key); pass them already placed
      with :func:`replicate`.
    arrays: dict of per-example arrays, leading size n.
    chunk_size: examples per call (see :func:`example_chunks`).
    devices: see :func:`resolve_devices`.
    to_host: return numpy arrays (True) or jax arrays.
    pad_to: see :func:`example_chunks`.

  Returns:
    The pytree of per-example results with leading size n (padding dropped).
  """
  devs = resolve_devices(devices)
  if devs is None:
    call = fn
  else:
    call = functools.partial(_sharded_call, fn=fn, devices=devs)
  outs = []
  for _, num_valid, chunk in example_chunks(arrays, chunk_size, devs, pad_to):
    out = call(replicated, chunk)
    if to_host:
      out = jax.tree.map(lambda a: host_array(a)[:num_valid], out)
    else:
      out = jax.tree.map(lambda a: a[:num_valid], out)
    outs.append(out)
  cat = np.concatenate if to_host else jnp.concatenate
  return jax.tree.map(lambda *xs: cat(xs, axis=0), *outs)
