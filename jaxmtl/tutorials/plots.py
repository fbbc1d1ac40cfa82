"""PNG figures of the examples that have one (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIGURES: dict[str, tuple[str, str]] = {  # example -> (file name, caption)
    "fd_error_vs_h": ("fd_error_vs_h.png",
                      "Central-difference error of e^x against h: O(h²) truncation + O(eps/h) rounding"),
    "exp_at_20": ("exp_at_20.png", "d/dx e^x at x = 20: finite differences against autodiff"),
    "sqrt_cancellation": ("sqrt_cancellation.png",
                          "sqrt(x²+1) - x: the naive form and its autodiff gradient cancel, the stable form does not"),
    "fd_cost": ("fd_cost.png", "Work per gradient: 2n calls of f by finite differences against one reverse pass"),
    "timestep_contributions": ("timestep_contributions.png",
                               "Each timestep's share of loss_final's gradient, at the features and in the CNN"),
    "concat_split": ("concat_split.png", "Mean |d loss_final / d concat(features, dyn)| per channel: the CNN's part "
                                         "and the dynamic data's part"),
}
COLORS = {"float32": "tab:blue", "float64": "tab:orange", "PyTorch": "tab:red", "JAX": "tab:blue"}


def _fd_error_vs_h(ax, fd, _):
    for name in ("float32", "float64"):
        color = COLORS[name]
        ax.loglog(fd["h"], fd[f"err_{name}"], "o-", ms=3, color=color, label=f"{name}: measured")
        eps = fd[f"eps_{name}"]
        model = fd["h"] ** 2 / 6 + eps / fd["h"]  # truncation h^2 f'''/6 + rounding eps f/h (f = f''' = e^x)
        ax.loglog(fd["h"], model, "--", color=color, alpha=0.6, label=f"{name}: h²/6 + eps/h")
        ax.axvline(fd[f"eps_cbrt_{name}"], color=color, ls=":", label=f"eps^(1/3) = {fd[f'eps_cbrt_{name}']:.1e}")
        ax.plot(fd[f"h_opt_{name}"], fd[f"min_err_{name}"], "k*", ms=10)
    ax.set(xlabel="h", ylabel="median relative error", ylim=(1e-13, 2),
           title="central difference of e^x on [0.5, 1.5]: O(h²) + O(eps/h)")


def _exp_at_20(ax, e20, _):
    for name in ("float32", "float64"):
        ax.loglog(e20["h"], np.maximum(e20[f"fd_err_{name}"], 1e-17), "o-", ms=3, color=COLORS[name],
                  label=f"{name} finite difference")
        ax.axhline(max(e20[f"autodiff_err_{name}"], 1e-17), color=COLORS[name], ls="--", label=f"{name} autodiff")
    ax.set(xlabel="h", ylabel="relative error", title="d/dx e^x at x = 20")


def _sqrt_cancellation(ax, sq, _):
    for key, label in (("value_err_naive", "value: sqrt(x²+1) - x"),
                       ("value_err_stable", "value: 1/(sqrt(x²+1) + x)"),
                       ("grad_err_naive", "autodiff of the naive form"),
                       ("grad_err_stable", "autodiff of the stable form")):
        ax.loglog(sq["x"], np.maximum(sq[key], 1e-17), "o-", ms=3, label=label)
    ax.set(xlabel="x", ylabel="relative error (float64)",
           title="cancellation: rewrite the function, not the derivative")


def _fd_cost(axes, cost, _):
    a1, a2 = axes
    a1.loglog(cost["n"], cost["fd_calls"], "o-", label="finite differences: 2n calls of f")
    a1.loglog(cost["n"], cost["reverse_passes"], "s-", label="reverse mode: 1 pass")
    a1.set(xlabel="n (parameters)", ylabel="evaluations", title="work per gradient")
    a2.loglog(cost["n"], cost["fd_seconds"], "o-", label="finite differences")
    a2.loglog(cost["n"], cost["reverse_seconds"], "s-", label="jax.grad (jitted)")
    a2.set(xlabel="n", ylabel="seconds (this machine)", title="wall time per gradient")


def _timestep_contributions(axes, jax_res, torch_res):
    t = np.arange(len(jax_res["share_norms"]))
    sides = [("JAX", jax_res)] + ([("PyTorch", torch_res)] if torch_res else [])
    for ax, key, title in ((axes[0], "feature_grad_norm_per_t", "‖d loss_final / d features_t‖"),
                           (axes[1], "share_norms", "‖timestep t's share of the CNN gradient‖")):
        for i, (side, res) in enumerate(sides):
            ax.bar(t + 0.4 * i - 0.2 * (len(sides) - 1), res[key], width=0.4, color=COLORS[side], label=side)
        ax.set(xlabel="timestep t", xticks=t, title=title)


def _concat_split(ax, jax_res, torch_res):
    d = jax_res["feats_grad"].shape[-1]
    mean = np.abs(jax_res["fused_grad"]).mean(axis=(0, 1))
    channels = np.arange(mean.size)
    ax.bar(channels[:d], mean[:d], color="tab:blue", label="features (to the CNN)")
    ax.bar(channels[d:], mean[d:], color="tab:orange", label="dynamic data")
    if torch_res:
        ax.plot(channels, np.abs(torch_res["fused_grad"]).mean(axis=(0, 1)), "k.", ms=3, label="PyTorch")
    ax.axvline(d - 0.5, color="k", ls=":")
    ax.set(xlabel="channel of concat(features, dyn)", ylabel="mean |gradient| (JAX bars)",
           title="the split at the concat")


_DRAW = {  # example -> (drawing function, number of panels)
    "fd_error_vs_h": (_fd_error_vs_h, 1), "exp_at_20": (_exp_at_20, 1), "sqrt_cancellation": (_sqrt_cancellation, 1),
    "fd_cost": (_fd_cost, 2), "timestep_contributions": (_timestep_contributions, 2), "concat_split": (_concat_split, 1)}


def draw(name: str, jax_res: dict, torch_res: dict | None, path: Path) -> Path:
    """Example `name`'s figure (a key of FIGURES) from its JAX results, PyTorch's alongside when given; a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    function, panels = _DRAW[name]
    fig, axes = plt.subplots(1, panels, figsize=(7 if panels == 1 else 9.5, 4.5 if panels == 1 else 4))
    function(axes, jax_res, torch_res)
    for ax in np.atleast_1d(axes):
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def write_plots(parts: dict[str, dict], out_dir: Path) -> list[Path]:
    """The figures of numerical_stability: parts = {example name: its JAX results}."""
    return [draw(name, res, None, Path(out_dir) / FIGURES[name][0]) for name, res in parts.items()]
