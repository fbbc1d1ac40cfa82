"""Model variants with jax.checkpoint (rematerialisation) for the memory study.

- "blocks": every ResNet BasicBlock is recomputed in the backward pass
  (nnx.remat around BasicBlock.__call__), so only block inputs are stored.
- "scan": the GRU's scan body is wrapped in jax.checkpoint, so per step only
  the carry is stored and the gates are recomputed.
Both change memory and time only, never values.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax
from flax import nnx
from jax import lax

import jaxmtl.nn.gru as gru_mod
from jaxmtl import functional as F
from jaxmtl.config import ModelConfig
from jaxmtl.model import BasicBlock, MultiTaskModel

VARIANTS = ("none", "blocks", "scan", "blocks+scan")


@nnx.remat(static_argnums=(2,))
def _block_call(block: BasicBlock, x: jax.Array, train: bool) -> jax.Array:
    return BasicBlock.__call__(block, x, train=train)


class RematBasicBlock(BasicBlock):
    """BasicBlock whose activations are recomputed in the backward pass."""

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return _block_call(self, x, train)


def model_fn(variant: str):
    """init function (cfg, seed) -> model for `variant` (remat on the ResNet blocks or not)."""

    def init(cfg: ModelConfig, seed: int = 0) -> MultiTaskModel:
        model = F.init_model(cfg, seed)
        if "blocks" in variant:
            for stage in (model.backbone.layer1, model.backbone.layer2,
                          model.backbone.layer3, model.backbone.layer4):
                for block in stage:
                    block.__class__ = RematBasicBlock  # same fields, remat'd __call__
        return model

    return init


def _remat_gru_scan(gi, h0, w_hh, b_hh, unroll=1):
    def step(h, gi_t):
        h = gru_mod.gru_cell(gi_t, h, w_hh, b_hh)
        return h, h

    return lax.scan(jax.checkpoint(step), h0, gi, unroll=unroll)


@contextlib.contextmanager
def scan_remat(enabled: bool) -> Iterator[None]:
    """While active (during tracing), GRU.__call__ uses a scan with a checkpointed body."""
    original = gru_mod.gru_scan
    if enabled:
        gru_mod.gru_scan = _remat_gru_scan
    try:
        yield
    finally:
        gru_mod.gru_scan = original
