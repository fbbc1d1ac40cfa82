"""PyTorch's autograd internals: control flow, autograd.Function, backward(gradient), retain_grad,
ReLU, checkpoint, clip_grad_norm_, autocast + GradScaler."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from jaxmtl.tutorials.inputs import mixed_precision_inputs, mlp_stack_inputs


def _forward(x):
    if x.sum() > 0:
        return x * 2
    return x * (-1)


def control_flow() -> dict:
    """Data-dependent control flow: forward(x) with `if x.sum() > 0`, at x = [3.0] and [-3.0]."""
    out = {}
    for key, value in (("pos", 3.0), ("neg", -3.0)):
        x = torch.tensor([value], dtype=torch.float64, requires_grad=True)
        y = _forward(x)  # the graph recorded on this call follows this call's branch
        y.sum().backward()
        out[f"grad_{key}"] = x.grad.numpy()
    return out


class MyAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x + y

    @staticmethod
    def backward(ctx, grad_output):
        x, y = ctx.saved_tensors
        return grad_output * 1, grad_output * 1


def custom_function() -> dict:
    """A custom backward rule: MyAdd(torch.autograd.Function), at a = 2, b = 3."""
    a = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    c = MyAdd.apply(a, b)
    c.backward()
    return {"c": c.detach().numpy(), "a_grad": a.grad.numpy(), "b_grad": b.grad.numpy(),
            "grad_fn": type(c.grad_fn).__name__}


def nonscalar_backward() -> dict:
    """Backward from a non-scalar: y = 2x at x = [1, 2] with gradient v = [0.1, 0.2] gives x.grad = v^T J = [0.2, 0.4]."""
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    y = x * 2
    y.backward(gradient=torch.tensor([0.1, 0.2], dtype=torch.float64))
    return {"x_grad": x.grad.numpy()}


def retain_grad() -> dict:
    """Gradients of intermediates: y in y = 2x, and c, d in the chain loss = (a*b + 1)^2."""
    x = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    y = x * 2
    y.retain_grad()  # y is not a leaf: without this y.grad stays None
    y.backward()
    a = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    c = a * b
    d = c + 1
    c.retain_grad()
    d.retain_grad()
    (d ** 2).backward()
    return {"y_grad": y.grad.numpy(), "x_grad": x.grad.numpy(), "d_grad": d.grad.numpy(),
            "c_grad": c.grad.numpy(), "a_grad": a.grad.numpy(), "b_grad": b.grad.numpy()}


def relu_at_zero() -> dict:
    """ReLU's gradient at x = [-1, 0, 2] is [0, 0, 1]: both frameworks take relu'(0) = 0."""
    x = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    torch.relu(x).backward(torch.ones_like(x))
    return {"x_grad": x.grad.numpy()}


def _mlp_loss(ws, x, remat: bool):
    def layer(h, w):
        return torch.tanh(h @ w)

    h = x
    for w in ws:
        # use_reentrant=False: the recommended implementation (the reentrant one warns).
        h = checkpoint(layer, h, w, use_reentrant=False) if remat else layer(h, w)
    return (h ** 2).sum()


def checkpointing(inputs: dict | None = None) -> dict:
    """Gradient checkpointing (recompute activations in the backward) leaves the gradients unchanged."""
    v = inputs or mlp_stack_inputs()
    out = {}
    for key, remat in (("ws_grad", False), ("ws_grad_checkpointed", True)):
        ws = [torch.tensor(w, requires_grad=True) for w in v["ws"]]
        _mlp_loss(ws, torch.from_numpy(v["x"]), remat).backward()
        out[key] = np.stack([w.grad.numpy() for w in ws])
    return out


def grad_clipping(inputs: dict | None = None, max_norm: float = 1.0) -> dict:
    """Gradient clipping by global norm: torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)."""
    v = inputs or mlp_stack_inputs()
    ws = torch.tensor(v["ws"], requires_grad=True)
    (100.0 * _mlp_loss(list(ws), torch.from_numpy(v["x"]), False)).backward()
    total = torch.nn.utils.clip_grad_norm_([ws], max_norm=max_norm)  # returns the norm before clipping
    return {"total_norm": total.numpy(), "clipped_grad": ws.grad.numpy(),
            "clipped_norm": torch.linalg.vector_norm(ws.grad).numpy()}


def _mp_grads(dtype, scaler=None):
    v = mixed_precision_inputs()
    w = torch.tensor(v["w"], requires_grad=True)  # float32 master weights
    x = torch.from_numpy(v["x"])
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        y = torch.nn.functional.linear(x[None], w[None])[0, 0]  # autocast runs linear in `dtype`
        loss = y * y                                            # and mul in its input's dtype
    (scaler.scale(loss) if scaler else loss).backward()
    return w


def mixed_precision(init_scale: float = 2.0 ** 16, static_scale: float = 1024.0) -> dict:
    """Mixed precision: torch.autocast('cpu', bfloat16 / float16) and torch.amp.GradScaler('cpu').

    autocast runs linear in the low dtype and keeps w (float32) as the leaf.
    bfloat16 is used without a GradScaler: its exponent range is float32's.
    float16 needs one: scaler.scale(loss) multiplies by S, unscale_ divides
    .grad by S, step() is skipped when a grad is inf/nan and update() halves
    S. The default S = 2^16 overflows float16 on the first backward here.
    """
    out = {"grad_float32": _mp_grads(torch.float32).grad.numpy(),
           "grad_bfloat16": _mp_grads(torch.bfloat16).grad.numpy(),
           "grad_float16_unscaled": _mp_grads(torch.float16).grad.numpy()}
    static = torch.amp.GradScaler("cpu", init_scale=static_scale)
    out["grad_float16_static_scale"] = (_mp_grads(torch.float16, static).grad / static_scale).numpy()
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    scales, found_inf = [], []
    while True:
        w = _mp_grads(torch.float16, scaler)
        opt = torch.optim.SGD([w], lr=0.0)
        scales.append(scaler.get_scale())
        scaler.unscale_(opt)  # divides .grad by the scale, records inf/nan
        found_inf.append(not bool(torch.isfinite(w.grad).all()))
        scaler.step(opt)      # skipped when inf/nan was found
        scaler.update()       # halves the scale after an inf, else keeps it (growth after 2000 steps)
        if not found_inf[-1]:
            break
    out.update({"dynamic_scales_tried": np.asarray(scales), "dynamic_found_inf": np.asarray(found_inf),
                "grad_float16_dynamic": w.grad.numpy()})
    return out
