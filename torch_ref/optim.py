"""Stock torch.optim optimizers and clip_grad_norm_ from jaxmtl's OptimConfig.

Mirrors jaxmtl/optim.py, whose docstring lists every formula difference with
optax and how the JAX side reconciles it.
"""

from __future__ import annotations

from typing import Iterable

import torch

from jaxmtl.optim import OptimConfig


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """torch.optim.SGD / Adam / AdamW with every hyper-parameter passed explicitly."""
    params = list(params)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, dampening=0.0,
                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.b1, cfg.b2), eps=cfg.eps,
                                weight_decay=cfg.weight_decay)
    # weight_decay explicit: torch.optim.AdamW defaults to 0.01, optax.adamw to 1e-4.
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.b1, cfg.b2), eps=cfg.eps,
                             weight_decay=cfg.weight_decay)


def clip_and_norm(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.Tensor:
    """The global gradient norm before clipping; clips in place when cfg.clip_norm is set."""
    params = [p for p in params if p.grad is not None]
    if cfg.clip_norm is None:
        return torch.nn.utils.get_total_norm([p.grad for p in params])
    return torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
