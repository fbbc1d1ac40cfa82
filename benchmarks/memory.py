"""Peak memory of the training step with and without jax.checkpoint (ResNet blocks, GRU scan body)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.timing import machine_info, write_results

MB = 2.0 ** 20


def measure_variant(config: str, variant: str, budget_s: float) -> dict[str, Any]:
    """In THIS process: compile the step for `variant`, read memory_analysis, time it, read peak RSS."""
    import jax

    from benchmarks import remat
    from benchmarks import steps_impl as S
    from benchmarks.timing import aot_compile, peak_rss_mb, time_budgeted
    from jaxmtl.config import get_config

    cfg = get_config(config)
    step, args = S.jax_setup(cfg, model_fn=remat.model_fn(variant))
    with remat.scan_remat("scan" in variant):
        compiled, compile_s = aot_compile(step, *args)
    ma = compiled.memory_analysis()
    mem = {k: getattr(ma, k) / MB for k in ("temp_size_in_bytes", "argument_size_in_bytes",
                                             "output_size_in_bytes", "generated_code_size_in_bytes",
                                             "peak_memory_in_bytes")
           if ma is not None and hasattr(ma, k)}
    rss_before = peak_rss_mb()
    stat = time_budgeted(lambda: compiled(*args), budget_s, min_reps=3, max_reps=30)
    _ = jax.block_until_ready(compiled(*args))
    return {"variant": variant, "compile_s": compile_s, "step": stat, "memory_analysis_mb": mem,
            "peak_rss_mb_after_compile": rss_before, "peak_rss_mb": peak_rss_mb()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="resnet18")
    p.add_argument("--budget", type=float, default=10.0)
    p.add_argument("--out", default="bench_out/memory")
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # internal: one variant, JSON to stdout


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.remat import VARIANTS

    if args.variant:  # child process: peak RSS must not be inherited from another variant
        print(json.dumps(measure_variant(args.config, args.variant, args.budget)))
        return {}
    rows = []
    for v in VARIANTS:
        out = subprocess.run([sys.executable, "-m", "benchmarks", "memory", "--config", args.config,
                              "--budget", str(args.budget), "--variant", v],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    for r in rows:
        r["temp_saving_vs_none"] = 1 - r["memory_analysis_mb"]["temp_size_in_bytes"] / \
            base["memory_analysis_mb"]["temp_size_in_bytes"]
        r["time_cost_vs_none"] = r["step"]["median"] / base["step"]["median"]
    res = {"machine": machine_info(), "config": args.config, "rows": rows}
    write_results(args.out, res)
    plot(rows, Path(args.out) / "memory.png")
    print(f"{'remat':13}{'XLA temp MB':>12}{'saving':>8}{'peak RSS MB':>12}{'step ms':>9}{'x time':>8}{'compile s':>10}")
    for r in rows:
        print(f"{r['variant']:13}{r['memory_analysis_mb']['temp_size_in_bytes']:12.1f}"
              f"{r['temp_saving_vs_none'] * 100:7.1f}%{r['peak_rss_mb']:12.0f}"
              f"{r['step']['median'] * 1e3:9.1f}{r['time_cost_vs_none']:8.2f}{r['compile_s']:10.1f}")
    return res


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    a1.bar(names, [r["memory_analysis_mb"]["temp_size_in_bytes"] for r in rows], label="XLA temp buffers")
    a1.plot(names, [r["peak_rss_mb"] for r in rows], "ko-", label="process peak RSS")
    a1.set_ylabel("MiB")
    a1.legend(fontsize=8)
    a2.bar(names, [r["step"]["median"] * 1e3 for r in rows])
    a2.set_ylabel("step time (ms)")
    fig.suptitle("jax.checkpoint: memory vs time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
