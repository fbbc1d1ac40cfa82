"""Numerical vs automatic differentiation in PyTorch: the same finite-difference measurements, exact derivatives by autograd."""

from __future__ import annotations

import time

import numpy as np
import torch

from jaxmtl.tutorials.numerical import H_GRID, SQRT_X_GRID, X_GRID, slope, sqrt_reference

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _autograd(f, x: torch.Tensor) -> np.ndarray:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x).sum(), x)  # elementwise f: the sum's gradient is f'(x)
    return g.detach().numpy().astype(np.float64)


def fd_error_vs_h() -> dict:
    """Central-difference error of d/dx e^x against h, in float32 and float64: O(h^2) truncation plus O(eps/h) rounding."""
    out = {"h": H_GRID}
    exact = np.exp(X_GRID)
    for name, dtype in DTYPES.items():
        x = torch.tensor(X_GRID, dtype=dtype)[None, :]
        h = torch.tensor(H_GRID, dtype=dtype)[:, None]
        fd = ((torch.exp(x + h) - torch.exp(x - h)) / (2 * h)).numpy().astype(np.float64)
        x_used = x.numpy().astype(np.float64)
        err = np.median(np.abs(fd - np.exp(x_used)) / np.exp(x_used), axis=1)
        eps = float(torch.finfo(dtype).eps)
        h_opt = float(H_GRID[np.argmin(err)])
        ad = _autograd(torch.exp, torch.tensor(X_GRID, dtype=dtype))
        out.update({f"err_{name}": err, f"eps_{name}": eps, f"h_opt_{name}": h_opt,
                    f"eps_cbrt_{name}": eps ** (1 / 3), f"min_err_{name}": float(err.min()),
                    f"slope_truncation_{name}": slope(H_GRID, err, 30 * h_opt, 0.3),
                    f"slope_rounding_{name}": slope(H_GRID, err, h_opt * 1e-4, h_opt / 30),
                    f"autodiff_err_{name}": float(np.median(np.abs(ad - exact) / exact))})
    return out


def exp_at_20() -> dict:
    """d/dx e^x at x = 20 (e^20 = 4.85e8) by central differences and by autodiff."""
    exact = float(np.exp(np.float64(20.0)))
    out = {"h": H_GRID, "exact": exact}
    for name, dtype in DTYPES.items():
        x = torch.tensor(20.0, dtype=dtype)
        h = torch.tensor(H_GRID, dtype=dtype)
        fd = ((torch.exp(x + h) - torch.exp(x - h)) / (2 * h)).numpy().astype(np.float64)
        err = np.abs(fd - exact) / exact
        out.update({f"fd_err_{name}": err, f"fd_best_err_{name}": float(err.min()),
                    f"fd_best_h_{name}": float(H_GRID[np.argmin(err)]),
                    f"autodiff_err_{name}": abs(float(_autograd(torch.exp, x[None])[0]) - exact) / exact})
    return out


def sqrt_cancellation() -> dict:
    """Cancellation: sqrt(x^2 + 1) - x and its derivative at large x, naive vs stable form, float64."""
    xs = SQRT_X_GRID
    ref_val, ref_der = sqrt_reference(xs)
    x = torch.tensor(xs, dtype=torch.float64)
    naive = lambda x: torch.sqrt(x * x + 1) - x  # noqa: E731
    stable = lambda x: 1 / (torch.sqrt(x * x + 1) + x)  # noqa: E731
    rel = lambda a, ref: np.abs(np.asarray(a, np.float64) - ref) / np.abs(ref)  # noqa: E731
    return {"x": xs, "value_err_naive": rel(naive(x).numpy(), ref_val), "value_err_stable": rel(stable(x).numpy(), ref_val),
            "grad_err_naive": rel(_autograd(naive, x), ref_der), "grad_err_stable": rel(_autograd(stable, x), ref_der)}


def fd_cost(ns: tuple[int, ...] = (10, 30, 100, 300, 1000), h: float = 1e-6) -> dict:
    """The cost of a gradient of f: R^n -> R: 2n calls of f by central differences, one backward."""
    calls = {"n": 0}

    def f(w):
        calls["n"] += 1
        return (torch.tanh(w) * torch.arange(w.shape[0], dtype=w.dtype)).sum()

    fd_calls, fd_time, ad_time, max_diff = [], [], [], []
    for n in ns:
        w = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
        eye = torch.eye(n, dtype=torch.float64) * h
        calls["n"] = 0
        t0 = time.perf_counter()
        with torch.no_grad():
            g_fd = torch.stack([(f(w + eye[i]) - f(w - eye[i])) / (2 * h) for i in range(n)])
        fd_time.append(time.perf_counter() - t0)
        fd_calls.append(calls["n"])
        t0 = time.perf_counter()
        wg = w.clone().requires_grad_(True)
        f(wg).backward()
        ad_time.append(time.perf_counter() - t0)
        max_diff.append(float((g_fd - wg.grad).abs().max()))
    return {"n": np.asarray(ns), "fd_calls": np.asarray(fd_calls), "reverse_passes": np.ones(len(ns), int),
            "fd_seconds": np.asarray(fd_time), "reverse_seconds": np.asarray(ad_time),
            "max_abs_diff_fd_vs_autodiff": np.asarray(max_diff)}


def numerical_stability(cost_ns: tuple[int, ...] = (10, 30, 100, 300, 1000)) -> dict:
    """The four measurements above together (the figures are drawn from the JAX side)."""
    parts = {"fd_error_vs_h": fd_error_vs_h(), "exp_at_20": exp_at_20(), "sqrt_cancellation": sqrt_cancellation(),
             "fd_cost": fd_cost(cost_ns)}
    return {f"{p}/{k}": v for p, res in parts.items() for k, v in res.items()}
