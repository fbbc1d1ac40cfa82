"""`jaxmtl train | parity | tutorials | convert | conv-plans`: a thin dispatcher.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int` (the exit status); a module is imported only when its
subcommand is used, so `jaxmtl train --framework jax` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxmtl.cpu_malloc import keep_freed_memory, restart_with_mimalloc

SUBCOMMANDS = {
    "train": ("jaxmtl.main", "train the multi-task model (JAX or the torch reference)"),
    "parity": ("jaxmtl.parity.run", "compare the JAX port with the torch reference; write parity.json"),
    "tutorials": ("jaxmtl.tutorials.run", "the autodiff study: PyTorch and JAX programs side by side, run and compared"),
    "convert": ("jaxmtl.parity.convert_cli", "torch checkpoint <-> JAX checkpoint (safetensors, npz, orbax)"),
    "conv-plans": ("jaxmtl.nn.conv_plan", "measure the CPU conv plans of a config now and cache them"),
}


def main(argv: list[str] | None = None) -> int:
    # Before any subcommand imports jax and starts XLA's threads (see cpu_malloc.py).
    keep_freed_memory()
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="jaxmtl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:
            modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(p)
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)


def entry() -> int:
    """The `jaxmtl` command: `main` on mimalloc (re-executes once; see cpu_malloc.py)."""
    restart_with_mimalloc()
    return main()


if __name__ == "__main__":
    sys.exit(entry())
