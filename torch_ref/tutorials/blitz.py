"""The blitz autograd tutorial and its companions in PyTorch."""

from __future__ import annotations

import numpy as np
import torch
import torch.autograd as autograd

from jaxmtl.tutorials import inputs as I


def q_backward() -> dict:
    """Q = 3a^3 - b^2 with Q.backward(gradient=[1, 1]): a.grad = 9a^2, b.grad = -2b."""
    a = torch.tensor([2.0, 3.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([6.0, 4.0], dtype=torch.float64, requires_grad=True)
    Q = 3 * a ** 3 - b ** 2
    external_grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    Q.backward(gradient=external_grad)
    return {"Q": Q.detach().numpy(), "a_grad": a.grad.numpy(), "b_grad": b.grad.numpy(),
            "9a^2 == a.grad": (9 * a ** 2 == a.grad).numpy(), "-2b == b.grad": (-2 * b == b.grad).numpy()}


def vjp_jacobian(v: tuple[float, float] = (0.5, -1.0)) -> dict:
    """J^T v from the full Jacobian of Q equals the vector-Jacobian product that backward(gradient=v) computes."""
    a = torch.tensor([2.0, 3.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([6.0, 4.0], dtype=torch.float64, requires_grad=True)
    ja, jb = torch.autograd.functional.jacobian(lambda a, b: 3 * a ** 3 - b ** 2, (a, b))
    v = torch.tensor(v, dtype=torch.float64)
    (3 * a ** 3 - b ** 2).backward(gradient=v)
    return {"jacobian_a": ja.numpy(), "jacobian_b": jb.numpy(), "J_a^T v": (ja.T @ v).numpy(),
            "vjp_a": a.grad.numpy(), "J_b^T v": (jb.T @ v).numpy(), "vjp_b": b.grad.numpy()}


def requires_grad_propagation() -> dict:
    """Which results need gradients: those that depend on an input that requires them.

    The original Q&A prints False for `a = x + y` in its second snippet, where
    x requires grad; torch actually gives True (any input requiring grad makes
    the output require grad). This function reports what torch does.
    """
    x, y, z = (torch.from_numpy(a) for a in I.rand_inputs((5, 5), 3))
    z.requires_grad_(True)
    first = [(x + y).requires_grad, (x + z).requires_grad]
    x, y, z = (torch.from_numpy(a) for a in I.rand_inputs((5, 5), 3))
    x.requires_grad_(True)
    a = x + y
    second = [a.requires_grad, (a + z).requires_grad, (y + z).requires_grad]
    return {"z requires grad -> (a = x + y, b = x + z)": np.asarray(first),
            "x requires grad -> (a = x + y, b = a + z, c = y + z)": np.asarray(second)}


def x1_x2_x3() -> dict:
    """y2 = x1*x2 + x3: z = sum(y2).backward() and y2.backward(ones) both give [4,5,6], [1,2,3], [1,1,1]."""
    out = {}
    for suffix in ("", "_vjp"):
        x1 = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
        x2 = torch.tensor([4.0, 5.0, 6.0], dtype=torch.float64, requires_grad=True)
        x3 = torch.tensor([7.0, 8.0, 9.0], dtype=torch.float64, requires_grad=True)
        y2 = x1 * x2 + x3
        if suffix:
            y2.backward(torch.ones_like(y2))
        else:
            torch.sum(y2).backward()
        out.update({f"x1_grad{suffix}": x1.grad.numpy(), f"x2_grad{suffix}": x2.grad.numpy(),
                    f"x3_grad{suffix}": x3.grad.numpy()})
    return out


def mlp_intermediates(inputs: dict | None = None) -> dict:
    """y1 = x w1 + b1, y2 = y1 w2 + b2, l = sum((y - y2)^2): gradients of y2, y1 and the weights, by autograd and by hand."""
    v = {k: torch.from_numpy(a) for k, a in (inputs or I.mlp_inputs()).items()}
    x, y = v["x"], v["y"]
    w1, b1, w2, b2 = (v[k].requires_grad_(True) for k in ("w1", "b1", "w2", "b2"))
    y1 = x @ w1 + b1
    y2 = y1 @ w2 + b2
    l = ((y - y2.squeeze()) ** 2).sum()
    (y2_grad,) = autograd.grad(l, y2, retain_graph=True)
    (y1_grad,) = autograd.grad(l, y1, retain_graph=True)
    l.backward()
    d = lambda t: t.detach().numpy()  # noqa: E731
    return {"l": d(l), "y2_grad": d(y2_grad), "y2_grad_hand 2(y2 - y)": d(2 * (y2.squeeze() - y))[:, None],
            "y1_grad": d(y1_grad), "y1_grad_hand y2_grad @ w2^T": d(y2_grad @ w2.t()),
            "w1_grad": d(w1.grad), "w1_grad_hand x^T @ y1_grad": d(x.t() @ y1_grad),
            "b1_grad": d(b1.grad), "b1_grad_hand column sums": d(y1_grad.t().sum(axis=1)),
            "w2_grad": d(w2.grad), "b2_grad": d(b2.grad)}


def mlp_printed_values() -> dict:
    """The same MLP at printed values of y, y2 and y1_grad: l, y2_grad and b1.grad recomputed from them."""
    y = torch.from_numpy(I.PRINTED_MLP_Y)
    y2 = torch.tensor(I.PRINTED_MLP_Y2, requires_grad=True)
    l = ((y - y2.squeeze()) ** 2).sum()
    (y2_grad,) = autograd.grad(l, y2)
    v = I.mlp_inputs()
    b1 = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    y1 = torch.from_numpy(v["x"]) @ torch.from_numpy(v["w1"]) + b1
    y1.backward(torch.from_numpy(I.PRINTED_MLP_Y1_GRAD))
    return {"l": l.detach().numpy(), "y2_grad": y2_grad.numpy(), "b1_grad": b1.grad.numpy()}


def ones_mean() -> dict:
    """x = ones(2, 2), y = x + 2, z = 3 y^2, out = mean(z) = 27: x.grad = 6 (x + 2) / 4 = 4.5."""
    a = torch.tensor([[2.0, 3.0], [4.0, 5.0]], dtype=torch.float64)
    a = (a * 3) / (a - 1)
    flags = [a.requires_grad]
    a.requires_grad_(True)  # flips the flag in place; later ops are recorded
    flags.append(a.requires_grad)
    b = (a * a).sum()
    x = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
    y = x + 2
    z = y * y * 3
    out = z.mean()
    out.backward()
    return {"y": y.detach().numpy(), "z": z.detach().numpy(), "out": out.detach().numpy(), "x_grad": x.grad.numpy(),
            "grad_fns (y, z, out, b)": ", ".join(type(t.grad_fn).__name__ for t in (y, z, out, b)),
            "requires_grad before/after requires_grad_()": tuple(flags)}
