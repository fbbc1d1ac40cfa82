"""Shared timing methodology: warm-up, synchronised timing, medians, AOT compile time, machine record.

Every figure is a dict {"median", "min", "max", "reps", "unit"} (seconds):
the median is the headline, min/max show the spread. JAX calls are timed up
to `jax.block_until_ready` (dispatch is asynchronous); torch on the CPU is
synchronous. Compile time is never inside a step time: JAX functions are
compiled ahead of time with `jax.jit(f).lower(*args).compile()` and that
call is timed on its own.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from jaxmtl import cpu_compiler
from jaxmtl.cpu_info import cpu_flags, cpu_model
from jaxmtl.cpu_malloc import allocator, malloc_tuned


def summarize(times: list[float]) -> dict[str, Any]:
    """{"median", "min", "max", "reps", "unit"} of a list of seconds."""
    return {"median": statistics.median(times), "min": min(times), "max": max(times),
            "reps": len(times), "unit": "s"}


def time_calls(fn: Callable[[], Any], reps: int, warmup: int = 1) -> dict[str, Any]:
    """Times `fn()` `reps` times after `warmup` untimed calls; JAX outputs are waited for."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return summarize(times)


def time_budgeted(fn: Callable[[], Any], budget_s: float, min_reps: int = 3, max_reps: int = 50,
                  warmup: int = 1) -> dict[str, Any]:
    """Like time_calls, but the repetition count fits a time budget (at least `min_reps`)."""
    for _ in range(warmup):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        first = time.perf_counter() - t0
    reps = int(min(max_reps, max(min_reps, budget_s / max(first, 1e-6))))
    return time_calls(fn, reps, warmup=0)


def time_interleaved(fns: dict[str, Callable[[], Any]], budget_s: float, min_reps: int = 5,
                     max_reps: int = 100, warmup: int = 2) -> dict[str, dict[str, Any]]:
    """Times several callables in rounds, one call of each per round, the order rotating.

    On a shared or virtualised CPU the speed of the machine drifts by tens of
    percent over seconds to minutes (on this project's 2-core machine one
    mode's median moved by up to 30% between consecutive processes). Timing
    mode A for 10 s and then mode B for 10 s puts that drift into the ratio
    A/B; interleaving gives every mode the same conditions, so the ratios
    from one run stay meaningful. `budget_s` is the total for all modes.
    """
    for fn in fns.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    t0 = time.perf_counter()
    for fn in fns.values():
        jax.block_until_ready(fn())
    round_s = time.perf_counter() - t0
    reps = int(min(max_reps, max(min_reps, budget_s / max(round_s, 1e-6))))
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            jax.block_until_ready(fns[name]())
            times[name].append(time.perf_counter() - t)
    return {n: summarize(times[n]) for n in names}


def aot_compile(fn: Callable, *args, **jit_kwargs) -> tuple[Any, float]:
    """(compiled, seconds): `jax.jit(fn).lower(*args).compile()`, trace+lower+compile timed together.

    Compiled with jaxmtl's XLA:CPU options (jaxmtl/cpu_compiler.py), as jaxmtl's own steps are.
    """
    t0 = time.perf_counter()
    compiled = cpu_compiler.jit(fn, **jit_kwargs).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def set_torch_threads(n: int | None = None) -> int:
    """torch gets as many intra-op threads as there are cores (XLA:CPU uses all cores by default).

    For a one-thread comparison pass n=1 and start the process with
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".
    """
    import torch

    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def _xla_threads() -> int | None:
    flags = os.environ.get("XLA_FLAGS", "")
    for f in flags.split():
        if f.startswith("intra_op_parallelism_threads=") or f.startswith("--intra_op_parallelism_threads="):
            return int(f.split("=", 1)[1])
    return os.cpu_count()


def machine_info() -> dict[str, Any]:
    """CPU model, core count, thread settings of both frameworks, library versions."""
    import flax
    import optax

    info: dict[str, Any] = {
        "cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
        "jax": jax.__version__, "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__,
        "jax_backend": jax.default_backend(), "jax_devices": [str(d) for d in jax.devices()],
        # XLA:CPU sizes its intra-op Eigen thread pool to the number of cores
        # unless XLA_FLAGS says otherwise; both are recorded.
        "xla_threads": _xla_threads(), "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "load_average": load_average(),
        # The process's allocator, shared by both frameworks (jaxmtl/cpu_malloc.py):
        # mimalloc preloaded, or glibc with (or without) the keep-freed-memory settings.
        "allocator": allocator(),
        "malloc_keeps_freed_memory": malloc_tuned(),
        # Per-compilation XLA options of every timed JAX function (jaxmtl/cpu_compiler.py).
        "xla_compiler_options": cpu_compiler.compiler_options(),
        "MALLOC_env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "MIMALLOC_"))},
    }
    try:
        import jaxlib

        info["jaxlib"] = jaxlib.__version__
    except ImportError:
        pass
    try:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    torch_interop_threads=torch.get_num_interop_threads())
    except ImportError:
        info["torch"] = None
    return info


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: other processes on the machine distort every timing."""
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_results(out_dir: str | Path, results: dict[str, Any]) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, default=_jsonable))
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def fmt_ms(stat: dict[str, Any] | None) -> str:
    return "-" if not stat else f"{stat['median'] * 1e3:9.1f}"
