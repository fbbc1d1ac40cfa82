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

LR, MOMENTUM = 0.01, 0.9


def jax_train_step(graphdef, cfg: ModelConfig, opt: optax.GradientTransformation) -> Callable:
    """(params, batch_stats, opt_state, batch) -> (params, batch_stats, opt_state, loss)."""

    def step(params, batch_stats, opt_state, batch):
        (loss, (_, new_stats, _)), grads = jax.value_and_grad(F.loss_fn, has_aux=True)(
            params, batch_stats, batch, graphdef, cfg)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss

    return step


def jax_setup(cfg: ModelConfig, seed: int = 0, model_fn=None) -> tuple[Callable, tuple]:
    """(step function, its arguments) for the config, float32, random batch."""
    model = (model_fn or F.init_model)(cfg, seed)
    graphdef, params, stats = F.split_model(model)
    opt = optax.sgd(LR, momentum=MOMENTUM)
    batch = Batch(*(jnp.asarray(a) for a in random_batch(cfg, seed)))
    return jax_train_step(graphdef, cfg, opt), (params, stats, opt.init(params), batch)


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


def torch_eager_step(cfg: ModelConfig, t: dict[str, Any], compiled: bool = False) -> Callable[[], Any]:
    """Stock PyTorch: zero_grad, forward, loss, backward, optimizer.step. `compiled`: torch.compile
    (inductor) on forward+loss; backward goes through AOTAutograd's compiled graph."""
    import torch

    from torch_ref.losses import multitask_loss

    model, opt = t["model"], t["opt"]

    def fwd_loss(x, dyn, pose, vel, label):
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
