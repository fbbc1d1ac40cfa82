"""Crossover sweep: the training step against batch size, from the overhead-bound to the kernel-bound regime.

One model shape (a preset's widths, frame size and T), the batch size B
swept; at each B, JAX jit, torch eager and torch.compile are timed in
interleaved rounds (benchmarks/step.py), so every ratio comes from one
stretch of machine time. Per mode, a least-squares line t(B) = t0 + c * B
through the median step times splits the step into a fixed cost t0 (Python,
dispatch, kernel launch and scheduling overhead, independent of the batch)
and a per-sample cost c (the kernels). Their ratio, B_half = t0 / c, is the
batch at which both are equal (Hockney's n_1/2): below it the mode is
overhead-bound, above it kernel-bound. That is the crossover this sweep
reports, with JAX jit's speedup over each torch mode at every B.

    python -m benchmarks crossover --config small --batches 1,2,4,8,16 --out bench_out/crossover
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import step
from benchmarks.efficiency import analytic_flops
from benchmarks.timing import machine_info, write_results
from jaxmtl.config import get_config

MODES = ("jax_jit", "torch_eager", "torch_compile")


def fit_overhead(batches: list[int], seconds: list[float]) -> dict[str, float]:
    """Least-squares t = t0 + c * B; returns t0_s, per_sample_s and b_half = t0 / c (None if c <= 0)."""
    c, t0 = np.polyfit(np.asarray(batches, float), np.asarray(seconds, float), 1)
    return {"t0_s": float(t0), "per_sample_s": float(c), "b_half": float(t0 / c) if c > 0 else None}


def sweep(config: str, batches: list[int], budget_s: float) -> dict[str, Any]:
    base = get_config(config)
    rows = []
    for b in batches:
        cfg = step.config_for(config, b)
        print(f"--- crossover: {cfg.name}", flush=True)
        r = step.run_config(config, budget_s, modes=MODES, batch_size=b)
        flop = analytic_flops(cfg)["total"]
        rows.append({"batch_size": b, "frames": b * cfg.seq_len, "gflop_per_step": flop / 1e9,
                     "modes": {m: {"step": r["modes"][m]["step"],
                                   "gflops": flop / r["modes"][m]["step"]["median"] / 1e9} for m in MODES},
                     "speedups": {k: v for k, v in r["speedups"].items() if v is not None},
                     "load_average": [r["load_average_start"], r["load_average_end"]]})
    fits = {m: fit_overhead(batches, [row["modes"][m]["step"]["median"] for row in rows]) for m in MODES}
    return {"config": config, "image_size": base.image_size, "widths": list(base.widths),
            "seq_len": base.seq_len, "rows": rows, "fits": fits}


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bs = [r["batch_size"] for r in res["rows"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for m in MODES:
        ax1.plot(bs, [r["modes"][m]["step"]["median"] * 1e3 for r in res["rows"]], "o-", label=m)
        b_half = res["fits"][m]["b_half"]
        if b_half:
            ax1.axvline(b_half, ls=":", lw=0.8, color=ax1.lines[-1].get_color())
    ax1.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="median step (ms)",
            title="step time (dotted: B_half = t0 / c)")
    ax1.legend(fontsize=8)
    for key in ("jit_vs_torch_eager", "jit_vs_torch_compile"):
        ax2.plot(bs, [r["speedups"].get(key, np.nan) for r in res["rows"]], "o-", label=key)
    ax2.axhline(1.0, color="gray", lw=0.8)
    ax2.set(xscale="log", xlabel="batch size B", ylabel="other mode / JAX jit", title="JAX jit speedup")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xticks(bs, [str(b) for b in bs])
        ax.minorticks_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="small", help="preset whose widths, frame size and T are swept over B")
    p.add_argument("--batches", default="1,2,4,8,16", help="comma list of batch sizes")
    p.add_argument("--budget", type=float, default=3.0, help="timing seconds per mode and batch size")
    p.add_argument("--out", default="bench_out/crossover")


def run(args: argparse.Namespace) -> dict[str, Any]:
    get_config(args.config)  # unknown names fail before any compilation
    try:
        batches = sorted({int(b) for b in args.batches.split(",")})
    except ValueError:
        raise SystemExit(f"--batches must be a comma list of integers, got {args.batches!r}") from None
    if len(batches) < 2 or batches[0] < 1:
        raise SystemExit(f"--batches needs at least two sizes >= 1 to fit t0 + c * B, got {batches}")
    res = sweep(args.config, batches, args.budget)
    res["machine"] = machine_info()
    write_results(args.out, res)
    plot(res, Path(args.out) / "crossover.png")
    print(f"{'B':>4}{'GFLOP':>8}" + "".join(f"{m + ' ms':>18}" for m in MODES) + f"{'vs torch':>10}{'vs compile':>11}")
    for r in res["rows"]:
        print(f"{r['batch_size']:>4}{r['gflop_per_step']:8.2f}"
              + "".join(f"{r['modes'][m]['step']['median'] * 1e3:18.1f}" for m in MODES)
              + f"{r['speedups'].get('jit_vs_torch_eager', float('nan')):10.2f}"
              + f"{r['speedups'].get('jit_vs_torch_compile', float('nan')):11.2f}")
    for m, f in res["fits"].items():
        print(f"{m}: t0 {f['t0_s'] * 1e3:.1f} ms + {f['per_sample_s'] * 1e3:.2f} ms/sample; B_half {f['b_half']}")
    return res
