"""The one-layer network of the autograd tutorial in PyTorch: grad_fn, backward, no_grad/detach, retain_graph."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jaxmtl.tutorials.inputs import one_layer_inputs


def _leaves(inputs: dict | None):
    v = {k: torch.from_numpy(a) for k, a in (inputs or one_layer_inputs()).items()}
    return v["x"], v["y"], v["w"].requires_grad_(True), v["b"].requires_grad_(True)


def one_layer_bce(inputs: dict | None = None) -> dict:
    """BCE-with-logits loss of z = x @ w + b: its gradients with respect to w and b."""
    x, y, w, b = _leaves(inputs)
    z = torch.matmul(x, w) + b
    loss = F.binary_cross_entropy_with_logits(z, y)
    loss.backward()
    return {"loss": loss.detach().numpy(), "w_grad": w.grad.numpy(), "b_grad": b.grad.numpy()}


def grad_fn_jaxpr(inputs: dict | None = None) -> dict:
    """The recorded computation: z.grad_fn, loss.grad_fn and the chain of next_functions back to a leaf."""
    x, y, w, b = _leaves(inputs)
    z = torch.matmul(x, w) + b
    loss = F.binary_cross_entropy_with_logits(z, y)
    chain, fn = [], loss.grad_fn
    while fn is not None:  # walk the first input of each node back to a leaf
        chain.append(type(fn).__name__)
        fn = fn.next_functions[0][0] if fn.next_functions else None
    return {"z_grad_fn": type(z.grad_fn).__name__, "loss_grad_fn": type(loss.grad_fn).__name__,
            "grad_fn_chain": " <- ".join(chain)}


def no_grad_detach(inputs: dict | None = None) -> dict:
    """A stopped value is a constant: torch.no_grad() and z.detach()."""
    x, y, w, b = _leaves(inputs)
    z = torch.matmul(x, w) + b
    tracked = z.requires_grad
    with torch.no_grad():
        z_ng = torch.matmul(x, w) + b
    z_det = z.detach()
    loss = (z_det * z).sum()
    loss.backward()
    return {"z": z.detach().numpy(), "w_grad": w.grad.numpy(), "b_grad": b.grad.numpy(),
            "requires_grad(z, no_grad z, detached z)": (tracked, z_ng.requires_grad, z_det.requires_grad)}


def retain_graph(inputs: dict | None = None) -> dict:
    """Two losses on one graph: two backward calls accumulate the gradient of their sum."""
    x, y, w, b = _leaves(inputs)
    z = torch.matmul(x, w) + b
    loss1, loss2 = F.binary_cross_entropy_with_logits(z, y), (z ** 2).mean()
    loss1.backward(retain_graph=True)  # keep the saved tensors for loss2
    loss2.backward()                   # adds into w.grad / b.grad
    acc_w, acc_b = w.grad.clone(), b.grad.clone()
    w.grad, b.grad = None, None
    z = torch.matmul(x, w) + b
    (F.binary_cross_entropy_with_logits(z, y) + (z ** 2).mean()).backward()
    sum_w, sum_b = w.grad.clone(), b.grad.clone()
    # y = 2x, loss = y.sum(), backward twice -> x.grad doubles.
    xs = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    loss = (xs * 2).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    x_grad_twice = xs.grad.clone()
    # The wrong way: loss1.backward(); loss2.backward() on a shared graph.
    z = torch.matmul(x, w) + b
    loss1, loss2 = F.binary_cross_entropy_with_logits(z, y), (z ** 2).mean()
    loss1.backward()  # frees the saved tensors of the shared part
    error = ""
    try:
        loss2.backward()
    except RuntimeError as e:
        error = str(e).split(".")[0]
    return {"w_grad_1_plus_2": acc_w.numpy(), "b_grad_1_plus_2": acc_b.numpy(),
            "w_grad_of_sum": sum_w.numpy(), "b_grad_of_sum": sum_b.numpy(),
            "x_grad_after_two_backwards": x_grad_twice.numpy(),
            "second_backward_without_retain_graph": error}


def jacobian_product() -> dict:
    """inp = eye(4, 5), out = (inp + 1)^2 .T: v^T J with v = ones, twice (accumulated), then after zeroing."""
    inp = torch.eye(4, 5, dtype=torch.float64, requires_grad=True)
    out = (inp + 1).pow(2).t()
    out.backward(torch.ones_like(out), retain_graph=True)
    first = inp.grad.clone()
    out.backward(torch.ones_like(out), retain_graph=True)
    second = inp.grad.clone()
    inp.grad.zero_()
    out.backward(torch.ones_like(out), retain_graph=True)
    return {"first_call": first.numpy(), "second_call": second.numpy(), "after_zeroing": inp.grad.numpy()}
