"""Data parallelism on JAX's own sharding: a 1-D device mesh over the batch axis.

The global batch is split along its first axis (sequences, B) over the devices
of `jax.make_mesh((n,), ("data",))`; parameters, BatchNorm statistics and the
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
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXIS = "data"


class DataParallel(NamedTuple):
    mesh: Mesh
    batch: NamedSharding        # leading axis split over AXIS
    replicated: NamedSharding   # the same array on every device

    @property
    def devices(self) -> int:
        return self.mesh.size


def data_parallel(devices: int) -> DataParallel:
    """The mesh over the first `devices` of `jax.devices()`; ValueError if there are fewer."""
    available = jax.devices()
    if devices < 1:
        raise ValueError(f"--devices must be >= 1, got {devices}")
    if devices > len(available):
        raise ValueError(
            f"{devices} devices requested, {len(available)} available ({available[0].platform}); on the CPU, "
            f"start the process with JAX_NUM_CPU_DEVICES={devices} for {devices} virtual devices")
    # Auto axes: XLA propagates the batch sharding through the model (reshapes included);
    # Explicit axes (make_mesh's default) would ask every reshape for its output sharding.
    mesh = jax.make_mesh((devices,), (AXIS,), axis_types=(AxisType.Auto,), devices=available[:devices])
    return DataParallel(mesh, NamedSharding(mesh, PartitionSpec(AXIS)), NamedSharding(mesh, PartitionSpec()))


def check_batch(batch_size: int, devices: int) -> None:
    """A global batch must split evenly: no device gets a smaller share (no silent mean of means)."""
    if batch_size % devices:
        raise ValueError(f"the global batch of {batch_size} sequences does not divide over {devices} devices; "
                         f"choose --batch-size as a multiple of {devices}")


def put_batch(batch: Any, dp: DataParallel) -> Any:
    """Every leaf of `batch` split along its first axis over the mesh."""
    return jax.device_put(batch, dp.batch)


def put_replicated(tree: Any, dp: DataParallel) -> Any:
    return jax.device_put(tree, dp.replicated)
