"""The multi-task model in both frameworks from one seed, and its forward/gradient/BN checks.

Weights are initialised in torch and converted to JAX, so any difference
the checks find comes from the computation, never from the initialisation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from jaxmtl import cpu_compiler
from jaxmtl.batch import Batch, random_batch, validate_batch
from jaxmtl.config import ModelConfig
from jaxmtl.functional import apply, init_model, make_grad_fn, make_part_grad_fn, split_model
from jaxmtl.losses import LOSS_PARTS
from jaxmtl.parity.checks import Check, check_from_errs
from jaxmtl.parity.precision import TOLERANCES
from jaxmtl.trees import flatten_state, rel_err, tree_rel_errs

NP_DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclasses.dataclass
class ModelPair:
    """A torch reference model and its JAX port with identical weights, plus compiled JAX functions."""

    cfg: ModelConfig
    dtype: str
    seed: int
    torch_model: Any                 # torch_ref.model.MultiTaskModel
    graphdef: Any
    params: Any                      # nnx.State, converted from torch
    batch_stats: Any
    grad_fn: Callable                # jit(value_and_grad(loss)) in train mode
    part_grad_fn: Callable           # jit: grads of each loss part alone
    forward_fn: Callable             # jit: (params, stats, images, dyn, train) -> outputs, stats
    initial_state: dict = dataclasses.field(default_factory=dict)  # numpy torch state_dict at seed

    def reset_torch(self) -> None:
        """Back to the seed's weights and running statistics, zero grads."""
        from torch_ref.convert import load_into_torch

        load_into_torch(self.torch_model, self.initial_state)
        self.torch_model.zero_grad(set_to_none=True)

    def batch(self, seed: int) -> Batch:
        b = random_batch(self.cfg, seed, NP_DTYPES[self.dtype])
        validate_batch(b, self.cfg)
        return b


def build_model_pair(cfg: ModelConfig, dtype: str = "float64", seed: int = 0,
                     jax_model_fn: Callable | None = None, torch_model_fn: Callable | None = None) -> ModelPair:
    """Builds the pair; set_full_precision(dtype) must have run first.

    `jax_model_fn(cfg)` / `torch_model_fn(cfg, seed, dtype)` replace the model
    builders (the mutation tests pass deliberately wrong variants here).
    """
    import torch

    from torch_ref.convert import state_dict_numpy, torch_module_to_jax_state
    from torch_ref.model import build_model

    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 parity needs jax_enable_x64: call set_full_precision('float64') first")
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    torch_model = (torch_model_fn or build_model)(cfg, seed, torch_dtype)
    graphdef, p_template, s_template = split_model((jax_model_fn or init_model)(cfg))
    params, batch_stats = torch_module_to_jax_state(torch_model, cfg, p_template, s_template)
    forward_fn = cpu_compiler.jit(lambda p, s, images, dyn, train: apply(graphdef, p, s, images, dyn, train=train),
                                  static_argnums=4)
    return ModelPair(cfg, dtype, seed, torch_model, graphdef, params, batch_stats,
                     make_grad_fn(graphdef, cfg), make_part_grad_fn(graphdef, cfg), forward_fn,
                     state_dict_numpy(torch_model))


# ---- the torch side: the textbook eager calls ----------------------------------------

def _torch_inputs(batch: Batch):
    import torch

    return (torch.from_numpy(batch.images_nchw()), torch.from_numpy(np.asarray(batch.dyn)),
            torch.from_numpy(np.asarray(batch.pose)), torch.from_numpy(np.asarray(batch.vel)),
            torch.from_numpy(np.asarray(batch.label, np.int64)))


def _torch_forward(pair: ModelPair, batch: Batch, train: bool) -> dict[str, np.ndarray]:
    import torch

    from torch_ref.losses import multitask_loss

    images, dyn, pose, vel, label = _torch_inputs(batch)
    pair.torch_model.train(train)
    with torch.no_grad():
        out = pair.torch_model(images, dyn)
        total, parts = multitask_loss(out, pose, vel, label, pair.cfg)
    res = {k: v.numpy() for k, v in out.items()}
    res.update({"total": total.numpy(), **{k: v.numpy() for k, v in parts.items()}})
    return res


def _torch_grads(pair: ModelPair, batch: Batch) -> dict[str, dict[str, np.ndarray]]:
    """{"total": grads, "loss_final": grads, ...}: one forward, then one backward per loss.

    The per-part backward calls share one graph, hence retain_graph=True.
    """
    import torch

    from torch_ref.losses import multitask_loss

    images, dyn, pose, vel, label = _torch_inputs(batch)
    model = pair.torch_model.train()
    names, params = zip(*model.named_parameters())
    total, parts = multitask_loss(model(images, dyn), pose, vel, label, pair.cfg)
    out = {}
    for loss_name, loss in [*parts.items(), ("total", total)]:
        grads = torch.autograd.grad(loss, params, retain_graph=loss_name != "total", allow_unused=True)
        # A part that does not reach a parameter (pose loss -> GRU) gives None: its gradient is 0.
        out[loss_name] = {n: (np.zeros(tuple(p.shape), NP_DTYPES[pair.dtype]) if g is None else g.numpy())
                          for n, p, g in zip(names, params, grads)}
    return out


# ---- the checks ----------------------------------------------------------------------

def _jax_to_torch_names(pair: ModelPair, flat_params: dict, flat_stats: dict | None = None) -> dict:
    from torch_ref.convert import jax_to_torch

    if flat_stats is None:
        return jax_to_torch({"params": flat_params}, pair.cfg, collections=("params",))
    return jax_to_torch({"params": flat_params, "batch_stats": flat_stats}, pair.cfg)


def _jax_forward(pair: ModelPair, params, stats, batch: Batch, train: bool):
    from jaxmtl.losses import multitask_loss

    out, new_stats = pair.forward_fn(params, stats, batch.images, batch.dyn, train)
    total, parts = multitask_loss(out, batch, pair.cfg)
    res = {k: np.asarray(v) for k, v in out.items()}
    res.update({"total": np.asarray(total), **{k: np.asarray(v) for k, v in parts.items()}})
    for k, v in res.items():  # a silent float32 <-> float64 promotion would make the check meaningless
        if v.dtype != NP_DTYPES[pair.dtype]:
            raise TypeError(f"JAX output {k} has dtype {v.dtype}, expected {pair.dtype}")
    return res, new_stats


def forward_and_stats_checks(pair: ModelPair, n_train_batches: int = 3) -> list[Check]:
    """forward/train on the first batch, batch_stats after n train forwards, forward/eval after them."""
    tol = TOLERANCES[pair.dtype]
    pair.reset_torch()
    params, stats = pair.params, pair.batch_stats
    checks = []
    for i in range(n_train_batches):
        batch = pair.batch(1000 + i)
        jax_out, stats = _jax_forward(pair, params, stats, batch, train=True)
        torch_out = _torch_forward(pair, batch, train=True)
        if i == 0:
            checks.append(check_from_errs("forward/train", tree_rel_errs(jax_out, torch_out), tol))
    torch_stats = {k: v for k, v in _state_numpy(pair.torch_model).items() if "running_" in k}
    jax_stats = {k: v for k, v in _jax_to_torch_names(pair, flatten_state(params), flatten_state(stats)).items()
                 if "running_" in k}
    checks.append(check_from_errs("batch_stats", tree_rel_errs(jax_stats, torch_stats), tol))
    batch = pair.batch(2000)
    jax_out, _ = _jax_forward(pair, params, stats, batch, train=False)
    checks.append(check_from_errs("forward/eval", tree_rel_errs(jax_out, _torch_forward(pair, batch, train=False)), tol))
    return checks


def _state_numpy(module) -> dict[str, np.ndarray]:
    from torch_ref.convert import state_dict_numpy

    return state_dict_numpy(module)


def gradient_checks(pair: ModelPair) -> list[Check]:
    """grad/total, grad/<each loss part>, and grad/weighted_sum (parts, weighted, sum to the total)."""
    tol = TOLERANCES[pair.dtype]
    pair.reset_torch()
    batch = pair.batch(3000)
    torch_grads = _torch_grads(pair, batch)
    (_, _), jax_total = pair.grad_fn(pair.params, pair.batch_stats, batch)
    jax_parts = pair.part_grad_fn(pair.params, pair.batch_stats, batch)
    jax_named = {"total": _jax_to_torch_names(pair, flatten_state(jax_total))}
    for part in LOSS_PARTS:
        jax_named[part] = _jax_to_torch_names(pair, flatten_state(jax_parts[part]))
    checks = [check_from_errs("grad/total", tree_rel_errs(jax_named["total"], torch_grads["total"]), tol)]
    for part in LOSS_PARTS:
        checks.append(check_from_errs(f"grad/{part}", tree_rel_errs(jax_named[part], torch_grads[part]), tol))
    w = {"loss_final": 1.0, "loss_pose": pair.cfg.w_pose, "loss_vel": pair.cfg.w_vel}
    summed = {k: sum(w[p] * jax_named[p][k] for p in LOSS_PARTS) for k in jax_named["total"]}
    checks.append(check_from_errs("grad/weighted_sum", tree_rel_errs(summed, jax_named["total"]), tol))
    return checks


def model_checks(pair: ModelPair) -> list[Check]:
    """All single-point checks of the multi-task model."""
    return forward_and_stats_checks(pair) + gradient_checks(pair)
