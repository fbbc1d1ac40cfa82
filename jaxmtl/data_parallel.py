"""Data parallelism on JAX's own sharding: a 1-D device mesh over the batch axis.

The global batch is split along its first axis (sequences, B) over the devices
of a 1-D mesh with the axis "data"; parameters, BatchNorm statistics and the
optimizer state are replicated. The unchanged train step
(`jaxmtl.train.make_train_step`) is jitted with those shardings, and XLA's SPMD
partitioner inserts the collectives: the loss mean and the gradients become
all-reduces over the devices, and so do BatchNorm's batch mean and variance.
BatchNorm therefore normalises with the statistics of the global batch, as
torch's SyncBatchNorm does, and n devices compute what one device computes on
the same global batch, up to the order of the summations.

Why `jax.jit` with shardings rather than `jax.shard_map`: the model code stays
the single-device code, and no collective is written by hand, so there is no
per-device BatchNorm mean-of-means to get wrong; shard_map would make each
collective explicit at the price of a second, per-device version of the model.

A global batch that does not divide over the devices is refused before
anything compiles (`check_batch`).

Several processes (jaxmtl.distributed): the mesh spans every device of every
process in process order, so process i's devices hold rows
[i * B / P, (i + 1) * B / P) of the global batch (jaxmtl.data.ProcessShare
renders them), and each process passes `put_batch` only those rows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXIS = "data"


class DataParallel(NamedTuple):
    mesh: Mesh
    batch: NamedSharding        # leading axis split over AXIS
    replicated: NamedSharding   # the same array on every device

    @property
    def devices(self) -> int:
        return self.mesh.size


def data_parallel(devices: int | None = None) -> DataParallel:
    """The mesh over `devices` devices (default: all); ValueError if there are fewer.

    With several processes the mesh spans every device of every process.
    """
    available = jax.devices()  # every process's devices
    n = len(available) if devices is None else devices
    if n < 1:
        raise ValueError(f"--devices must be >= 1, got {n}")
    if n > len(available):
        raise ValueError(
            f"{n} devices requested, {len(available)} available ({available[0].platform}); on the CPU, "
            f"start the process with JAX_NUM_CPU_DEVICES={n} for {n} virtual devices")
    if jax.process_count() > 1 and n != len(available):
        raise ValueError(f"with {jax.process_count()} processes the mesh spans every device of every process: "
                         f"--devices must be {len(available)} (the sum of the processes' devices) or left out")
    # Process-major order: each process's devices hold one contiguous block of rows.
    # Auto axes: XLA propagates the batch sharding through the model (reshapes included);
    # Explicit axes (make_mesh's default) would ask every reshape for its output sharding.
    order = sorted(available[:n], key=lambda d: (d.process_index, d.id))
    mesh = Mesh(np.array(order), (AXIS,), axis_types=(AxisType.Auto,))
    return DataParallel(mesh, NamedSharding(mesh, PartitionSpec(AXIS)), NamedSharding(mesh, PartitionSpec()))


def check_batch(batch_size: int, devices: int) -> None:
    """A global batch must split evenly: no device gets a smaller share (no silent mean of means)."""
    if batch_size % devices:
        raise ValueError(f"the global batch of {batch_size} sequences does not divide over {devices} devices; "
                         f"choose --batch-size as a multiple of {devices}")


def put_batch(batch: Any, dp: DataParallel) -> Any:
    """The global batch, split along the first axis over the mesh, from this process's rows of it."""
    if jax.process_count() == 1:
        return jax.device_put(batch, dp.batch)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(dp.batch, np.asarray(x)), batch)


def put_replicated(tree: Any, dp: DataParallel) -> Any:
    """`tree` on every device of the mesh (every process passes the same values)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, dp.replicated)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(dp.replicated, np.asarray(x)), tree)
