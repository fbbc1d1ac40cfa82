"""Training step per mode (JAX jit / JAX eager / torch eager / torch.compile / torch.func) for one config."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import jax

from benchmarks import steps_impl as S
from benchmarks.timing import (aot_compile, fmt_ms, load_average, machine_info, set_torch_threads, time_calls,
                               time_interleaved, write_results)
from jaxmtl.config import ModelConfig, get_config

MODES = ("jax_jit", "jax_eager", "torch_eager", "torch_compile", "torch_func")


def run_config(config: str | ModelConfig, budget_s: float = 10.0, eager_reps: int | None = None,
               modes: tuple[str, ...] = MODES, torch_threads: int | None = None) -> dict[str, Any]:
    """Times every mode on a config (a preset name or a ModelConfig); returns the results dict (also holds speedups)."""
    cfg = get_config(config) if isinstance(config, str) else config
    name = cfg.name
    threads = set_torch_threads(torch_threads)
    big = cfg.widths[-1] >= 512
    eager_reps = eager_reps or (2 if big else 5)
    res: dict[str, Any] = {"config": name, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
                           "image_size": cfg.image_size, "widths": list(cfg.widths),
                           "torch_threads": threads, "load_average_start": load_average(), "modes": {}}
    step, args = S.jax_setup(cfg)
    timed: dict[str, Any] = {}  # mode -> zero-argument step, timed together below

    if "jax_jit" in modes:
        compiled, compile_s = aot_compile(step, *args)
        timed["jax_jit"] = lambda: compiled(*args)
        res["modes"]["jax_jit"] = {"compile_s": compile_s}
    if any(m.startswith("torch") for m in modes):
        import torch

        if "torch_eager" in modes:
            timed["torch_eager"] = S.torch_eager_step(cfg, S.torch_setup(cfg))
            res["modes"]["torch_eager"] = {}
        if "torch_compile" in modes:
            torch._dynamo.reset()
            fn = S.torch_eager_step(cfg, S.torch_setup(cfg), compiled=True)
            t0 = time.perf_counter()
            fn()  # compiles forward (dynamo + inductor) and, in backward, the AOTAutograd graph
            first = time.perf_counter() - t0
            timed["torch_compile"] = fn
            res["modes"]["torch_compile"] = {"first_call_s": first}
        if "torch_func" in modes:
            timed["torch_func"] = S.torch_func_step(cfg, S.torch_setup(cfg))
            res["modes"]["torch_func"] = {}
    # Interleaved rounds (timing.time_interleaved): the ratios between these
    # modes come from the same stretch of machine time.
    stats = time_interleaved(timed, budget_s * len(timed), min_reps=5, max_reps=100) if timed else {}
    for mode, stat in stats.items():
        res["modes"][mode]["step"] = stat
    if "torch_compile" in res["modes"]:
        m = res["modes"]["torch_compile"]
        m["compile_s"] = max(m["first_call_s"] - m["step"]["median"], 0.0)

    if "jax_eager" in modes:
        # Op-by-op: every primitive is dispatched (and, on first use, compiled)
        # on its own. Seconds per step, 5-200x the others: timed on its own.
        def eager():
            with jax.disable_jit():
                return step(*args)
        t0 = time.perf_counter()
        jax.block_until_ready(eager())
        first = time.perf_counter() - t0
        stat = time_calls(eager, eager_reps, warmup=0)
        res["modes"]["jax_eager"] = {"step": stat, "first_call_s": first}

    res["load_average_end"] = load_average()
    for m in res["modes"].values():
        med = m["step"]["median"]
        m["samples_per_s"] = cfg.batch_size / med
        m["frames_per_s"] = cfg.batch_size * cfg.seq_len / med
    res["speedups"] = speedups(res["modes"])
    res["break_even_steps"] = break_even(res["modes"])
    return res


def speedups(modes: dict[str, Any]) -> dict[str, float | None]:
    """Other mode's median step / JAX jit's (> 1: JAX jit faster)."""
    if "jax_jit" not in modes:
        return {}
    jit = modes["jax_jit"]["step"]["median"]
    return {f"jit_vs_{m}": (modes[m]["step"]["median"] / jit if m in modes else None)
            for m in ("jax_eager", "torch_eager", "torch_compile", "torch_func")}


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
    print(f"{'config':9}" + "".join(f"{m + ' ms':>17}" for m in MODES)
          + f"{'jit compile s':>14}{'vs torch':>9}{'vs compile':>11}{'vs eager':>9}{'break-even':>11}")
    for r in results:
        m, sp, be = r["modes"], r["speedups"], r["break_even_steps"]
        f = lambda v: "-" if v is None else f"{v:.2f}"
        print(f"{r['config']:9}" + "".join(f"{fmt_ms(m.get(k, {}).get('step')):>17}" for k in MODES)
              + f"{m.get('jax_jit', {}).get('compile_s', 0):14.1f}{f(sp.get('jit_vs_torch_eager')):>9}"
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
    p.add_argument("--budget", type=float, default=10.0, help="timing seconds per mode; the modes are timed in interleaved rounds")
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
    res = run_config(args.config, args.budget, args.eager_reps, modes, getattr(args, "torch_threads", None))
    res["machine"] = machine_info()
    write_results(args.out, res)
    plot([res], Path(args.out) / "step_times.png")
    print_rows([res])
    return res
