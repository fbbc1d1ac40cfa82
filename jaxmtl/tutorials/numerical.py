"""Numerical vs symbolic vs automatic differentiation, measured.

- central differences: error against the exact derivative as a function of h,
  truncation O(h^2) + rounding O(eps/h), optimum near eps^(1/3), per dtype;
- e^x at x = 20; sqrt(x^2 + 1) - x at large x (cancellation);
- the cost of a gradient: 2n function evaluations vs one reverse pass.
The arrays are computed with explicit dtypes (float64 needs jax_enable_x64).
"""

from __future__ import annotations

import time
from decimal import Decimal, getcontext
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def decade_grid(lo: int, hi: int, per_decade: int) -> np.ndarray:
    """10**e for e from lo to hi in steps of 1/per_decade, each correctly rounded to float64.

    Not `10.0 ** np.linspace(...)`: numpy's vectorised power differs in the last bit between
    CPUs (its AVX-512 kernels are not correctly rounded), and so would every page built on it."""
    getcontext().prec = 50
    steps = (hi - lo) * per_decade
    return np.array([float(Decimal(10) ** (Decimal(lo) + Decimal(i) / per_decade)) for i in range(steps + 1)])


H_GRID = decade_grid(-14, 0, 4)
SQRT_X_GRID = decade_grid(0, 10, 4)        # sqrt_cancellation's x: 1 to 1e10
X_GRID = np.linspace(0.5, 1.5, 64)         # the error is the median over these x


def _need_x64() -> None:
    if not jax.config.jax_enable_x64:
        raise RuntimeError("the numerical study needs float64: jax.config.update('jax_enable_x64', True)")


def central_difference(f, x, h):
    """(f(x + h) - f(x - h)) / 2h, evaluated in the dtype of x."""
    return (f(x + h) - f(x - h)) / (2 * h)


def slope(h, err, lo, hi) -> float:
    """Least-squares slope of log10(err) vs log10(h) for lo <= h <= hi."""
    m = (h >= lo) & (h <= hi) & (err > 0)
    return float(np.polyfit(np.log10(h[m]), np.log10(err[m]), 1)[0])


def fd_error_vs_h() -> dict:
    """Central-difference error of d/dx e^x against h, in float32 and float64: O(h^2) truncation plus O(eps/h) rounding."""
    _need_x64()
    out = {"h": H_GRID}
    exact = np.exp(X_GRID)  # d/dx e^x = e^x, in float64
    for name, dtype in DTYPES.items():
        x = jnp.asarray(X_GRID, dtype)[None, :]
        h = jnp.asarray(H_GRID, dtype)[:, None]
        fd = np.asarray(central_difference(jnp.exp, x, h), np.float64)
        x_used = np.asarray(x, np.float64)  # the exact derivative at the x actually represented
        err = np.median(np.abs(fd - np.exp(x_used)) / np.exp(x_used), axis=1)
        eps = float(jnp.finfo(dtype).eps)
        h_opt = float(H_GRID[np.argmin(err)])
        ad = np.asarray(jax.vmap(jax.grad(jnp.exp))(jnp.asarray(X_GRID, dtype)), np.float64)
        out.update({f"err_{name}": err, f"eps_{name}": eps, f"h_opt_{name}": h_opt,
                    f"eps_cbrt_{name}": eps ** (1 / 3), f"min_err_{name}": float(err.min()),
                    f"slope_truncation_{name}": slope(H_GRID, err, 30 * h_opt, 0.3),
                    f"slope_rounding_{name}": slope(H_GRID, err, h_opt * 1e-4, h_opt / 30),
                    f"autodiff_err_{name}": float(np.median(np.abs(ad - exact) / exact))})
    return out


def exp_at_20() -> dict:
    """d/dx e^x at x = 20 (e^20 = 4.85e8) by central differences and by autodiff."""
    _need_x64()
    exact = float(np.exp(np.float64(20.0)))
    out = {"h": H_GRID, "exact": exact}
    for name, dtype in DTYPES.items():
        x = jnp.asarray(20.0, dtype)
        fd = np.asarray(central_difference(jnp.exp, x, jnp.asarray(H_GRID, dtype)), np.float64)
        err = np.abs(fd - exact) / exact
        out.update({f"fd_err_{name}": err, f"fd_best_err_{name}": float(err.min()),
                    f"fd_best_h_{name}": float(H_GRID[np.argmin(err)]),
                    f"autodiff_err_{name}": abs(float(jax.grad(jnp.exp)(x)) - exact) / exact})
    return out


def sqrt_reference(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sqrt(x^2+1) - x and its derivative -1/(sqrt(x^2+1) (sqrt(x^2+1) + x)) in 50-digit decimals."""
    getcontext().prec = 50
    vals, ders = [], []
    for x in xs:
        d = Decimal(float(x))
        s = (d * d + 1).sqrt()
        vals.append(float(s - d))
        ders.append(float(-1 / (s * (s + d))))
    return np.array(vals), np.array(ders)


def _naive(x):
    return jnp.sqrt(x * x + 1) - x


def _stable(x):
    return 1 / (jnp.sqrt(x * x + 1) + x)


def sqrt_cancellation() -> dict:
    """Cancellation: sqrt(x^2 + 1) - x and its derivative at large x, naive vs stable form, float64.

    Measured: autodiff of the naive form cancels exactly as its symbolic
    derivative x / sqrt(x^2 + 1) - 1 does. Autodiff differentiates the
    program as written; the cure is rewriting the function (the stable form).
    """
    _need_x64()
    xs = SQRT_X_GRID
    ref_val, ref_der = sqrt_reference(xs)
    x = jnp.asarray(xs, jnp.float64)
    rel = lambda a, ref: np.abs(np.asarray(a, np.float64) - ref) / np.abs(ref)  # noqa: E731
    return {"x": xs,
            "value_err_naive": rel(_naive(x), ref_val), "value_err_stable": rel(_stable(x), ref_val),
            "grad_err_naive": rel(jax.vmap(jax.grad(_naive))(x), ref_der),
            "grad_err_stable": rel(jax.vmap(jax.grad(_stable))(x), ref_der)}


def fd_cost(ns: tuple[int, ...] = (10, 30, 100, 300, 1000), h: float = 1e-6) -> dict:
    """The cost of a gradient of f: R^n -> R: 2n calls of f by central differences, one reverse pass by jax.grad."""
    _need_x64()
    calls = {"n": 0}

    @jax.jit
    def f_jit(w):
        return jnp.sum(jnp.tanh(w) * jnp.arange(w.shape[0]))

    def f(w):
        calls["n"] += 1
        return f_jit(w)

    grad = jax.jit(jax.grad(f_jit))
    fd_calls, fd_time, ad_time, max_diff = [], [], [], []
    for n in ns:
        w = jnp.linspace(-1.0, 1.0, n, dtype=jnp.float64)
        eye = np.eye(n) * h
        f(w).block_until_ready(), grad(w).block_until_ready()  # compile outside the timing
        calls["n"] = 0
        t0 = time.perf_counter()
        g_fd = np.array([float(f(w + eye[i]) - f(w - eye[i])) / (2 * h) for i in range(n)])
        fd_time.append(time.perf_counter() - t0)
        fd_calls.append(calls["n"])
        t0 = time.perf_counter()
        g_ad = grad(w).block_until_ready()
        ad_time.append(time.perf_counter() - t0)
        max_diff.append(float(np.max(np.abs(g_fd - np.asarray(g_ad)))))
    return {"n": np.asarray(ns), "fd_calls": np.asarray(fd_calls), "reverse_passes": np.ones(len(ns), int),
            "fd_seconds": np.asarray(fd_time), "reverse_seconds": np.asarray(ad_time),
            "max_abs_diff_fd_vs_autodiff": np.asarray(max_diff)}


def numerical_stability(out_dir: str | Path | None = None, cost_ns: tuple[int, ...] = (10, 30, 100, 300, 1000)) -> dict:
    """The four measurements above together; with out_dir, writes their PNG figures there."""
    parts = {"fd_error_vs_h": fd_error_vs_h(), "exp_at_20": exp_at_20(), "sqrt_cancellation": sqrt_cancellation(),
             "fd_cost": fd_cost(cost_ns)}
    out = {f"{p}/{k}": v for p, res in parts.items() for k, v in res.items()}
    if out_dir is not None:
        from jaxmtl.tutorials.plots import write_plots

        out["png_files"] = "\n".join(str(p) for p in write_plots(parts, Path(out_dir)))
    return out
