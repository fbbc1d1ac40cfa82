"""Dispatcher: python -m benchmarks <subcommand> [options]."""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxmtl.cpu_malloc import keep_freed_memory, restart_with_mimalloc

SUBCOMMANDS = {
    "step": "benchmarks.step",
    "crossover": "benchmarks.crossover",
    "bptt": "benchmarks.bptt",
    "memory": "benchmarks.memory",
    "efficiency": "benchmarks.efficiency",
    "convshapes": "benchmarks.conv_shapes",
    "scaling": "benchmarks.scaling",
    "all": "benchmarks.run_all",
    "report": "benchmarks.report",
}


def main(argv: list[str] | None = None) -> int:
    # First thing, before jax or torch start threads: both frameworks then run with
    # the same allocator settings (jaxmtl/cpu_malloc.py; JAXMTL_DEFAULT_MALLOC=1 opts out).
    keep_freed_memory()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, modname in SUBCOMMANDS.items():
        mod = importlib.import_module(modname)
        mod.add_arguments(sub.add_parser(name, help=(mod.__doc__ or "").splitlines()[0]))
    args = parser.parse_args(argv)
    importlib.import_module(SUBCOMMANDS[args.command]).run(args)
    return 0


if __name__ == "__main__":
    # Both frameworks then run on mimalloc (jaxmtl/cpu_malloc.py; JAXMTL_ALLOCATOR=glibc opts out).
    restart_with_mimalloc()
    sys.exit(main())
