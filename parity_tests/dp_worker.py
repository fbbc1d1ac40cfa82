"""Run in a subprocess by test_distributed.py, with JAX_NUM_CPU_DEVICES set before JAX starts:
one train-mode step's float64 gradients and BatchNorm statistics on one device and data-parallel
on N, their relative differences printed as one JSON line. (The rest of the suite keeps its single
device; training over several devices is compared there, from `jaxmtl train` runs.)"""

from __future__ import annotations

import json
import sys

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from jaxmtl.config import TINY  # noqa: E402
from jaxmtl.data import DataConfig, MotionDataset  # noqa: E402
from jaxmtl.data_parallel import data_parallel, put_batch, put_replicated  # noqa: E402
from jaxmtl.functional import loss_fn  # noqa: E402
from jaxmtl.optim import OptimConfig  # noqa: E402
from jaxmtl.train import JaxTrainer  # noqa: E402
from jaxmtl.trees import flatten_state, rel_err  # noqa: E402


def main(devices: int, batch_size: int) -> dict:
    dp = data_parallel(devices)
    data = MotionDataset(TINY, DataConfig(seed=0, train_size=batch_size), batch_size=batch_size,
                         dtype=np.float64)
    ocfg = OptimConfig("adam", lr=5e-4, clip_norm=1.0)
    # init="torch": the reference's weights, so JAX's initialisers (dozens of small compilations) never run.
    one, many = (JaxTrainer(TINY, ocfg, dtype="float64", dp=d, init="torch") for d in (None, dp))
    # Gradients and BatchNorm statistics of one train-mode step, sharded against not.
    grad = jax.jit(jax.value_and_grad(lambda p, s, b: loss_fn(p, s, b, one.graphdef, TINY), has_aux=True))
    batch = data.train_batch(0)
    (_, (_, stats1, _)), g1 = grad(one.state.params, one.state.batch_stats, batch)
    (_, (_, stats_n, _)), g_n = grad(many.state.params, many.state.batch_stats, put_batch(batch, dp))
    out = {"devices": dp.devices,
           "batch_sharded_over": len(put_batch(batch, dp).images.sharding.device_set),
           "grad": max(rel_err(flatten_state(g_n)[k], v) for k, v in flatten_state(g1).items()),
           "batch_stats": max(rel_err(flatten_state(stats_n)[k], v) for k, v in flatten_state(stats1).items())}
    out["replicated"] = bool(put_replicated(one.state.params, dp)["classifier"]["kernel"].sharding.is_fully_replicated)
    return out


if __name__ == "__main__":
    print(json.dumps(main(*map(int, sys.argv[1:3]))))
