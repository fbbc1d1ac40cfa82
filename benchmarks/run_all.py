"""The default set (`make bench`): conv shapes, training step on every config, batch crossover, BPTT, memory, efficiency."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks import bptt, conv_shapes, crossover, efficiency, memory, step
from benchmarks.timing import machine_info, write_results

CONFIGS = ("tiny", "small", "resnet18")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="bench_out")
    p.add_argument("--budget", type=float, default=5.0, help="timing seconds per training-step mode")
    p.add_argument("--skip", default="", help="comma list of parts to skip: convshapes,step,crossover,bptt,memory,efficiency")


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    skip = set(filter(None, args.skip.split(",")))
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"machine": machine_info()}
    if "convshapes" not in skip:
        # tiny's convs take ~0.1 ms each (overhead-bound); `python -m benchmarks convshapes` includes it.
        conv_shapes.run(argparse.Namespace(configs="small,resnet18", budget=0.1, out=str(out / "conv_shapes")))
    if "step" not in skip:
        results = []
        for name in CONFIGS:
            print(f"--- training step: {name}", flush=True)
            results.append(step.run(argparse.Namespace(config=name, out=str(out / "step" / name),
                                                       budget=args.budget, eager_reps=None,
                                                       modes=",".join(step.MODES))))
        step.plot(results, out / "step" / "step_times.png")
        print("=== training step, all configs (median ms; ratios: other mode / JAX jit)")
        step.print_rows(results)
        summary["step"] = {r["config"]: {"speedups": r["speedups"], "break_even_steps": r["break_even_steps"]}
                           for r in results}
    if "crossover" not in skip:
        print("--- crossover (small's shapes, batch sweep)", flush=True)
        crossover.run(argparse.Namespace(config="small", batches="1,2,4,8,16", budget=2.0,
                                         out=str(out / "crossover")))
    if "bptt" not in skip:
        print("--- BPTT", flush=True)
        bptt.run(argparse.Namespace(config="resnet18", T="4,8,16,32,64", unroll="4", budget=0.3,
                                    out=str(out / "bptt")))
    if "memory" not in skip:
        print("--- memory", flush=True)
        memory.run(argparse.Namespace(config="resnet18", budget=2.0, out=str(out / "memory"), variant=None))
    if "efficiency" not in skip:
        print("--- efficiency", flush=True)
        efficiency.run(argparse.Namespace(configs=",".join(CONFIGS), step_dir=str(out / "step"),
                                          out=str(out / "efficiency")))
    summary["wall_s"] = time.perf_counter() - t0
    write_results(out, summary)
    print(f"all benchmarks done in {summary['wall_s'] / 60:.1f} min; results under {out}/")
    return summary
