"""Run in a subprocess by test_distributed.py, with JAX_NUM_CPU_DEVICES set before JAX starts:
the same float64 computations on one device and data-parallel on N, their relative differences
printed as one JSON line. (The rest of the suite keeps its single device.)"""

from __future__ import annotations

import json
import sys

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxmtl.config import TINY  # noqa: E402
from jaxmtl.data import DataConfig, MotionDataset  # noqa: E402
from jaxmtl.data_parallel import data_parallel, put_batch, put_replicated  # noqa: E402
from jaxmtl.functional import loss_fn  # noqa: E402
from jaxmtl.optim import OptimConfig, make_optimizer  # noqa: E402
from jaxmtl.train import JaxTrainer  # noqa: E402
from jaxmtl.trees import flatten_state, rel_err  # noqa: E402


def main(devices: int, steps: int, batch_size: int) -> dict:
    dp = data_parallel(devices)
    data = MotionDataset(TINY, DataConfig(seed=0, train_size=steps * batch_size), batch_size=batch_size,
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
    # 20 steps: that gradient and the optimizer (clipping included) jitted apart, so each layout
    # compiles the model once; the trainer's own multi-device step is test_distributed.py's runs.
    tx = make_optimizer(ocfg)

    @jax.jit
    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def train(trainer, place):
        params, stats, opt_state = trainer.state.params, trainer.state.batch_stats, trainer.state.opt_state
        losses = []
        for step in range(steps):
            (loss, (_, stats, _)), grads = grad(params, stats, place(data.train_batch(step)))
            params, opt_state = update(params, opt_state, grads)
            losses.append(float(loss))
        return losses, flatten_state(params), flatten_state(stats)

    curve1, params1, stats1 = train(one, lambda b: b)
    curve_n, params_n, stats_n = train(many, lambda b: put_batch(b, dp))
    out["curve"] = max(rel_err(a, b) for a, b in zip(curve_n, curve1))
    out["params_after"] = max(rel_err(params_n[k], v) for k, v in params1.items())
    out["batch_stats_after"] = max(rel_err(stats_n[k], v) for k, v in stats1.items())
    out["loss_moved"] = abs(curve1[-1] - curve1[0])
    out["replicated"] = bool(put_replicated(one.state.params, dp)["classifier"]["kernel"].sharding.is_fully_replicated)
    return out


if __name__ == "__main__":
    print(json.dumps(main(*map(int, sys.argv[1:4]))))
