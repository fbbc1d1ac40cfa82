"""Flat {name: array} state files shared between the frameworks: safetensors or .npz, never pickles.

Loading never executes code from the file: safetensors holds raw tensors and
a JSON header, and .npz is read with allow_pickle=False, so an object array
(a pickle) is refused. Every failure raises InterchangeError naming the file
(missing, truncated or corrupt file, unexpected names, shapes or dtypes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from jaxmtl.trees import check_names_and_shapes

FORMATS = (".safetensors", ".npz")


class InterchangeError(ValueError):
    """A state file that cannot be read or does not hold what was expected; names the file."""


def _format(path: Path) -> str:
    if path.suffix not in FORMATS:
        raise InterchangeError(f"{path}: unknown interchange format {path.suffix!r}; use one of {FORMATS}")
    return path.suffix


def save_flat(path: str | Path, flat: Mapping[str, np.ndarray]) -> Path:
    """Writes {name: array} atomically (a crash never leaves half a file under `path`)."""
    path = Path(path)
    fmt = _format(path)
    arrays = {}
    for k, v in flat.items():
        arr = np.array(v, order="C")  # not ascontiguousarray: it turns 0-d arrays into 1-d
        if arr.dtype == object:
            raise InterchangeError(f"{path}: {k!r} is an object array; only numeric arrays are stored")
        arrays[k] = arr
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp" + fmt)
    if fmt == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, str(tmp))
    else:
        np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_flat(path: str | Path, expected: Mapping[str, tuple] | None = None) -> dict[str, np.ndarray]:
    """Reads {name: array}; `expected` {name: shape} makes missing/extra names or shapes an error."""
    path = Path(path)
    fmt = _format(path)
    if not path.is_file():
        raise InterchangeError(f"{path}: no such file")
    try:
        if fmt == ".safetensors":
            from safetensors.numpy import load_file

            flat = load_file(str(path))
        else:
            with np.load(path, allow_pickle=False) as z:
                flat = {k: z[k] for k in z.files}
    except Exception as e:
        # safetensors raises its own SafetensorError, numpy a ValueError for pickles and
        # BadZipFile / EOFError / OSError for truncated archives: all mean "unusable file".
        raise InterchangeError(f"{path}: cannot read as {fmt} ({type(e).__name__}: {e})") from e
    if expected is not None:
        check_names_and_shapes(flat, expected, f"{path}: state does not match", InterchangeError, sep=" ")
    return flat

