"""Data parallelism: one mesh axis "data" over every device of every process.

The train step is jitted with the batch sharded over that axis and the state replicated (what
pmap did, which current JAX keeps in maintenance mode and builds on jit and shard_map). XLA
inserts the cross-device reductions, so BatchNorm statistics and the loss are over the global
batch, on one device or many.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from shg_jax import data

DATA_AXIS = "data"


def data_mesh() -> Mesh:
    """A 1-D mesh of all global devices."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch: dict, mesh: Mesh, keys=("images", "keypoints", "valid")) -> dict:
    """This process' rows of a global batch (host NumPy) -> global jax.Arrays sharded on the
    batch axis; keys not in `keys` (ids, indices) stay on the host."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items() if k in keys}


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))


def to_host(tree):
    """Global jax.Arrays -> NumPy on every process: replicated arrays are read from a local
    copy, batch-sharded ones gathered from all processes (a collective: every process must
    call it at the same point)."""
    def get(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        if x.sharding.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(get, tree)


def padded_size(n: int) -> int:
    """`n` rounded up to a multiple of the device count: the smallest batch holding n rows
    that the data axis of the mesh can split evenly."""
    return -(-n // jax.device_count()) * jax.device_count()


def local_rows(global_batch: int) -> slice:
    """This process' rows of a global batch (see data.local_rows)."""
    return data.local_rows(global_batch, jax.process_index(), jax.process_count())
