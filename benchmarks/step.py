"""Training step per mode (JAX jit / JAX jit on the fallback conv rule / JAX eager / torch eager /
torch.compile / torch.func) for one config.

jax_jit compiles with the conv plan measured on this machine (jaxmtl/nn/conv_plan.py; measured
during its setup if the cache has no entry yet, which is part of its compile_s then);
jax_jit_rule is the same step on the hand-written fallback rule (JAXMTL_CONV_PLAN=rule).
The *_bf16 modes compute in bfloat16 with float32 parameters and optimizer state: JAX with every
layer in bf16 (steps_impl.jax_train_step), torch eager under torch.autocast("cpu", bfloat16)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import jax

from benchmarks import steps_impl as S
from benchmarks.mode_processes import time_in_processes
from benchmarks.timing import (aot_compile, fmt_ms, load_average, machine_info, set_torch_threads, summarize,
                               time_calls, time_interleaved, write_results)
from jaxmtl.config import ModelConfig, get_config

MODES = ("jax_jit", "jax_jit_rule", "jax_eager", "torch_eager", "torch_compile", "torch_func",
         "jax_jit_bf16", "torch_eager_bf16")


def build_mode(cfg: ModelConfig, mode: str, jax_setup: tuple | None = None) -> tuple[Callable[[], Any], dict]:
    """(zero-argument training step of `mode`, its setup figures: compile_s / first_call_s).

    `jax_setup`: steps_impl.jax_setup(cfg), to share one initialised model between JAX modes.
    """
    if mode.startswith("jax"):
        from jaxmtl.nn import conv_plan

        if mode == "jax_jit_bf16":
            step, args = S.jax_setup(cfg, compute_dtype=jax.numpy.bfloat16)
        else:
            step, args = jax_setup or S.jax_setup(cfg)
        if mode in ("jax_jit", "jax_jit_rule", "jax_jit_bf16"):
            conv_plan.forget_plans()
            with mock.patch.dict(os.environ, {"JAXMTL_CONV_PLAN": "rule"} if mode == "jax_jit_rule" else {}):
                compiled, compile_s = aot_compile(step, *args)
            return (lambda: compiled(*args)), {"compile_s": compile_s, "conv_plans": conv_plan.used_plans()}

        # Op-by-op: every primitive is dispatched (and, on first use, compiled) on its own.
        def eager():
            with jax.disable_jit():
                return step(*args)
        t0 = time.perf_counter()
        jax.block_until_ready(eager())
        return eager, {"first_call_s": time.perf_counter() - t0}
    import torch

    if mode == "torch_func":
        return S.torch_func_step(cfg, S.torch_setup(cfg)), {}
    if mode == "torch_eager":
        return S.torch_eager_step(cfg, S.torch_setup(cfg)), {}
    if mode == "torch_eager_bf16":
        return S.torch_eager_step(cfg, S.torch_setup(cfg), autocast_dtype=torch.bfloat16), {}
    torch._dynamo.reset()
    fn = S.torch_eager_step(cfg, S.torch_setup(cfg), compiled=True)
    t0 = time.perf_counter()
    fn()  # compiles forward (dynamo + inductor) and, in backward, the AOTAutograd graph
    return fn, {"first_call_s": time.perf_counter() - t0}


def config_for(config: str, batch_size: int | None = None) -> ModelConfig:
    """The preset `config`, with `batch_size` (and a name saying so) if given."""
    cfg = get_config(config)
    if batch_size is None or batch_size == cfg.batch_size:
        return cfg
    return dataclasses.replace(cfg, name=f"{cfg.name}_b{batch_size}", batch_size=batch_size)


def run_config(config: str, budget_s: float = 10.0, eager_reps: int | None = None,
               modes: tuple[str, ...] = MODES, torch_threads: int | None = None,
               timing: str = "processes", batch_size: int | None = None) -> dict[str, Any]:
    """Times every mode on a preset config (at `batch_size`); returns the results dict (also holds speedups).

    timing="processes": each mode in a worker process of its own, the workers taking turns
    (benchmarks/mode_processes.py); "in-process": all modes in this process, interleaved
    (timing.time_interleaved). JAX eager (seconds per step) is timed after the others, alone.
    """
    if timing not in ("processes", "in-process"):
        raise ValueError(f"timing must be 'processes' or 'in-process', got {timing!r}")
    cfg = config_for(config, batch_size)
    name = cfg.name
    threads = set_torch_threads(torch_threads)
    big = cfg.widths[-1] >= 512
    eager_reps = eager_reps or (2 if big else 5)
    res: dict[str, Any] = {"config": name, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
                           "image_size": cfg.image_size, "widths": list(cfg.widths),
                           "torch_threads": threads, "timing": timing, "load_average_start": load_average(),
                           "modes": {}}
    fast = [m for m in modes if m != "jax_eager"]
    if timing == "processes":
        worker = [sys.executable, "-m", "benchmarks.step_worker", "--config", config, "--batch-size",
                  str(cfg.batch_size), "--torch-threads", str(threads)]
        runs = time_in_processes({m: [*worker, "--mode", m] for m in fast}, budget_s)
        for mode, run in runs.items():
            res["modes"][mode] = {**run["ready"], "step": summarize(run["times"]),
                                  "rounds": run["rounds"], "calls_per_turn": run["calls_per_turn"]}
    else:
        jax_setup = S.jax_setup(cfg) if any(m.startswith("jax") for m in modes) else None
        timed = {}
        for mode in fast:
            timed[mode], res["modes"][mode] = build_mode(cfg, mode, jax_setup)
        # Interleaved rounds: the ratios between these modes come from the same stretch of machine time.
        for mode, stat in (time_interleaved(timed, budget_s * len(timed), min_reps=5, max_reps=100)
                           if timed else {}).items():
            res["modes"][mode]["step"] = stat
    if "torch_compile" in res["modes"]:
        m = res["modes"]["torch_compile"]
        m["compile_s"] = max(m["first_call_s"] - m["step"]["median"], 0.0)
    if "jax_eager" in modes:  # 5-200x the others' step: timed on its own, in this process
        eager, res["modes"]["jax_eager"] = build_mode(cfg, "jax_eager")
        res["modes"]["jax_eager"]["step"] = time_calls(eager, eager_reps, warmup=0)

    res["load_average_end"] = load_average()
    for m in res["modes"].values():
        med = m["step"]["median"]
        m["samples_per_s"] = cfg.batch_size / med
        m["frames_per_s"] = cfg.batch_size * cfg.seq_len / med
    res["speedups"] = speedups(res["modes"])
    res["break_even_steps"] = break_even(res["modes"])
    return res


def speedups(modes: dict[str, Any]) -> dict[str, float | None]:
    """Other mode's median step / JAX jit's (> 1: JAX jit faster); bf16 JAX jit against bf16 torch eager."""
    def ratio(other: str, jit: str) -> float | None:
        if other not in modes or jit not in modes:
            return None
        return modes[other]["step"]["median"] / modes[jit]["step"]["median"]

    if "jax_jit" not in modes and "jax_jit_bf16" not in modes:
        return {}
    return {**{f"jit_vs_{m}": ratio(m, "jax_jit")
               for m in ("jax_jit_rule", "jax_eager", "torch_eager", "torch_compile", "torch_func")},
            "jit_bf16_vs_torch_eager_bf16": ratio("torch_eager_bf16", "jax_jit_bf16")}


def break_even(modes: dict[str, Any]) -> dict[str, float | None]:
    """Steps n after which compile + n * jit < n * other: compile / (other - jit)."""
    if "jax_jit" not in modes:
        return {}
    jit, c = modes["jax_jit"]["step"]["median"], modes["jax_jit"]["compile_s"]
    out = {}
    for m in ("jax_eager", "torch_eager"):
        if m in modes:
            gap = modes[m]["step"]["median"] - jit
            out[f"vs_{m}"] = c / gap if gap > 0 else None  # None: jit never catches up
    return out


def print_rows(results: list[dict[str, Any]]) -> None:
    print(f"{'config':9}" + "".join(f"{m + ' ms':>19}" for m in MODES)
          + f"{'jit compile s':>14}{'vs rule':>8}{'vs torch':>9}{'vs compile':>11}{'vs eager':>9}{'break-even':>11}")
    for r in results:
        m, sp, be = r["modes"], r["speedups"], r["break_even_steps"]
        f = lambda v: "-" if v is None else f"{v:.2f}"
        print(f"{r['config']:9}" + "".join(f"{fmt_ms(m.get(k, {}).get('step')):>19}" for k in MODES)
              + f"{m.get('jax_jit', {}).get('compile_s', 0):14.1f}{f(sp.get('jit_vs_jax_jit_rule')):>8}"
              + f"{f(sp.get('jit_vs_torch_eager')):>9}"
              + f"{f(sp.get('jit_vs_torch_compile')):>11}{f(sp.get('jit_vs_jax_eager')):>9}"
              + f"{f(be.get('vs_jax_eager')):>11}")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(MODES)
    for i, mode in enumerate(MODES):
        xs = [j + i * width for j, r in enumerate(results) if mode in r["modes"]]
        ys = [r["modes"][mode]["step"]["median"] * 1e3 for r in results if mode in r["modes"]]
        ax.bar(xs, ys, width, label=mode)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(results))], [r["config"] for r in results])
    ax.set_yscale("log")
    ax.set_ylabel("median training step (ms, log)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", help="tiny | small | resnet18")
    p.add_argument("--out", default="bench_out/step")
    p.add_argument("--budget", type=float, default=10.0, help="timing seconds per mode; the modes take turns in rounds")
    p.add_argument("--timing", choices=("processes", "in-process"), default="processes",
                   help="each mode in its own process (default), or all in this one, interleaved")
    p.add_argument("--eager-reps", type=int, default=None, help="JAX eager repetitions")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--torch-threads", type=int, default=None,
                   help="default: all cores, like XLA; with 1, also set XLA_FLAGS (see timing.set_torch_threads)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    get_config(args.config)  # unknown names fail before any compilation
    modes = tuple(args.modes.split(","))
    bad = set(modes) - set(MODES)
    if bad:
        raise SystemExit(f"unknown modes {sorted(bad)}; known: {MODES}")
    res = run_config(args.config, args.budget, args.eager_reps, modes, getattr(args, "torch_threads", None),
                     getattr(args, "timing", "processes"))
    res["machine"] = machine_info()
    write_results(args.out, res)
    plot([res], Path(args.out) / "step_times.png")
    print_rows([res])
    return res
