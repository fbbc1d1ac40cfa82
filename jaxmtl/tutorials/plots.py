"""PNG figures of the numerical study (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_plots(parts: dict, out_dir: Path) -> list[Path]:
    """parts: {"fd", "exp20", "sqrt", "cost"} results of jaxmtl.tutorials.numerical; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    files = []

    def save(fig, name):
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)

    fd = parts["fd"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, color in (("float32", "tab:blue"), ("float64", "tab:orange")):
        ax.loglog(fd["h"], fd[f"err_{name}"], "o-", ms=3, color=color, label=f"{name}: measured")
        eps = fd[f"eps_{name}"]
        model = fd["h"] ** 2 / 6 + eps / fd["h"]  # truncation h^2 f'''/6 + rounding eps f/h (f = f''' = e^x)
        ax.loglog(fd["h"], model, "--", color=color, alpha=0.6, label=f"{name}: h²/6 + eps/h")
        ax.axvline(fd[f"eps_cbrt_{name}"], color=color, ls=":", label=f"eps^(1/3) = {fd[f'eps_cbrt_{name}']:.1e}")
        ax.plot(fd[f"h_opt_{name}"], fd[f"min_err_{name}"], "k*", ms=10)
    ax.set(xlabel="h", ylabel="median relative error", ylim=(1e-13, 2),
           title="central difference of e^x on [0.5, 1.5]: O(h²) + O(eps/h)")
    ax.legend(fontsize=7)
    save(fig, "fd_error_vs_h.png")

    e20 = parts["exp20"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, color in (("float32", "tab:blue"), ("float64", "tab:orange")):
        ax.loglog(e20["h"], np.maximum(e20[f"fd_err_{name}"], 1e-17), "o-", ms=3, color=color,
                  label=f"{name} finite difference")
        ax.axhline(max(e20[f"autodiff_err_{name}"], 1e-17), color=color, ls="--", label=f"{name} autodiff")
    ax.set(xlabel="h", ylabel="relative error", title="d/dx e^x at x = 20")
    ax.legend(fontsize=7)
    save(fig, "exp_at_20.png")

    sq = parts["sqrt"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in (("value_err_naive", "value: sqrt(x²+1) - x"), ("value_err_stable", "value: 1/(sqrt(x²+1) + x)"),
                       ("grad_err_naive", "autodiff of the naive form"), ("grad_err_stable", "autodiff of the stable form")):
        ax.loglog(sq["x"], np.maximum(sq[key], 1e-17), "o-", ms=3, label=label)
    ax.set(xlabel="x", ylabel="relative error (float64)", title="cancellation: rewrite the function, not the derivative")
    ax.legend(fontsize=7)
    save(fig, "sqrt_cancellation.png")

    cost = parts["cost"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4))
    a1.loglog(cost["n"], cost["fd_calls"], "o-", label="finite differences: 2n calls of f")
    a1.loglog(cost["n"], cost["reverse_passes"], "s-", label="reverse mode: 1 pass")
    a1.set(xlabel="n (parameters)", ylabel="evaluations", title="work per gradient")
    a1.legend(fontsize=7)
    a2.loglog(cost["n"], cost["fd_seconds"], "o-", label="finite differences")
    a2.loglog(cost["n"], cost["reverse_seconds"], "s-", label="jax.grad (jitted)")
    a2.set(xlabel="n", ylabel="seconds (this machine)", title="wall time per gradient")
    a2.legend(fontsize=7)
    save(fig, "fd_cost.png")
    return files
