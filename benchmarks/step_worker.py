"""One training-step mode in a process of its own, timed on request (benchmarks/mode_processes.py).

  python -m benchmarks.step_worker --config tiny --mode jax_jit [--batch-size B] [--torch-threads N]

Started by `python -m benchmarks step`; it inherits the parent's allocator (mimalloc via
LD_PRELOAD) and applies the same allocator settings and thread count.
"""

from __future__ import annotations

import argparse

from jaxmtl.cpu_malloc import keep_freed_memory


def main(argv: list[str] | None = None) -> None:
    keep_freed_memory()  # first, before either framework starts threads (as benchmarks/__main__.py)
    p = argparse.ArgumentParser(prog="python -m benchmarks.step_worker", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--mode", required=True)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--torch-threads", type=int, default=None)
    args = p.parse_args(argv)

    from benchmarks import step
    from benchmarks.mode_processes import serve
    from benchmarks.timing import set_torch_threads

    if args.mode not in step.MODES:
        raise SystemExit(f"unknown mode {args.mode!r}; known: {step.MODES}")
    cfg = step.config_for(args.config, args.batch_size)

    def setup():
        if args.mode.startswith("torch"):  # a JAX worker never imports torch
            set_torch_threads(args.torch_threads)
        return step.build_mode(cfg, args.mode)

    serve(setup)


if __name__ == "__main__":
    main()
