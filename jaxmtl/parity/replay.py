"""The optimizers alone: one recorded gradient sequence replayed through torch.optim and the optax chain.

A float32 training curve cannot separate an update-formula bug from rounding:
the two trajectories part ways chaotically after a few steps (curves.py). Here
the model drops out. The torch reference records the gradient of every step of a
training run (before clipping); both optimizers then take the same initial
parameters and, step after step, exactly those gradients (clipping included),
and the parameters are compared after every step. Nothing feeds back, so
float32 rounding stays at rounding level over hundreds of steps, while a
formula difference (an epsilon, a bias correction) accumulates step after step.

The scaled replay moves every magnitude toward the optimizer's epsilons: the
gradients times `scale` and, in the optimizer pair given for it, the clip
threshold times the same factor (Adam's m / sqrt(v) and the clipping geometry
are unchanged, but eps / sqrt(v) and torch's clip epsilon / norm grow by 1 /
scale). Epsilons are invisible at gradient norms near 1 in float32, and this is where they show.

.. warning:: both sides hold the parameters as torch lays them out (a flat
   {name: array}): right for optimizers whose update is elementwise plus global
   norms (SGD, Adam, AdamW, global-norm clipping), which is what `jaxmtl parity`
   replays. A layout-dependent optimizer would need the conversion table.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import numpy as np
import optax

from jaxmtl.parity.checks import Check, check_from_errs
from jaxmtl.trees import rel_err

Flat = Mapping[str, np.ndarray]

# The scaled replay's factor (gradients and clip threshold): torch's clip epsilon 1e-6
# then weighs 1e-6 / (1e-5 * norm) instead of 1e-6 / norm.
REPLAY_SCALE = 1e-5
# Relative difference allowed per parameter tensor, worst over every step. Measured on
# `tiny`, 100 steps of gradients recorded from the Adam parity run, the parity optimizers
# (multitask_port.PARITY_OPTIMIZERS), unmutated, at scale 1 and 1e-5. float32: 5.2e-7 (sgd);
# adam and adamw 8.2e-6 as `jaxmtl parity` runs them (x64 off; a BatchNorm bias starting at
# zero, in the first steps), 6.9e-7 / 2.2e-6 with x64 on (the test suite). float64: 4.2e-15.
# Tolerances ~6x and ~200x above the worst. The JAX-side mistakes of test_replay.py at scale
# 1e-5 (float32): clip epsilon dropped 4.8e-3 (sgd) / 2.8e-3 (adam, adamw), invisible at
# scale 1; Adam eps 1e-7 for 1e-8: 0.86; no bias correction: 2.3.
REPLAY_TOLERANCE = {"float32": 5e-5, "float64": 1e-12}


class ReplayRun(NamedTuple):
    name: str
    per_step: np.ndarray           # (steps,) max over tensors of rel_err(JAX, torch) after each step
    worst: dict[str, float]        # per tensor: max over steps


def record_gradients(pair, batches: Sequence, opt) -> list[dict[str, np.ndarray]]:
    """The torch reference trained on `batches` with `opt` (an OptimizerPair, the harness's textbook
    step); the gradient of every step before `torch_before_step` (clipping), by parameter name.
    The pair is left reset."""
    from jaxmtl.parity.harness import default_torch_step

    grads = []

    def record_then(parameters):
        parameters = list(parameters)
        grads.append({n: p.grad.detach().numpy().copy() for n, p in pair.torch_module.named_parameters()
                      if p.grad is not None})
        if opt.torch_before_step is not None:
            opt.torch_before_step(parameters)

    recording = dataclasses.replace(opt, torch_before_step=record_then)
    pair.reset_torch()
    module = pair.torch_module.train()
    optimizer, step = opt.torch_fn(module.parameters()), default_torch_step(pair, recording)
    for _, torch_in in batches:
        step(module, optimizer, torch_in)
    pair.reset_torch()
    return grads


def replay(params: Flat, grads: Sequence[Flat], opt, scale: float = 1.0) -> ReplayRun:
    """Both optimizers of `opt` from `params` on `grads` (times `scale`); parameters compared after every step."""
    import torch

    dtype = next(iter(params.values())).dtype
    tensors = {k: torch.nn.Parameter(torch.from_numpy(np.array(v))) for k, v in params.items()}
    optimizer = opt.torch_fn(list(tensors.values()))
    jax_params = {k: jax.numpy.asarray(v) for k, v in params.items()}
    tx = opt.optax_tx
    state = tx.init(jax_params)

    @jax.jit
    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    per_step, worst = [], {k: 0.0 for k in params}
    for g in grads:
        g = {k: (np.asarray(g[k]) * scale).astype(dtype) for k in params}
        for k, t in tensors.items():
            t.grad = torch.from_numpy(g[k].copy())
        if opt.torch_before_step is not None:
            opt.torch_before_step(list(tensors.values()))
        optimizer.step()
        jax_params, state = step(jax_params, state, g)
        errs = {k: rel_err(np.asarray(jax_params[k]), tensors[k].detach().numpy()) for k in params}
        per_step.append(max(errs.values()))
        worst = {k: max(worst[k], e) for k, e in errs.items()}
    return ReplayRun(opt.name, np.array(per_step), worst)


def replay_checks(runs: Sequence[ReplayRun], dtype: str) -> list[Check]:
    """replay/<name>: the worst tensor over every step of each run."""
    return [check_from_errs(f"replay/{r.name}", r.worst, REPLAY_TOLERANCE[dtype]) for r in runs]


def parameters(pair) -> dict[str, Any]:
    """The pair's initial torch parameters (no buffers), by name."""
    names = {n for n, _ in pair.torch_module.named_parameters()}
    return {k: v for k, v in pair.initial_state.items() if k in names}
