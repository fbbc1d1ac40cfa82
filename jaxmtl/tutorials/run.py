"""`jaxmtl tutorials [NAME]`: list the examples, show one (both programs, results, idiom), or write the docs pages."""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

from jaxmtl.tutorials import EXAMPLES, get, unknown_name_message


class Results(NamedTuple):
    torch: dict
    jax: dict


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="the example to show; omit to list them")
    part = p.add_mutually_exclusive_group()
    part.add_argument("--code", action="store_true", help="show only the two programs (runs nothing)")
    part.add_argument("--results", action="store_true", help="show only the results and their agreement")
    p.add_argument("--write-docs", type=Path, metavar="DIR",
                   help="run every example; write one markdown page per topic, an index and the plots to DIR")
    p.add_argument("--out", type=Path, default=Path("tutorials_out"),
                   help="directory for the plots of numerical_stability (default: tutorials_out/)")
    p.add_argument("--seed", type=int, default=0, help="weight seed of the model-based examples")


def list_examples() -> None:
    width = max(len(n) for n in EXAMPLES)
    for ex in EXAMPLES.values():
        print(f"{ex.name:<{width}}  {ex.shows}")


def run_example(name: str, seed: int = 0, out_dir: Path | None = None) -> Results:
    """Both sides of example `name` from the same inputs, with float64 available on both (the examples pick dtypes)."""
    ex = get(name)
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxmtl.parity.precision import set_full_precision
    from jaxmtl.tutorials import load

    set_full_precision("float64")  # also turns TF32 off in torch; imports torch (the torch side needs it anyway)
    kwargs = {}
    if ex.weights_from_torch:
        kwargs = importlib.import_module(f"torch_ref.tutorials.{ex.topic}").jax_kwargs(name, seed=seed)
    if ex.writes_files and out_dir is not None:
        kwargs["out_dir"] = out_dir
    torch_fn = load(name, "torch")
    torch_res = torch_fn(seed=seed) if ex.weights_from_torch else torch_fn()
    return Results(torch_res, load(name, "jax")(**kwargs))


def _refuse(message: str) -> int:
    print(f"jaxmtl tutorials: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from jaxmtl.tutorials import render

    if args.write_docs is not None:
        if args.name or args.code or args.results:
            return _refuse("--write-docs writes every example; it takes no NAME, --code or --results")
        from jaxmtl.tutorials.pages import write_docs

        try:
            args.write_docs.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return _refuse(f"cannot create --write-docs directory {args.write_docs}: {e}")
        for path in write_docs(args.write_docs, lambda name: run_example(name, args.seed)):
            print(path)
        return 0
    if args.name is None:
        list_examples()
        return 0
    if args.name not in EXAMPLES:
        return _refuse(unknown_name_message(args.name))
    ex = get(args.name)
    out_dir = args.out if ex.writes_files and not args.code else None
    if out_dir is not None:  # fail on an unusable --out before any computation
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return _refuse(f"cannot create --out directory {out_dir}: {e}")
    results = None if args.code else run_example(args.name, args.seed, out_dir)
    width = shutil.get_terminal_size().columns
    print(render.terminal_text(render.view(args.name, results), width, code=not args.results, results=not args.code),
          end="")
    if out_dir is not None:
        print(f"plots written to {out_dir}/", file=sys.stderr)
    return 0
