"""The optimizer-only check (jaxmtl/parity/replay.py): recorded gradients through both optimizers.

float32, `tiny`: 100 steps of gradients recorded once from the torch reference's
Adam run. Unmutated, every parity optimizer stays within REPLAY_TOLERANCE at
both scales; each optimizer-formula mistake of the JAX side is flagged with a
margin, including torch's clip epsilon, which no float32 curve resolves.
"""

from __future__ import annotations

import dataclasses
from unittest import mock

import pytest

from jaxmtl.config import TINY
from jaxmtl.parity import replay
from jaxmtl.parity.multitask_port import PARITY_OPTIMIZERS, curve_batches, stock_optimizer_pair

STEPS = 100
SCALE = replay.REPLAY_SCALE
TOL = replay.REPLAY_TOLERANCE["float32"]


@pytest.fixture(scope="module")
def recorded(pairs):
    pair = pairs("float32")
    grads = replay.record_gradients(pair, curve_batches(TINY, "float32", 0, STEPS), stock_optimizer_pair(
        PARITY_OPTIMIZERS["adam"], "adam"))
    return replay.parameters(pair), grads


def _mutant(name: str, scale: float, jax_cfg: dict | None = None, patches: dict | None = None):
    """stock_optimizer_pair(name, scale) whose optax side is built with `jax_cfg` changes and `patches` active."""
    from jaxmtl.optim import make_optimizer

    truth = stock_optimizer_pair(PARITY_OPTIMIZERS[name], name, scale)
    cfg = dataclasses.replace(PARITY_OPTIMIZERS[name], clip_norm=PARITY_OPTIMIZERS[name].clip_norm * scale,
                              **(jax_cfg or {}))
    with mock.patch.multiple("optax", **(patches or {})) if patches else mock.patch.dict({}):
        tx = make_optimizer(cfg)
    return dataclasses.replace(truth, optax_tx=tx)


@pytest.mark.parametrize("name", list(PARITY_OPTIMIZERS))
@pytest.mark.parametrize("scale", [1.0, SCALE])
def test_the_unmutated_optimizers_replay_within_float32_rounding(recorded, name, scale):
    params, grads = recorded
    run = replay.replay(params, grads, stock_optimizer_pair(PARITY_OPTIMIZERS[name], name, scale), scale)
    assert len(run.per_step) == STEPS
    assert max(run.worst.values()) <= TOL, sorted(run.worst.items(), key=lambda kv: -kv[1])[:3]
    [check] = replay.replay_checks([run], "float32")
    assert check.passed


@pytest.mark.parametrize("mistake,name,build", [
    ("clip epsilon dropped (optax.clip_by_global_norm)", "sgd", None),
    ("clip epsilon dropped (optax.clip_by_global_norm)", "adam", None),
    ("clip epsilon dropped (optax.clip_by_global_norm)", "adamw", None),
    ("Adam eps 1e-7 instead of torch's 1e-8", "adam", lambda: _mutant("adam", SCALE, {"eps": 1e-7})),
    ("Adam without bias correction", "adam", None),
])
def test_optimizer_mistakes_stand_far_above_float32_rounding(recorded, mistake, name, build):
    from mutants import adam_without_bias_correction

    params, grads = recorded
    if mistake.startswith("clip"):
        with mock.patch("jaxmtl.optim.TORCH_CLIP_EPS", 0.0):
            run = replay.replay(params, grads, _mutant(name, SCALE), SCALE)
    elif mistake.startswith("Adam without"):
        run = replay.replay(params, grads, _mutant(name, SCALE, patches={"adam": adam_without_bias_correction}),
                            SCALE)
    else:
        run = replay.replay(params, grads, build(), SCALE)
    [check] = replay.replay_checks([run], "float32")
    assert not check.passed
    # Measured (replay.py): clip epsilon 2.8e-3 to 4.8e-3, Adam eps 0.86, bias correction 2.3;
    # each at least 10x the tolerance.
    assert check.max_rel_err >= 10 * TOL, (mistake, name, check.max_rel_err)
