"""The chain rule on scalars in PyTorch: requires_grad leaves, backward(), .grad."""

from __future__ import annotations

import torch

from jaxmtl.tutorials.inputs import linear_inputs


def linear_loss(inputs: dict | None = None) -> dict:
    """z = w*x + b, loss = (z - target)^2: dloss/dw = 2 (z - target) x, dloss/db = 2 (z - target)."""
    v = {k: torch.from_numpy(a) for k, a in (inputs or linear_inputs()).items()}
    w, b = v["w"].requires_grad_(True), v["b"].requires_grad_(True)
    y = w * v["x"]
    z = y + b
    loss = ((z - v["target"]) ** 2).sum()
    loss.backward()
    return {"loss": loss.detach().numpy(), "w_grad": w.grad.numpy(), "b_grad": b.grad.numpy(),
            "grad_fns": f"z: {type(z.grad_fn).__name__}, y: {type(y.grad_fn).__name__}, w: {w.grad_fn}"}


def mul_grad() -> dict:
    """y = W * x at W = 3, x = 2: dy/dW = x = 2, dy/dx = W = 3."""
    x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    y = w * x
    y.backward()
    return {"W_grad": w.grad.numpy(), "x_grad": x.grad.numpy()}


def scalar_chain() -> dict:
    """c = a*b, d = c + 1, loss = d^2 at a = 2, b = 3: dloss/da = 2 d b = 42, dloss/db = 2 d a = 28."""
    a = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    c = a * b
    d = c + 1
    loss = d ** 2
    loss.backward()
    return {"loss": loss.detach().numpy(), "a_grad": a.grad.numpy(), "b_grad": b.grad.numpy()}


def two_paths(theta: float = 1.5) -> dict:
    """L = A + B, A = theta^2, B = 2 theta: dL/dtheta = 2 theta + 2 is the sum of one term per path."""
    t = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    a, b = t ** 2, 2 * t
    (path1,) = torch.autograd.grad(a, t, retain_graph=True)  # dL/dA = 1
    (path2,) = torch.autograd.grad(b, t, retain_graph=True)  # dL/dB = 1
    (a + b).backward()
    return {"path1": path1.numpy(), "path2": path2.numpy(), "grad": t.grad.numpy()}


def four_op_paths(theta: float = 1.0) -> dict:
    """C = theta^3, D = sin(theta), E = C*D, L = ln(E): the sum over the paths via C and via D is the gradient."""
    t = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    c, d = t ** 3, torch.sin(t)
    e = c * d
    loss = torch.log(e)
    dl_de, dl_dc, dl_dd = torch.autograd.grad(loss, (e, c, d), retain_graph=True)
    # dL/dc already includes dE/dC = D: path 1 = dL/dC * dC/dtheta, path 2 = dL/dD * dD/dtheta.
    (path1,) = torch.autograd.grad(c, t, grad_outputs=dl_dc, retain_graph=True)
    (path2,) = torch.autograd.grad(d, t, grad_outputs=dl_dd, retain_graph=True)
    loss.backward()
    return {"path1": path1.numpy(), "path2": path2.numpy(), "grad": t.grad.numpy()}
