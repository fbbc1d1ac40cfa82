"""optax chains vs torch.optim, step by step, on a small parameter pytree in float64 (no model)."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
import torch

from jaxmtl.optim import OptimConfig, make_optimizer, torch_clip_by_global_norm
from jaxmtl.trees import rel_err
from torch_ref.optim import clip_and_norm
from torch_ref.optim import make_optimizer as make_torch_optimizer

SHAPES = {"w": (5, 3), "b": (3,), "v": (7,)}
STEPS = 6
TOL = 1e-12  # float64; both sides do the same arithmetic up to operation order (~1e-16 per step)

CASES = {
    "sgd": OptimConfig("sgd", lr=0.1, momentum=0.9, clip_norm=None),
    "sgd_nesterov_wd": OptimConfig("sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05, clip_norm=None),
    "sgd_plain": OptimConfig("sgd", lr=0.1, momentum=0.0, clip_norm=None),
    "adam": OptimConfig("adam", lr=0.01, clip_norm=None),
    "adam_l2": OptimConfig("adam", lr=0.01, weight_decay=0.1, clip_norm=None),
    "adamw": OptimConfig("adamw", lr=0.01, weight_decay=0.1, clip_norm=None),
    # clip_norm sits between the gradient norms below (~0.3 .. ~30): some steps clip, some do not
    "sgd_clipped": OptimConfig("sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05, clip_norm=2.0),
    "adamw_clipped": OptimConfig("adamw", lr=0.01, weight_decay=0.1, clip_norm=2.0),
}


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    # gradient scale varies over steps so clipping is active on some steps and not others
    grads = [{k: rng.standard_normal(s) * 10.0 ** rng.uniform(-1, 1.5) for k, s in SHAPES.items()}
             for _ in range(STEPS)]
    return params, grads


def _run_optax(cfg: OptimConfig, params, grads):
    tx = make_optimizer(cfg)
    p = jax.tree.map(jax.numpy.asarray, params)
    state = tx.init(p)
    out = []
    for g in grads:
        updates, state = tx.update(jax.tree.map(jax.numpy.asarray, g), state, p)
        p = optax.apply_updates(p, updates)
        out.append({k: np.asarray(v) for k, v in p.items()})
    return out


def _run_torch(cfg: OptimConfig, params, grads):
    tp = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for k, v in params.items()}
    opt = make_torch_optimizer(tp.values(), cfg)
    out = []
    for g in grads:
        opt.zero_grad()
        for k, p in tp.items():
            p.grad = torch.tensor(g[k], dtype=torch.float64)
        clip_and_norm(tp.values(), cfg)
        opt.step()
        out.append({k: p.detach().numpy().copy() for k, p in tp.items()})
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_optimizer_matches_torch_step_by_step(case):
    params, grads = _problem()
    cfg = CASES[case]
    jax_traj, torch_traj = _run_optax(cfg, params, grads), _run_torch(cfg, params, grads)
    for step, (pj, pt) in enumerate(zip(jax_traj, torch_traj)):
        for k in SHAPES:
            assert rel_err(pj[k], pt[k]) <= TOL, f"{case} step {step} param {k}: {rel_err(pj[k], pt[k]):.3e}"
    moved = max(rel_err(torch_traj[-1][k], params[k]) for k in SHAPES)
    assert moved > 1e-3  # the optimizer really changed the parameters


def _torch_clipped(grads, max_norm):
    tp = {k: torch.nn.Parameter(torch.zeros(SHAPES[k], dtype=torch.float64)) for k in SHAPES}
    for k, p in tp.items():
        p.grad = torch.tensor(grads[k], dtype=torch.float64)
    norm = torch.nn.utils.clip_grad_norm_(tp.values(), max_norm)
    return {k: p.grad.numpy() for k, p in tp.items()}, float(norm)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 100.0])
def test_torch_clip_matches_clip_grad_norm(scale):
    rng = np.random.default_rng(1)
    grads = {k: rng.standard_normal(s) * scale for k, s in SHAPES.items()}
    max_norm = 0.5 * float(optax.tree.norm(grads))  # always clips
    ref, norm = _torch_clipped(grads, max_norm)
    ours, _ = torch_clip_by_global_norm(max_norm).update(grads, None)
    assert abs(norm - float(optax.tree.norm(grads))) <= 1e-12 * norm
    for k in SHAPES:
        assert rel_err(ours[k], ref[k]) <= TOL


def test_stock_optax_clip_differs_from_torch():
    """Why the custom transform exists: at a small gradient norm torch's +1e-6 matters."""
    rng = np.random.default_rng(2)
    grads = {k: rng.standard_normal(s) * 1e-3 for k, s in SHAPES.items()}
    norm = float(optax.tree.norm(grads))
    ref, _ = _torch_clipped(grads, 0.5 * norm)
    stock, _ = optax.clip_by_global_norm(0.5 * norm).update(grads, optax.EmptyState())
    err = max(rel_err(stock[k], ref[k]) for k in SHAPES)
    # independent formula: the ratio of the two coefficients is (norm + 1e-6) / norm
    assert err == pytest.approx(1e-6 / norm, rel=1e-3)
    assert err > 1e-8


def test_weight_decay_defaults_differ():
    """optax.adamw and torch.optim.AdamW have different default decays; we always pass it."""
    import inspect

    assert inspect.signature(optax.adamw).parameters["weight_decay"].default == 1e-4
    assert torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]).defaults["weight_decay"] == 1e-2


def test_bad_optimizer_config_is_refused():
    with pytest.raises(ValueError, match="unknown optimizer"):
        OptimConfig("rmsprop")
    with pytest.raises(ValueError, match="lr"):
        OptimConfig("sgd", lr=0.0)
    with pytest.raises(ValueError, match="nesterov"):
        OptimConfig("adam", nesterov=True)
