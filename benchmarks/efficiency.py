"""Analytic FLOPs per training step, the measured float32 and bfloat16 matmul ceilings, and each
mode's fraction of both (a float32 mode against the bf16 ceiling: what bf16 units would offer)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.conv_shapes import conv_shapes
from benchmarks.timing import aot_compile, machine_info, time_budgeted, write_results
from jaxmtl.config import ModelConfig, get_config
from jaxmtl.nn.conv_impl import out_size


def analytic_flops(cfg: ModelConfig) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) of convs and matmuls; BN, ReLU, pooling, loss, optimizer excluded.

    Backward = dX + dW, each as large as the forward product, except the stem's
    dX (the images need no gradient; neither framework computes it).
    """
    conv_fwd = conv_bwd = 0.0
    for s in conv_shapes(cfg):
        ho = out_size(s["h"], s["k"], s["stride"], s["pad"])
        f = 2.0 * s["n"] * ho * ho * s["k"] ** 2 * s["cin"] * s["cout"] * s["count"]
        conv_fwd += f
        conv_bwd += f if s["layer"] == "stem" else 2 * f
    bt, h = cfg.batch_size * cfg.seq_len, cfg.gru_hidden
    dense = 2.0 * bt * (cfg.gru_input_dim * 3 * h + h * 3 * h     # GRU input projection + recurrence
                        + cfg.feature_dim * cfg.f_pose + h * cfg.f_vel) \
        + 2.0 * cfg.batch_size * h * cfg.num_classes
    fwd = conv_fwd + dense
    return {"conv_forward": conv_fwd, "conv_backward": conv_bwd, "dense_forward": dense,
            "forward": fwd, "total": fwd + conv_bwd + 2 * dense}


CEILING_DTYPES = ("float32", "bfloat16")


def matmul_ceiling(n: int = 2048, budget_s: float = 3.0, dtype: str = "float32") -> dict[str, Any]:
    """GFLOP/s of a large `dtype` matmul under jit (and in torch), this run, this machine; the
    ceiling is the faster of the two."""
    x = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    a = jnp.asarray(x, dtype)
    compiled, _ = aot_compile(jnp.dot, a, a)
    stat = time_budgeted(lambda: compiled(a, a), budget_s, min_reps=5)
    out = {"n": n, "dtype": dtype, "jax_step": stat, "jax_gflops": 2 * n ** 3 / stat["median"] / 1e9}
    try:
        import torch

        ta = torch.from_numpy(x).to(getattr(torch, dtype))
        tstat = time_budgeted(lambda: torch.mm(ta, ta), budget_s, min_reps=5)
        out.update(torch_step=tstat, torch_gflops=2 * n ** 3 / tstat["median"] / 1e9)
    except ImportError:
        pass
    out["ceiling_gflops"] = max(out["jax_gflops"], out.get("torch_gflops", 0.0))
    return out


def xla_cost_flops(cfg: ModelConfig) -> float | None:
    """XLA's own count for the jitted step. It counts a while loop's body ONCE (the GRU scan runs
    T times), and counts the im2col/shift formulations' matmuls, so it is a cross-check only."""
    from benchmarks import steps_impl as S

    step, args = S.jax_setup(cfg)
    compiled, _ = aot_compile(step, *args)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) if cost else None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configs", default="tiny,small,resnet18")
    p.add_argument("--step-dir", default="bench_out/step",
                   help="read step times from DIR/<config>/results.json (written by `step`)")
    p.add_argument("--out", default="bench_out/efficiency")


def run(args: argparse.Namespace) -> dict[str, Any]:
    ceilings = {d: matmul_ceiling(dtype=d) for d in CEILING_DTYPES}
    rows = []
    for name in args.configs.split(","):
        cfg = get_config(name)
        flops = analytic_flops(cfg)
        row = {"config": name, "analytic_flops": flops, "xla_cost_analysis_flops": xla_cost_flops(cfg),
               "modes": {}}
        path = Path(args.step_dir) / name / "results.json"
        if path.exists():
            for mode, m in json.loads(path.read_text())["modes"].items():
                gflops = flops["total"] / m["step"]["median"] / 1e9
                row["modes"][mode] = {"gflops": gflops, **{f"fraction_of_{d}_ceiling": gflops / c["ceiling_gflops"]
                                                           for d, c in ceilings.items()}}
        rows.append(row)
    res = {"machine": machine_info(), "matmul_ceilings": ceilings, "rows": rows}
    write_results(args.out, res)
    plot(rows, ceilings, Path(args.out) / "efficiency.png")
    for d, c in ceilings.items():
        print(f"matmul ceiling ({c['n']}^2 {d}): JAX {c['jax_gflops']:.1f} GFLOP/s, "
              f"torch {c.get('torch_gflops', float('nan')):.1f} GFLOP/s")
    print(f"{'config':9}{'GFLOP/step':>11}{'XLA count':>11}" + "".join(f"{m + ' f32/bf16 %':>28}" for m in _modes(rows)))
    for r in rows:
        xla = r["xla_cost_analysis_flops"]
        print(f"{r['config']:9}{r['analytic_flops']['total'] / 1e9:11.2f}"
              f"{(xla or float('nan')) / 1e9:11.2f}"
              + "".join(f"{r['modes'][m]['fraction_of_float32_ceiling'] * 100:19.1f} /"
                        f"{r['modes'][m]['fraction_of_bfloat16_ceiling'] * 100:6.1f}" if m in r["modes"] else f"{'-':>28}"
                        for m in _modes(rows)))
    return res


def _modes(rows: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        seen += [m for m in r["modes"] if m not in seen]
    return seen


def plot(rows: list[dict[str, Any]], ceilings: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = _modes(rows)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(modes), 1)
    for i, m in enumerate(modes):
        ax.bar([j + i * width for j, r in enumerate(rows) if m in r["modes"]],
               [r["modes"][m]["gflops"] for r in rows if m in r["modes"]], width, label=m)
    for (d, c), ls in zip(ceilings.items(), ("--", ":")):
        ax.axhline(c["ceiling_gflops"], color="k", ls=ls, label=f"{d} matmul ceiling")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], [r["config"] for r in rows])
    ax.set_ylabel("GFLOP/s (analytic FLOPs / step time)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
