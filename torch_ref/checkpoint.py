"""torch.save checkpoints of model, optimizer, step and data position: DIR/checkpoints/step_00000100.pt.

Mirrors jaxmtl/checkpoint.py. Saving writes a temporary file and renames it
(os.replace is atomic), so a crash never leaves a half-written step_*.pt.
Loading uses torch.load(weights_only=True) and loads into fresh copies of the
model and optimizer, so a bad file raises CheckpointError naming it and the
caller's objects are untouched (nothing half-loaded).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Callable

import torch

from jaxmtl.checkpoint import CheckpointError, checkpoint_dir, latest_checkpoint as _latest, step_name

SUFFIX = ".pt"


def latest_checkpoint(out: Path) -> Path | None:
    return _latest(out, SUFFIX)


def save_checkpoint(out: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    meta: dict) -> Path:
    path = checkpoint_dir(out) / step_name(step, SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    # meta as a JSON string: weights_only=True loads only tensors and plain containers
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "meta": json.dumps(dict(meta, step=int(step)))}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def restore_checkpoint(path: Path, model: torch.nn.Module, make_optimizer: Callable, expect: dict | None = None):
    """(new model, new optimizer, meta) from `path`; `model` itself is not modified."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(payload["meta"])
    except Exception as e:  # truncated zip, unpickling error, missing key ...
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated: {type(e).__name__}: {e}") from e
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise CheckpointError(f"checkpoint {path} was written with {key}={meta.get(key)!r}, "
                                  f"this run has {key}={value!r}")
    new_model = copy.deepcopy(model)
    new_opt = make_optimizer(new_model)
    try:
        new_model.load_state_dict(payload["model"], strict=True)
        new_opt.load_state_dict(payload["optimizer"])
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} does not fit this model/optimizer: {e}") from e
    return new_model, new_opt, meta
