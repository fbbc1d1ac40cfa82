"""`jaxmtl tutorials [NAME]`: list the examples, or run one in JAX and PyTorch side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from jaxmtl.trees import rel_err, tree_rel_errs
from jaxmtl.tutorials import EXAMPLES, Example, get, load, unknown_name_message


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="the example to run; omit to list them")
    p.add_argument("--out", type=Path, default=Path("tutorials_out"),
                   help="directory for the plots of numerical_stability (default: tutorials_out/)")
    p.add_argument("--seed", type=int, default=0, help="weight seed of the model-based examples")


def list_examples(file=sys.stdout) -> None:
    width = max(len(n) for n in EXAMPLES)
    for ex in EXAMPLES.values():
        print(f"{ex.name:<{width}}  [{ex.seed}] {ex.description}", file=file)


def _fmt(v) -> str:
    if isinstance(v, dict):  # {name: array}: a parameter tree, flattened
        total = np.sqrt(sum(float(np.sum(np.asarray(a, np.float64) ** 2)) for a in v.values()))
        return f"{len(v)} arrays, total norm {total:.6g}"
    if isinstance(v, (np.ndarray, np.generic, bool, int, float)):
        a = np.asarray(v)
        if a.size > 12:  # big arrays: a summary, the full values are one call away
            head = np.array2string(a.ravel()[:4], precision=6, max_line_width=10**6)[:-1]
            return f"{a.dtype} {a.shape} norm {np.linalg.norm(a.astype(np.float64)):.6g}, first {head} ...]"
        text = np.array2string(a, precision=6, max_line_width=10**6).replace("\n", "")
        return text + f"  {a.dtype}" + (f" {a.shape}" if a.ndim else "")
    return str(v)


def _rel(a, b) -> str:
    """The project's one metric, rel_err, for arrays; the worst tensor for {name: array} dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        errs = tree_rel_errs(a, b)
        worst = max(errs, key=errs.get)
        return f"{errs[worst]:.3e} (worst tensor: {worst})"
    try:
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "fiu" and b.dtype.kind in "fiu" and a.shape == b.shape:
            return f"{rel_err(a, b):.3e}"
    except (TypeError, ValueError):
        pass
    return ""


def print_side_by_side(ex: Example, jax_res: dict, torch_res: dict, file=sys.stdout) -> None:
    print(f"== {ex.name}  (seed {ex.seed}): {ex.description}", file=file)
    print(f"   PyTorch: {ex.torch_idiom}", file=file)
    print(f"   JAX:     {ex.jax_idiom}", file=file)
    blocks = []
    for key in list(jax_res) + [k for k in torch_res if k not in jax_res]:
        values = [("JAX", jax_res.get(key)), ("PyTorch", torch_res.get(key))]
        if any(isinstance(v, str) and "\n" in v for _, v in values):
            blocks.append((key, values))
            continue
        print(f"  {key}", file=file)
        for side, v in values:
            print(f"    {side:<8}: {'-' if v is None else _fmt(v)}", file=file)
        if key in jax_res and key in torch_res and (r := _rel(jax_res[key], torch_res[key])):
            print(f"    rel_err : {r}", file=file)
    for key, values in blocks:
        for side, v in values:
            if v is not None:
                print(f"  {key} ({side}):\n" + "\n".join("    " + line for line in str(v).splitlines()), file=file)


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        list_examples()
        return 0
    if args.name not in EXAMPLES:
        print(f"jaxmtl tutorials: {unknown_name_message(args.name)}", file=sys.stderr)
        return 2
    ex = get(args.name)
    if ex.writes_files:  # fail on an unusable --out before any computation
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            print(f"jaxmtl tutorials: cannot create --out directory {args.out}: {e}", file=sys.stderr)
            return 2
    import jax

    # Several examples compare float64 results (and the numerical study needs
    # float64); every example creates its arrays with explicit dtypes.
    jax.config.update("jax_enable_x64", True)
    from jaxmtl.parity.precision import set_full_precision

    set_full_precision("float64")  # also turns TF32 off in torch; imports torch (the torch side needs it anyway)
    torch_fn, jax_fn = load(ex.name, "torch"), load(ex.name, "jax")
    kwargs = {}
    if ex.weights_from_torch:
        import importlib

        kwargs = importlib.import_module(f"torch_ref.tutorials.{ex.topic}").jax_kwargs(ex.name, seed=args.seed)
    if ex.writes_files:
        kwargs["out_dir"] = args.out
    jax_res = jax_fn(**kwargs)
    torch_res = torch_fn(seed=args.seed) if ex.weights_from_torch else torch_fn()
    print_side_by_side(ex, jax_res, torch_res)
    if ex.writes_files:
        print(f"plots written to {args.out}/", file=sys.stderr)
    return 0
