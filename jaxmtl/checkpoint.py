"""Orbax checkpoints of the JAX train state: DIR/checkpoints/step_00000100/.

A checkpoint holds every leaf of the train state (params, batch_stats,
opt_state) plus JSON metadata: step, data position, run settings, and the
name, shape and dtype of every leaf. Orbax writes into a temporary directory
and renames it when complete, so a crash mid-save never leaves a directory
named step_*; `latest_checkpoint` only looks at complete ones. Restoring
validates everything against the template before building the new state, so
a bad checkpoint raises CheckpointError naming the file and nothing is half-loaded.
torch_ref/checkpoint.py is the torch.save counterpart.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxmtl.trees import path_name

STEP_DIR = re.compile(r"^step_(\d{8})(\.pt)?$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupted, truncated or from another run."""


def checkpoint_dir(out: Path) -> Path:
    return Path(out) / "checkpoints"


def step_name(step: int, suffix: str = "") -> str:
    return f"step_{step:08d}{suffix}"


def list_checkpoints(out: Path, suffix: str = "") -> list[tuple[int, Path]]:
    """(step, path) of the complete checkpoints under out/checkpoints, oldest first."""
    d = checkpoint_dir(out)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = STEP_DIR.match(p.name)
        if m and (m.group(2) or "") == suffix:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out: Path, suffix: str = "") -> Path | None:
    found = list_checkpoints(out, suffix)
    return found[-1][1] if found else None


def _leaves_with_names(state: Any) -> tuple[list[str], list[Any], Any]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(state)
    return [path_name(p) for p, _ in flat], [v for _, v in flat], treedef


def save_checkpoint(out: Path, step: int, state: Any, meta: dict) -> Path:
    """Writes out/checkpoints/step_<step>/ atomically; returns its path."""
    import orbax.checkpoint as ocp

    names, leaves, _ = _leaves_with_names(state)
    arrays = {f"{i:05d}": np.asarray(v) for i, v in enumerate(leaves)}
    meta = dict(meta, step=int(step), names=names,
                shapes=[list(a.shape) for a in arrays.values()], dtypes=[str(a.dtype) for a in arrays.values()])
    path = checkpoint_dir(out) / step_name(step)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckptr = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    ckptr.save(path.absolute(), ocp.args.Composite(state=ocp.args.StandardSave(arrays),
                                                   meta=ocp.args.JsonSave(meta)), force=True)
    return path


def restore_checkpoint(path: Path, template: Any, expect: dict | None = None) -> tuple[Any, dict]:
    """(state shaped like `template`, metadata) from `path`.

    `expect` maps metadata keys to required values (config, optimizer, ...):
    a checkpoint from a different run is refused naming the difference.
    """
    import orbax.checkpoint as ocp

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist or is not an orbax checkpoint directory")
    ckptr = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    try:
        restored = ckptr.restore(path.absolute(), ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                                     meta=ocp.args.JsonRestore()))
        arrays, meta = restored["state"], dict(restored["meta"])
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
    except Exception as e:  # orbax/tensorstore raise many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated: {type(e).__name__}: {e}") from e
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise CheckpointError(f"checkpoint {path} was written with {key}={meta.get(key)!r}, "
                                  f"this run has {key}={value!r}")
    names, leaves, treedef = _leaves_with_names(template)
    if meta.get("names") != names:
        raise CheckpointError(f"checkpoint {path} holds a different state structure "
                              f"({len(meta.get('names', []))} leaves, expected {len(names)})")
    new_leaves = []
    for i, (name, ref) in enumerate(zip(names, leaves)):
        a = arrays.get(f"{i:05d}")
        ref_shape, ref_dtype = tuple(np.shape(ref)), np.asarray(ref).dtype
        if a is None or a.shape != ref_shape or a.dtype != ref_dtype:
            got = "missing" if a is None else f"{a.shape} {a.dtype}"
            raise CheckpointError(f"checkpoint {path}: leaf {name} is {got}, expected {ref_shape} {ref_dtype}")
        new_leaves.append(jax.numpy.asarray(a))
    return jax.tree_util.tree_unflatten(treedef, new_leaves), meta
