"""`jaxmtl convert`: a torch checkpoint <-> a JAX checkpoint, through the conversion table.

    jaxmtl convert --config tiny IN.pt OUT.safetensors     # torch -> JAX (also .npz)
    jaxmtl convert --config tiny IN.safetensors OUT.pt     # JAX -> torch state_dict
    jaxmtl convert --format orbax IN.pt OUT_DIR            # JAX side as an orbax directory
    jaxmtl convert --pair pkg.module:function IN.pt OUT.safetensors   # any port's checkpoints

The direction comes from the suffixes. The torch side is read with
`torch.load(weights_only=True)`: a bare state_dict, or a dict holding one under
"model" (torch_ref/checkpoint.py's training checkpoints), "model_state_dict" or
"state_dict"; it is written as a bare state_dict that
`build_model(cfg).load_state_dict(..., strict=True)` accepts. The JAX side is a
flat file (`jaxmtl.interchange`) with names `params/<jax name>` and
`batch_stats/<jax name>`, or an orbax directory holding the nested
{"params": ..., "batch_stats": ...} dict.

The table is derived from the two models (`harness.derive_pair_table`, one
eval-mode forward of each on example inputs) unless `--table hand` picks
`torch_ref.convert.conversion_table(cfg)`; `--pair` takes a port's
`function(dtype) -> harness.PairSpec` and its conversion
(`harness.pair_from_spec`). Converting runs through the one conversion loop,
`jaxmtl.parity.tables.TableConversion`, so every key is used exactly once and
a missing, unexpected or mis-shaped key is one error naming all of them. Every
check runs and the whole state is converted before anything is written, and
files are written to a temporary name and renamed: a bad input exits 2 with
`jaxmtl convert: error: ...` and leaves no output behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Mapping

import numpy as np

from jaxmtl.config import CONFIGS, get_config

TORCH_SUFFIXES = (".pt", ".pth")
FLAT_SUFFIXES = (".safetensors", ".npz")   # jaxmtl.interchange.FORMATS
COLLECTIONS = ("params", "batch_stats")
STATE_DICT_KEYS = ("model", "model_state_dict", "state_dict")


class ConvertError(ValueError):
    """A conversion that cannot be done: names the file and what is wrong with it."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="IN.pt / IN.pth, or IN.safetensors / IN.npz / orbax directory")
    p.add_argument("output", type=Path, help="OUT.safetensors / OUT.npz / orbax directory, or OUT.pt")
    p.add_argument("--config", default=None, choices=sorted(CONFIGS),
                   help="model configuration of the checkpoint (default: tiny)")
    p.add_argument("--table", default="derived", choices=("derived", "hand"),
                   help="derived from the two models (default), or torch_ref.convert.conversion_table")
    p.add_argument("--pair", metavar="MODULE:FUNCTION", default=None,
                   help="a port: FUNCTION(dtype) returns a jaxmtl.parity.harness.PairSpec")
    p.add_argument("--format", default="file", choices=("file", "orbax"),
                   help="the JAX side: a .safetensors/.npz file (default) or an orbax directory")


# ---- direction ----------------------------------------------------------------------------

def direction(inp: Path, out: Path, fmt: str) -> tuple[str, str]:
    """("to_jax" | "to_torch", JAX format ".safetensors" | ".npz" | "orbax") from the suffixes."""
    usage = (f"cannot convert {inp} -> {out}: give a torch checkpoint ({', '.join(TORCH_SUFFIXES)}) and a "
             f"JAX checkpoint ({', '.join(FLAT_SUFFIXES)}, or a directory with --format orbax), "
             "in either order")
    if inp.resolve() == out.resolve():
        raise ConvertError(f"input and output are the same path: {inp}")
    if inp.suffix in TORCH_SUFFIXES:
        if fmt == "orbax":
            if out.suffix in TORCH_SUFFIXES + FLAT_SUFFIXES:
                raise ConvertError(f"--format orbax writes a directory; {out} has the file suffix {out.suffix!r}")
            return "to_jax", "orbax"
        if out.suffix in FLAT_SUFFIXES:
            return "to_jax", out.suffix
    elif out.suffix in TORCH_SUFFIXES:
        if inp.suffix in FLAT_SUFFIXES:
            if fmt == "orbax":
                raise ConvertError(f"--format orbax reads a directory; {inp} has the file suffix {inp.suffix!r}")
            return "to_torch", inp.suffix
        if fmt == "orbax" or inp.is_dir():
            return "to_torch", "orbax"
    raise ConvertError(usage)


# ---- the table ----------------------------------------------------------------------------

def multitask_conversion(cfg, table: str):
    """The multi-task model's TableConversion: derived from the two models, or the hand-written one."""
    from jaxmtl.parity.tables import TableConversion

    if table == "hand":
        from torch_ref.convert import conversion_table

        return TableConversion(tuple(conversion_table(cfg)))
    from jaxmtl.parity.multitask_port import multitask_table

    return TableConversion(tuple(multitask_table(cfg)))


def pair_conversion(spec_name: str):
    """The conversion of the port that `module:function` names (function("float32") -> PairSpec)."""
    from jaxmtl.parity import harness

    try:
        spec = harness.load_pair_spec(spec_name, "float32")
    except ValueError as e:
        raise ConvertError(f"--pair: {e}") from e
    try:
        return harness.pair_from_spec(spec, "float32").conversion
    except ValueError as e:  # no batches, inputs of the wrong dtype, a table that does not fit ...
        raise ConvertError(f"--pair {spec_name!r}: {e}") from e


# ---- the torch side -------------------------------------------------------------------------

def _is_state_dict(obj, torch) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def read_torch(path: Path) -> dict[str, np.ndarray]:
    """The numpy state_dict in a torch checkpoint (bare, or under "model"/"model_state_dict"/"state_dict")."""
    import torch

    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a zip/pickle, truncated, or a pickle weights_only refuses
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ConvertError(f"{path}: not a torch checkpoint ({type(e).__name__}: {first})") from e
    sd = obj if _is_state_dict(obj, torch) else None
    if sd is None and isinstance(obj, Mapping):
        sd = next((obj[k] for k in STATE_DICT_KEYS if k in obj and _is_state_dict(obj[k], torch)), None)
    if sd is None:
        if isinstance(obj, Mapping):
            odd = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
            what = f"a dict whose entries {sorted(map(str, odd))[:8]} are not tensors" if obj else "an empty dict"
        else:
            what = f"a {type(obj).__name__}"
        raise ConvertError(f"{path}: not a state dict: it holds {what}, and no state dict under "
                           f"{' / '.join(repr(k) for k in STATE_DICT_KEYS)}")
    out = {}
    for k, v in sd.items():
        try:
            out[k] = v.detach().cpu().numpy()
        except (TypeError, RuntimeError) as e:  # bfloat16, sparse, quantized ...
            raise ConvertError(f"{path}: tensor {k!r} ({v.dtype}) has no numpy equivalent: {e}") from e
    return out


def write_torch(path: Path, state: Mapping[str, np.ndarray]) -> None:
    """torch.save of a bare state_dict, atomically (temporary file, then os.replace)."""
    import torch

    tensors = {k: torch.from_numpy(np.array(v, order="C")) for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(tensors, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---- the JAX side ---------------------------------------------------------------------------

def _nest(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, v in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def write_jax(path: Path, fmt: str, state: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    if fmt == "orbax":
        import orbax.checkpoint as ocp

        # Orbax writes into a temporary directory and renames it when complete.
        ckptr = ocp.StandardCheckpointer()
        # An empty collection (a port without statistics) is left out: orbax stores no empty subtrees.
        ckptr.save(path.absolute(), {c: _nest(v) for c, v in state.items() if v}, force=True)
        ckptr.wait_until_finished()
        return
    from jaxmtl.interchange import save_flat

    save_flat(path, {f"{c}/{k}": v for c in COLLECTIONS for k, v in state.get(c, {}).items()})


def read_jax(path: Path, fmt: str) -> dict[str, dict[str, np.ndarray]]:
    """{"params": {jax name: array}, "batch_stats": {...}} from a flat file or an orbax directory."""
    from jaxmtl.trees import flatten_state

    if fmt == "orbax":
        import orbax.checkpoint as ocp

        if not path.is_dir():
            raise ConvertError(f"{path}: no such orbax checkpoint directory")
        try:
            tree = ocp.StandardCheckpointer().restore(path.absolute())
        except Exception as e:  # orbax/tensorstore raise many types for a damaged directory
            raise ConvertError(f"{path}: cannot read as an orbax checkpoint ({type(e).__name__}: {e})") from e
        if not isinstance(tree, Mapping):
            raise ConvertError(f"{path}: holds a {type(tree).__name__}, not a {{'params', 'batch_stats'}} dict")
        flat = {f"{c}/{k}": v for c, sub in tree.items()
                for k, v in (flatten_state(sub) if isinstance(sub, Mapping) else {"": sub}).items()}
    else:
        from jaxmtl.interchange import load_flat

        flat = load_flat(path)
    state: dict[str, dict[str, np.ndarray]] = {c: {} for c in COLLECTIONS}
    odd = []
    for name, v in flat.items():
        c, _, rest = name.partition("/")
        if c in state and rest:
            state[c][rest] = np.asarray(v)
        else:
            odd.append(name)
    if odd:
        raise ConvertError(f"{path}: names outside params/ and batch_stats/: {sorted(odd)[:8]}"
                           f"{' ...' if len(odd) > 8 else ''} (not a JAX checkpoint of jaxmtl convert)")
    return state


# ---- the command ----------------------------------------------------------------------------

def layout_summary(conversion) -> str:
    """'130 tensors: conv 20, matrix 5, vector 85, count 20' (layouts in LAYOUTS order)."""
    from jaxmtl.parity.tables import LAYOUTS

    table = getattr(conversion, "table", None)
    if table is None:  # a Conversion object of a port's own
        return "tensors converted by the pair's own conversion"
    kinds = Counter(e.kind for e in table)
    order = [k for k in LAYOUTS if k in kinds] + sorted(set(kinds) - set(LAYOUTS))
    return f"{len(table)} tensors: " + ", ".join(f"{k} {kinds[k]}" for k in order)


def convert(args: argparse.Namespace) -> str:
    """Does the conversion; returns the summary line. Raises on bad input before writing anything."""
    from jaxmtl.interchange import InterchangeError
    from jaxmtl.parity.tables import ConversionError

    how, fmt = direction(args.input, args.output, args.format)
    if args.pair is not None and (args.config is not None or args.table != "derived"):
        raise ConvertError("--pair brings its own model and table: drop --config / --table")
    try:
        # The input first: a bad file is reported before the (slower) table derivation.
        given = read_torch(args.input) if how == "to_jax" else read_jax(args.input, fmt)
        if args.pair is not None:
            conversion, source = pair_conversion(args.pair), f"pair {args.pair}"
        else:
            cfg = get_config(args.config or "tiny")
            conversion, source = multitask_conversion(cfg, args.table), f"{cfg.name}, {args.table} table"
        if how == "to_jax":
            write_jax(args.output, fmt, conversion.to_jax(given))
        else:
            write_torch(args.output, conversion.to_torch(given, COLLECTIONS))
    except ConversionError as e:
        raise ConvertError(f"{args.input}: {e}") from e
    except InterchangeError as e:  # names the file already
        raise ConvertError(str(e)) from e
    jax_side = "orbax" if fmt == "orbax" else fmt[1:]
    sides = f"torch -> {jax_side}" if how == "to_jax" else f"{jax_side} -> torch"
    return f"{args.input} -> {args.output} ({sides}, {source}): {layout_summary(conversion)}"


def run(args: argparse.Namespace) -> int:
    try:
        line = convert(args)
    except ConvertError as e:
        print(f"jaxmtl convert: error: {e}", file=sys.stderr)
        return 2
    print(line)
    return 0

