"""Higher-order derivatives (create_graph=True, functional.hessian) and the dynamic graph, in PyTorch."""

from __future__ import annotations

import numpy as np
import torch


def higher_order(x: float = 2.0) -> dict:
    """f = x^3 at x = 2: f' = 12, f'' = 12, f''' = 6, with create_graph=True."""
    x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = x ** 3
    (d1,) = torch.autograd.grad(y, x, create_graph=True)  # keep the graph of the gradient itself
    (d2,) = torch.autograd.grad(d1, x, create_graph=True)
    (d3,) = torch.autograd.grad(d2, x)
    return {"d1": d1.detach().numpy(), "d2": d2.detach().numpy(), "d3": d3.numpy()}


def hessian(x: tuple[float, float, float] = (1.0, 2.0, 3.0)) -> dict:
    """The Hessian of x0^2 x1 + x0 sin(x2) at (1, 2, 3), with torch.autograd.functional.hessian."""
    f = lambda x: x[0] ** 2 * x[1] + x[0] * torch.sin(x[2])  # noqa: E731
    return {"hessian": torch.autograd.functional.hessian(f, torch.tensor(x, dtype=torch.float64)).numpy()}


def retracing() -> dict:
    """torch records a new graph on every call: each call's graph holds that call's branch."""
    grads, nodes = [], []
    calls = [[1.0, 2.0, 3.0], [-4.0, 5.0, -9.0], [1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0]]
    for values in calls:
        x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
        y = (x * 2 if x.sum() > 0 else -x).sum()  # Python `if`: this call's graph has this call's branch
        nodes.append(f"{type(y.grad_fn).__name__} <- {type(y.grad_fn.next_functions[0][0]).__name__}")
        y.backward()
        grads.append(x.grad.numpy())
    return {"grads": np.concatenate(grads), "graph_per_call": "; ".join(nodes)}
