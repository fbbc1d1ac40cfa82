"""The multi-task model as one `harness.make_pair` call: its losses, inputs and table.

This is what a user writes to point the generic harness at a port; the
mutation tests pass deliberately wrong variants through `jax_model_fn`,
`jax_loss` or `table`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from flax import nnx

from jaxmtl.batch import Batch, random_batch, validate_batch
from jaxmtl.config import ModelConfig
from jaxmtl.functional import init_model
from jaxmtl.losses import multitask_loss
from jaxmtl.parity.harness import InputPair, PortPair, make_pair


def jax_loss(model, batch: Batch, train: bool, cfg: ModelConfig, loss=multitask_loss):
    """(total, outputs + loss parts) of the NNX model."""
    outputs = model(batch.images, batch.dyn, train=train)
    total, parts = loss(outputs, batch, cfg)
    return total, {**outputs, **parts}


def torch_loss(module, batch: Batch, train: bool, cfg: ModelConfig):
    """(total, outputs + loss parts) of the torch reference; `batch.images` is NCHW here."""
    from torch_ref.losses import multitask_loss as torch_multitask_loss

    outputs = module(batch.images, batch.dyn)
    total, parts = torch_multitask_loss(outputs, batch.pose, batch.vel, batch.label.long(), cfg)
    return total, {**outputs, **parts}


def batches(cfg: ModelConfig, dtype: str, seeds: Sequence[int]) -> list[InputPair]:
    """(JAX batch NHWC, torch batch NCHW) pairs from the same arrays."""
    out = []
    for seed in seeds:
        b = random_batch(cfg, seed, np.dtype(dtype).type)
        out.append((b, b._replace(images=b.images_nchw(), label=np.asarray(b.label, np.int64))))
    return out


def multitask_pair(cfg: ModelConfig, dtype: str = "float64", seed: int = 0, *,
                   jax_model_fn: Callable[[ModelConfig], Any] | None = None,
                   table: Any = None, loss: Callable = multitask_loss) -> PortPair:
    """The torch reference and the NNX model of `cfg` as a harness pair (torch weights from `seed`).

    The NNX model is built abstractly (`nnx.eval_shape`): only its structure is
    used, the values come from torch, so no JAX random initialisation runs.
    """
    import torch

    from torch_ref.convert import conversion_table
    from torch_ref.model import build_model

    torch_model = build_model(cfg, seed, {"float32": torch.float32, "float64": torch.float64}[dtype])
    nnx_model = nnx.eval_shape(lambda: (jax_model_fn or init_model)(cfg))
    return make_pair(
        torch_model, nnx_model, conversion_table(cfg) if table is None else table,
        lambda m, b, train: torch_loss(m, b, train, cfg),
        lambda m, b, train: jax_loss(m, b, train, cfg, loss),
        dtype=dtype, validate=lambda b: validate_batch(b, cfg))
