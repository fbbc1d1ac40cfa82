"""The human-readable verdict: DIR/report.md, DIR/grad_errors.png and DIR/layer_errors.png.

report.md says what was compared, lists every check with its error,
tolerance and verdict, names the worst tensors of each failing check and the
first layer where the port parts ways with the reference (localize.py), has
the per-layer table, and records library versions and device.
grad_errors.png plots the relative error of every parameter tensor (log
scale), grouped by module, with the tolerance drawn as a line;
layer_errors.png plots each layer's forward and backward errors along the network.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Mapping, Sequence

from jaxmtl.parity.checks import Check, summarize
from jaxmtl.parity.localize import Localisation, markdown_table, plot_layer_errors

FLOOR = 1e-18  # exact agreement (error 0) is drawn here on the log axis
PACKAGES = ("jax", "jaxlib", "flax", "optax", "torch", "numpy")


def versions() -> dict[str, str]:
    """Installed versions of the libraries both sides depend on, and Python's."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def devices() -> dict[str, str]:
    """Where each framework computed (parity runs on the default device of each)."""
    import jax

    out = {"jax device": ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices()),
           "jax default matmul precision": str(jax.config.jax_default_matmul_precision)}
    if "torch" in sys.modules:  # never import torch just to describe it
        torch = sys.modules["torch"]
        out["torch device"] = ("cuda:" + torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu"
        out["torch threads"] = str(torch.get_num_threads())
        out["torch TF32 matmul"] = str(torch.backends.cuda.matmul.allow_tf32)
    return out


def worst_tensors(check: Check, n: int = 3) -> list[tuple[str, float]]:
    """The n tensors with the largest error (NaN first), for pointing at the layer to fix."""
    key = lambda kv: float("inf") if kv[1] != kv[1] else kv[1]  # noqa: E731
    return sorted(check.errors.items(), key=key, reverse=True)[:n]


def divergence_line(check: Check, loc: Localisation | None) -> str | None:
    """`FAIL <check>: first divergent layer <name> (forward|backward)`, or why no layer is named."""
    if loc is None:
        return None
    if loc.first is not None:
        return f"FAIL {check.name}: {loc.first.describe()}"
    if check.name.startswith(("forward/", "batch_stats", "grad/")) and "_after/" not in check.name:
        return f"FAIL {check.name}: every layer agrees; the difference is outside the layers (in the loss)"
    return (f"FAIL {check.name}: every layer agrees in one forward/backward; the difference comes "
            f"from the optimizer update or builds up over the steps")


def failure_lines(checks: Sequence[Check], loc: Localisation | None = None) -> list[str]:
    """Per failing check: a line naming its worst tensors, and one naming the first divergent layer."""
    lines = []
    for c in checks:
        if not c.passed:
            tops = ", ".join(f"{k} ({v:.2e})" for k, v in worst_tensors(c))
            lines.append(f"FAIL {c.name}: worst tensor {c.worst} "
                         f"(max_rel_err {c.max_rel_err:.3e} > tol {c.tolerance:.0e}); top: {tops}")
            layer = divergence_line(c, loc)
            if layer is not None:
                lines.append(layer)
    return lines


# What each family of checks compares, for the report's reader.
MEANING = {
    "forward/train": "model outputs and losses, train mode (BatchNorm on batch statistics)",
    "forward/eval": "model outputs and losses, eval mode (BatchNorm on running statistics)",
    "batch_stats": "BatchNorm running mean/var after train-mode forwards",
    "grad/": "gradient of one loss w.r.t. every parameter tensor",
    "grad/weighted_sum": "JAX self-consistency: weighted part gradients sum to the total gradient",
    "curve/": "total loss at every step of N optimizer steps",
    "params_after/": "parameters after N optimizer steps",
    "batch_stats_after/": "BatchNorm statistics after N optimizer steps",
    "replay/": "optimizers alone: parameters after every step of one recorded gradient sequence",
    "envelope/": "float32: distance to torch float64, per step, as a share of k x torch float32's own, "
                 "and this optimizer's replays as a share of their tolerance (<= 1 passes)",
}


def meaning(name: str) -> str:
    return MEANING.get(name) or next((v for k, v in MEANING.items() if k.endswith("/") and name.startswith(k)), "")


def render_markdown(checks: Sequence[Check], meta: Mapping[str, str], plots: Sequence[str] = (),
                    localisation: Localisation | None = None) -> str:
    passed = summarize(list(checks))
    n_fail = sum(not c.passed for c in checks)
    lines = [f"# Parity report: {'PASSED' if passed else f'FAILED ({n_fail} of {len(checks)} checks)'}", ""]
    lines += ["## What was compared", ""]
    lines += [f"- **{k}**: {v}" for k, v in meta.items()]
    lines += ["- **metric**: per tensor `||jax - torch|| / max(||torch||, 1e-30)` (torch is the "
              "reference); a check's error is the maximum over its tensors", ""]
    lines += ["## Checks", "", "| check | max_rel_err | tolerance | result | worst tensor | compares |",
              "| --- | --- | --- | --- | --- | --- |"]
    for c in checks:
        lines.append(f"| {c.name} | {c.max_rel_err:.3e} | {c.tolerance:.0e} | "
                     f"{'pass' if c.passed else '**FAIL**'} | `{c.worst}` | {meaning(c.name)} |")
    lines.append("")
    if n_fail:
        lines += ["## Failures: where to look", ""]
        lines += [f"- {line}" for line in failure_lines(checks, localisation)]
        lines.append("")
    if localisation is not None:
        lines += ["## Per layer", "",
                  "One train-mode forward and backward on the first batch, every layer (a module owning "
                  "tensors) in call order: relative error of its input, output, state after the forward "
                  "(buffers), the gradient reaching its output, the gradient it passes to its input, and "
                  f"its parameter gradients; bold: above the tolerance {localisation.tolerance:.0e}.", ""]
        for d in (localisation.forward, localisation.backward):
            if d is not None:
                lines.append(f"- **{d.describe()}**: {d.what} error {d.error:.3e}")
        if localisation.first is None:
            lines.append("- every layer agrees within the tolerance, forward and backward")
        lines += [""] + markdown_table(localisation) + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += ["## Environment", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in {**versions(), **devices()}.items()]
    lines.append("")
    return "\n".join(lines)


def _group(name: str) -> str:
    """Module a tensor belongs to: 'backbone.layer2.0.conv1.weight' -> 'backbone.layer2'."""
    parts = name.replace("/", ".").split(".")
    if parts[0] == "backbone" and len(parts) > 2:
        return ".".join(parts[:2]) if parts[1].startswith("layer") else "backbone.stem"
    return parts[0] if len(parts) > 1 else "(top)"


def plot_grad_errors(checks: Sequence[Check], path: Path) -> bool:
    """grad_errors.png: one row per parameter tensor, one marker per grad/* check. False if none."""
    # grad/weighted_sum compares JAX with itself, not with torch: left out of this plot.
    grads = [c for c in checks if c.name.startswith("grad/") and c.name != "grad/weighted_sum" and c.errors]
    if not grads:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(grads[0].errors)  # torch order: the module order of the model
    height = max(4.0, 0.2 * len(names) + 1.5)
    fig, ax = plt.subplots(figsize=(10, height))
    markers = "os^Dv<>"
    for i, c in enumerate(grads):
        ys = [j for j, n in enumerate(names) if n in c.errors]
        xs = [max(c.errors[names[j]], FLOOR) if c.errors[names[j]] == c.errors[names[j]] else 1e3 for j in ys]
        ax.scatter(xs, ys, s=22, marker=markers[i % len(markers)], alpha=0.8, label=c.name, zorder=3)
    tol = grads[0].tolerance
    ax.axvline(tol, color="red", linestyle="--", linewidth=1.5, label=f"tolerance {tol:.0e}", zorder=2)
    groups = [_group(n) for n in names]
    start = 0
    for j in range(1, len(names) + 1):  # shade alternate module groups, label each once
        if j == len(names) or groups[j] != groups[start]:
            if len(set(groups[:start])) % 2 == 0:
                ax.axhspan(start - 0.5, j - 0.5, color="0.92", zorder=0)
            ax.text(1.01, (start + j - 1) / 2, groups[start], transform=ax.get_yaxis_transform(),
                    va="center", fontsize=8)
            start = j
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=6)
    for label, n in zip(ax.get_yticklabels(), names):  # failing tensors in red: where to look
        if any(not (c.errors.get(n, 0.0) <= c.tolerance) for c in grads):
            label.set_color("red")
            label.set_fontweight("bold")
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xscale("log")
    ax.set_xlabel("relative error ||jax - torch|| / ||torch||  (0 drawn at 1e-18)")
    ax.set_title("Gradient parity per parameter tensor")
    ax.grid(axis="x", which="major", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(out_dir: Path, checks: Sequence[Check], meta: Mapping[str, str],
                 localisation: Localisation | None = None) -> Path:
    """Writes out_dir/report.md (and grad_errors.png when there are grad checks, layer_errors.png
    with a localisation)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = ["grad_errors.png"] if plot_grad_errors(checks, out_dir / "grad_errors.png") else []
    if localisation is not None and localisation.layers:
        plot_layer_errors(localisation, out_dir / "layer_errors.png")
        plots.append("layer_errors.png")
    if (out_dir / "curves.png").exists():
        plots.append("curves.png")
    path = out_dir / "report.md"
    path.write_text(render_markdown(checks, meta, plots, localisation))
    return path
