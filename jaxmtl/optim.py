"""Optimizers as optax chains with torch.optim's exact update rules.

`make_optimizer(OptimConfig)` here and `torch_ref.optim.make_optimizer` build
the same update from the same config. Formula differences between optax and
torch, and how each is reconciled (each is proven in parity_tests/test_optim.py):

- Clipping. torch.nn.utils.clip_grad_norm_ scales by
  min(1, max_norm / (total_norm + 1e-6)); optax.clip_by_global_norm uses
  max_norm / total_norm with no epsilon (and only when total_norm > max_norm).
  The 1e-6 changes the update by ~1e-6 / total_norm relative, far above a 1e-8
  float64 tolerance, so `torch_clip_by_global_norm` below reproduces torch's formula.
- SGD momentum. torch's first step sets buf = grad (a clone); later steps
  buf = momentum * buf + (1 - dampening) * grad. optax.trace starts from a
  zero trace, so its first step is momentum * 0 + grad = grad: identical when
  dampening = 0, which is the only dampening offered here (torch's first step
  ignores dampening, optax has none). Nesterov: both use grad + momentum * buf.
- SGD weight decay is coupled in torch (grad += wd * param before momentum):
  optax.add_decayed_weights placed before optax.sgd does exactly that.
- Adam: both put eps outside the square root, m / (sqrt(v_hat) + eps) with
  v_hat = v / (1 - b2^t); torch computes sqrt(v) / sqrt(1 - b2^t), optax
  sqrt(v / (1 - b2^t)): equal up to rounding (~1e-16). eps_root stays 0.
  torch.optim.Adam's weight_decay is coupled L2 (like SGD's).
- AdamW: torch first multiplies param by (1 - lr * wd), then applies the Adam
  step; optax.adamw adds wd * param to the Adam direction and scales both by
  -lr. Both give param - lr * (adam + wd * param). The defaults differ (torch
  0.01, optax 1e-4), so weight_decay is always passed explicitly.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
TORCH_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s epsilon in max_norm / (total_norm + eps)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """One optimizer setting, read identically by optax and torch.optim.

    `clip_norm=None` disables global-norm clipping. `weight_decay` is coupled
    (L2 added to the gradient) for sgd and adam, decoupled for adamw, as in torch.
    """

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9        # sgd
    nesterov: bool = False       # sgd
    weight_decay: float = 0.0
    b1: float = 0.9              # adam, adamw
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float | None = 1.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; known: {list(OPTIMIZERS)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"need weight_decay >= 0 and 0 <= momentum < 1, got {self.weight_decay}, {self.momentum}")
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs the sgd optimizer with momentum > 0")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm}")


class TorchClipState(NamedTuple):
    """Stateless; an empty NamedTuple keeps the optax state a plain pytree."""


def torch_clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_: g * min(1, max_norm / (||g|| + 1e-6)).

    torch always multiplies by the clamped coefficient (by exactly 1.0 when
    ||g|| + 1e-6 <= max_norm), so below the threshold the gradient is unchanged
    in both. optax.clip_by_global_norm has no epsilon; see the module docstring.
    """

    def init_fn(params):
        del params
        return TorchClipState()

    def update_fn(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        coef = jnp.minimum(max_norm / (norm + TORCH_CLIP_EPS), 1.0)
        return jax.tree.map(lambda g: (g * coef).astype(g.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """The optax chain equivalent to torch_ref.optim.make_optimizer(cfg) + clip_grad_norm_."""
    chain = [torch_clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm is not None else []
    if cfg.name == "sgd":
        if cfg.weight_decay:
            chain.append(optax.add_decayed_weights(cfg.weight_decay))  # torch: grad += wd * param
        # optax.sgd(momentum=0) would skip the trace; torch with momentum=0 is plain SGD too.
        chain.append(optax.sgd(cfg.lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
    elif cfg.name == "adam":
        if cfg.weight_decay:
            chain.append(optax.add_decayed_weights(cfg.weight_decay))  # torch Adam: coupled L2
        chain.append(optax.adam(cfg.lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, eps_root=0.0))
    else:
        # weight_decay explicit: optax.adamw's default is 1e-4, torch.optim.AdamW's 0.01.
        chain.append(optax.adamw(cfg.lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, eps_root=0.0,
                                 weight_decay=cfg.weight_decay))
    return optax.chain(*chain)
