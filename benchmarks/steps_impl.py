"""The training step (forward + backward + SGD-momentum update) in every mode being compared.

Same model, loss, batch and optimizer on both sides: lr 0.01, momentum 0.9
(optax.sgd(momentum=) and torch.optim.SGD(momentum=) follow the same
recurrence v = m*v + g, p = p - lr*v, without dampening or Nesterov).
Each builder returns a zero-argument callable that performs one step; state
is not carried between timed calls for JAX (the step is a pure function of
the same inputs), torch updates its model in place as usual.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmtl import functional as F
from jaxmtl.batch import Batch, random_batch
from jaxmtl.config import ModelConfig
from jaxmtl.trees import cast_floating

LR, MOMENTUM = 0.01, 0.9


def jax_train_step(graphdef, cfg: ModelConfig, opt: optax.GradientTransformation,
                   compute_dtype=None) -> Callable:
    """(params, batch_stats, opt_state, batch) -> (params, batch_stats, opt_state, loss).

    `compute_dtype` (e.g. bfloat16): mixed precision as torch.autocast does it on the CPU in
    spirit: parameters, optimizer state and BatchNorm statistics stay float32; the forward
    and backward run in `compute_dtype` (parameters, images and dyn cast on entry, the loss
    against float32 targets, so its reduction is float32). Unlike autocast, every layer runs
    in `compute_dtype`, BatchNorm and the GRU included."""

    def loss_fn(params, batch_stats, batch):
        if compute_dtype is None:
            return F.loss_fn(params, batch_stats, batch, graphdef, cfg)
        low = batch._replace(images=batch.images.astype(compute_dtype), dyn=batch.dyn.astype(compute_dtype))
        loss, (parts, stats, out) = F.loss_fn(cast_floating(params, compute_dtype), cast_floating(batch_stats, compute_dtype),
                                              low, graphdef, cfg)
        return loss.astype(jnp.float32), (parts, cast_floating(stats, jnp.float32), out)

    def step(params, batch_stats, opt_state, batch):
        (loss, (_, new_stats, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss

    return step


def jax_setup(cfg: ModelConfig, seed: int = 0, model_fn=None, compute_dtype=None) -> tuple[Callable, tuple]:
    """(step function, its arguments) for the config, float32 state, random batch; `compute_dtype`
    as in jax_train_step."""
    model = (model_fn or F.init_model)(cfg, seed)
    graphdef, params, stats = F.split_model(model)
    opt = optax.sgd(LR, momentum=MOMENTUM)
    batch = Batch(*(jnp.asarray(a) for a in random_batch(cfg, seed)))
    return jax_train_step(graphdef, cfg, opt, compute_dtype), (params, stats, opt.init(params), batch)


def torch_setup(cfg: ModelConfig, seed: int = 0) -> dict[str, Any]:
    """torch model, optimizer and the same batch in NCHW."""
    import torch

    from torch_ref.model import build_model

    b = random_batch(cfg, seed)
    model = build_model(cfg, seed).train()
    return {
        "model": model,
        "opt": torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM),
        "x": torch.from_numpy(b.images_nchw()),
        "dyn": torch.from_numpy(np.asarray(b.dyn)),
        "pose": torch.from_numpy(np.asarray(b.pose)),
        "vel": torch.from_numpy(np.asarray(b.vel)),
        "label": torch.from_numpy(np.asarray(b.label, np.int64)),  # F.cross_entropy wants int64
    }


def torch_eager_step(cfg: ModelConfig, t: dict[str, Any], compiled: bool = False,
                     autocast_dtype=None) -> Callable[[], Any]:
    """Stock PyTorch: zero_grad, forward, loss, backward, optimizer.step. `compiled`: torch.compile
    (inductor) on forward+loss; backward goes through AOTAutograd's compiled graph.
    `autocast_dtype` (e.g. torch.bfloat16): forward and loss under torch.autocast("cpu"), which
    runs convs, matmuls and the GRU in that dtype and keeps BatchNorm and the losses in float32."""
    import contextlib

    import torch

    from torch_ref.losses import multitask_loss

    model, opt = t["model"], t["opt"]

    def fwd_loss(x, dyn, pose, vel, label):
        with (torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()):
            return multitask_loss(model(x, dyn), pose, vel, label, cfg)[0]

    if compiled:
        fwd_loss = torch.compile(fwd_loss, backend="inductor")

    def step():
        opt.zero_grad(set_to_none=True)
        loss = fwd_loss(t["x"], t["dyn"], t["pose"], t["vel"], t["label"])
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def torch_func_step(cfg: ModelConfig, t: dict[str, Any]) -> Callable[[], Any]:
    """torch.func: grads from torch.func.grad over functional_call, applied by torch.optim.SGD."""
    import torch
    from torch.func import functional_call, grad

    from torch_ref.losses import multitask_loss

    model, opt = t["model"], t["opt"]
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())

    # BatchNorm updates its running stats in place: under torch.func.grad the
    # buffers must be explicit inputs, not captured tensors.
    def loss_of(p, bufs, x, dyn, pose, vel, label):
        out = functional_call(model, (p, bufs), (x, dyn))
        return multitask_loss(out, pose, vel, label, cfg)[0]

    grad_fn = grad(loss_of)

    def step():
        detached = {k: v.detach() for k, v in params.items()}
        grads = grad_fn(detached, buffers, t["x"], t["dyn"], t["pose"], t["vel"], t["label"])
        with torch.no_grad():
            for k, v in params.items():
                v.grad = grads[k]
        opt.step()
        return None

    return step
