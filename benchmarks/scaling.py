"""scaling: the data-parallel training step against device and process count (JAX, virtual CPU devices).

  python -m benchmarks scaling [--config tiny] [--batch-size 16] [--layouts 1x1,1x2,1x4,1x8,2x1,2x2]

A layout PxD is P processes of D devices each (JAX_NUM_CPU_DEVICES=D), the
processes joined by jax.distributed on 127.0.0.1 (gloo). Every layout runs in
processes of its own, so no layout inherits another's threads or caches. Each
process times `jaxmtl.train`'s compiled step (AOT-compiled, compile time kept
apart; warm-up; `block_until_ready`; median) on a global batch of the same size,
so samples/s compare directly. 1x1 is the plain single-device step.

The communication share is measured, not estimated: a few steps run under
`jax.profiler`, and the part of a step's wall time during which at least one of
XLA:CPU's collective operations (all-reduce, all-gather, ...: the thunk events
of process 0's trace, waiting for the other devices included) is running, over
the wall time of those profiled steps.

.. warning:: virtual CPU devices and processes on one machine share its cores.
   The figures show the overhead of distributing the step (collectives,
   smaller per-device work, more threads than cores), not the speed-up real
   devices would give.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.timing import machine_info, write_results
from jaxmtl.distributed import free_port

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


class Layout(NamedTuple):
    processes: int
    devices_per_process: int

    @property
    def devices(self) -> int:
        return self.processes * self.devices_per_process

    @property
    def name(self) -> str:
        return f"{self.processes}x{self.devices_per_process}"


def parse_layouts(text: str, batch_size: int) -> list[Layout]:
    """'1x1,2x2' -> layouts; SystemExit naming the bad one before any work."""
    layouts = []
    for item in filter(None, text.split(",")):
        p, sep, d = item.partition("x")
        if not sep or not p.isdigit() or not d.isdigit() or int(p) < 1 or int(d) < 1:
            raise SystemExit(f"a layout is PROCESSESxDEVICES (e.g. 2x4), got {item!r}")
        layout = Layout(int(p), int(d))
        if batch_size % layout.devices:
            raise SystemExit(f"--batch-size {batch_size} does not divide over layout {item} ({layout.devices} devices)")
        layouts.append(layout)
    return layouts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny")
    p.add_argument("--batch-size", type=int, default=16, help="global batch (sequences), the same for every layout")
    p.add_argument("--layouts", default="1x1,1x2,1x4,1x8,2x1,2x2")
    p.add_argument("--budget", type=float, default=5.0, help="timing seconds per layout")
    p.add_argument("--out", default="bench_out/scaling")
    # one process of a layout (started by the parent run, not by hand)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # process id
    p.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)


def _collective_seconds(trace_dir: Path) -> float:
    """Seconds of the trace during which at least one collective thunk of this process ran
    (the union of their intervals: concurrent collectives on several devices count once)."""
    traces = sorted(trace_dir.rglob("*.trace.json.gz"))
    if not traces:
        return float("nan")
    with gzip.open(traces[-1]) as f:
        doc = json.load(f)
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    spans = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in events
                   if e.get("ph") == "X" and _is_collective(e.get("name", "")))
    total, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total * 1e-6


def _is_collective(name: str) -> bool:
    """'all-reduce', 'all-reduce.193', 'all-gather-start.2' ...: an HLO collective's thunk."""
    op = name.split(".")[0]
    for suffix in ("-start", "-done"):
        op = op.removesuffix(suffix)
    return op in COLLECTIVES


def _time_together(fn, budget_s: float) -> dict[str, Any]:
    """timing.time_calls with one repetition count for every process (process 0's choice):
    each call holds collectives, so processes making different numbers of calls would hang."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from benchmarks.timing import time_calls

    jax.block_until_ready(fn())  # warm-up
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    reps = int(min(50, max(5, budget_s / max(time.perf_counter() - t0, 1e-6))))
    reps = int(multihost_utils.broadcast_one_to_all(np.int32(reps)))
    return time_calls(fn, reps, warmup=0)


def worker(args: argparse.Namespace) -> None:
    """One process of a layout: compile, time and profile the step; process 0 writes the result."""
    import jax

    from jaxmtl import distributed
    from jaxmtl.config import get_config
    from jaxmtl.data import DataConfig, MotionDataset, ProcessShare
    from jaxmtl.data_parallel import data_parallel, put_batch
    from jaxmtl.optim import OptimConfig
    from jaxmtl.train import JaxTrainer, compiled_steps

    if args.processes > 1:
        distributed.initialize(distributed.ProcessSetup(args.coordinator, args.processes, args.worker))
    cfg = get_config(args.config)
    single = args.processes == 1 and len(jax.devices()) == 1
    dp = None if single else data_parallel()
    ocfg = OptimConfig("adam", lr=1e-3, clip_norm=1.0)
    trainer = JaxTrainer(cfg, ocfg, dp=dp, init="torch")  # weights need no JAX initialisers
    data = ProcessShare(MotionDataset(cfg, DataConfig(seed=0, train_size=args.batch_size), batch_size=args.batch_size),
                        jax.process_index(), jax.process_count())
    batch = data.train_batch(0)
    batch = batch if dp is None else put_batch(batch, dp)
    step = compiled_steps(trainer.graphdef, cfg, ocfg, dp)[0]
    t0 = time.perf_counter()
    compiled = step.lower(*trainer.state, batch).compile()
    compile_s = time.perf_counter() - t0
    stats = _time_together(lambda: compiled(*trainer.state, batch), args.budget)
    profiled = 3
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        t0 = time.perf_counter()
        for _ in range(profiled):
            jax.block_until_ready(compiled(*trainer.state, batch))
        profiled_s = time.perf_counter() - t0
        jax.profiler.stop_trace()
        collective_s = _collective_seconds(Path(trace_dir))
    result = {"processes": jax.process_count(), "devices": len(jax.devices()) if dp is not None else 1,
              "compile_s": compile_s, "step": stats, "samples_per_s": args.batch_size / stats["median"],
              "profiled_step_s": profiled_s / profiled, "collective_s_per_step": collective_s / profiled,
              "communication_share": collective_s / profiled_s}
    if jax.process_index() == 0:
        Path(args.result).write_text(json.dumps(result))


def run_layout(layout: Layout, args: argparse.Namespace) -> dict[str, Any]:
    """The layout's processes, started together; process 0's measurements."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        coordinator = f"127.0.0.1:{free_port()}"
        env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(layout.devices_per_process))
        procs = [subprocess.Popen([sys.executable, "-m", "benchmarks", "scaling", "--worker", str(i),
                                   "--processes", str(layout.processes), "--coordinator", coordinator,
                                   "--result", str(result), "--config", args.config,
                                   "--batch-size", str(args.batch_size), "--budget", str(args.budget)], env=env)
                 for i in range(layout.processes)]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"layout {layout.name}: worker exit codes {codes}")
        return {"layout": layout.name, **json.loads(result.read_text())}


def print_rows(rows: list[dict[str, Any]]) -> None:
    print("layout  devices  step ms (min-max, reps)   samples/s  vs 1x1  communication  compile s")
    base = rows[0]["step"]["median"] if rows and rows[0]["layout"] == "1x1" else None
    for r in rows:
        s = r["step"]
        rel = f"{base / s['median']:.2f}" if base else "-"
        print(f"{r['layout']:7} {r['devices']:7d}  {s['median'] * 1e3:7.1f} ({s['min'] * 1e3:.1f}-{s['max'] * 1e3:.1f}, "
              f"n={s['reps']})  {r['samples_per_s']:9.1f}  {rel:>6}  {r['communication_share']:12.0%}  "
              f"{r['compile_s']:8.1f}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.worker is not None:
        worker(args)
        return {}
    from jaxmtl.config import get_config

    get_config(args.config)  # an unknown name fails before any process starts
    layouts = parse_layouts(args.layouts, args.batch_size)
    rows = []
    for layout in layouts:
        print(f"--- scaling: layout {layout.name} ({layout.devices} devices)", flush=True)
        rows.append(run_layout(layout, args))
    res = {"config": args.config, "batch_size": args.batch_size, "layouts": rows, "machine": machine_info(),
           "note": "virtual CPU devices share the machine's cores: overhead, not speed-up"}
    write_results(args.out, res)
    print_rows(rows)
    return res
