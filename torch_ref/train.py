"""The textbook torch training step and the torch trainer.

  optimizer.zero_grad(); total.backward(); clip_grad_norm_; optimizer.step()

on torch_ref.model with stock torch.optim. Mirrors jaxmtl/train.py; the same
framework-neutral loop (jaxmtl.loop.fit) drives both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from jaxmtl.batch import Batch
from jaxmtl.config import ModelConfig
from jaxmtl.optim import OptimConfig
from torch_ref.checkpoint import latest_checkpoint, restore_checkpoint, save_checkpoint
from torch_ref.losses import multitask_loss
from torch_ref.model import build_model
from torch_ref.optim import clip_and_norm, make_optimizer

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torch_batch(batch: Batch):
    """(images NCHW, dyn, pose, vel, label int64) tensors sharing the numpy batch's values."""
    return (torch.from_numpy(batch.images_nchw()), torch.from_numpy(np.asarray(batch.dyn)),
            torch.from_numpy(np.asarray(batch.pose)), torch.from_numpy(np.asarray(batch.vel)),
            torch.from_numpy(np.asarray(batch.label, np.int64)))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch,
               cfg: ModelConfig, ocfg: OptimConfig) -> dict[str, float]:
    """One step; returns total, the loss parts and grad_norm (before clipping)."""
    return train_step_tensors(model, optimizer, torch_batch(batch), cfg, ocfg)


def train_step_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tensors,
                       cfg: ModelConfig, ocfg: OptimConfig) -> dict[str, float]:
    """`train_step` on (images NCHW, dyn, pose, vel, label int64) tensors (the parity harness's form)."""
    images, dyn, pose, vel, label = tensors
    model.train()
    total, parts = multitask_loss(model(images, dyn), pose, vel, label, cfg)
    optimizer.zero_grad()
    total.backward()
    grad_norm = clip_and_norm(model.parameters(), ocfg)
    optimizer.step()
    return {"total": total.item(), **{k: v.item() for k, v in parts.items()}, "grad_norm": grad_norm.item()}


@torch.no_grad()
def eval_step(model: torch.nn.Module, batch: Batch, cfg: ModelConfig) -> dict[str, float]:
    images, dyn, pose, vel, label = torch_batch(batch)
    model.eval()
    out = model(images, dyn)
    total, parts = multitask_loss(out, pose, vel, label, cfg)
    return {"total": total.item(), **{k: v.item() for k, v in parts.items()},
            "pose_mse": torch.mean((out["pose"] - pose) ** 2).item(),
            "vel_mse": torch.mean((out["vel"] - vel) ** 2).item(),
            "accuracy": (out["logits"].argmax(-1) == label).double().mean().item()}


class TorchTrainer:
    """The torch side of the training loop (jaxmtl.loop.fit drives it)."""

    framework = "torch"
    suffix = ".pt"

    def __init__(self, cfg: ModelConfig, ocfg: OptimConfig, *, seed: int = 0, dtype: str = "float32"):
        self.cfg, self.ocfg = cfg, ocfg
        self.model = build_model(cfg, seed, TORCH_DTYPES[dtype])
        self.optimizer = make_optimizer(self.model.parameters(), ocfg)

    def train_step(self, batch: Batch) -> dict[str, float]:
        return train_step(self.model, self.optimizer, batch, self.cfg, self.ocfg)

    def eval_step(self, batch: Batch) -> dict[str, float]:
        return eval_step(self.model, batch, self.cfg)

    def save(self, out: Path, step: int, meta: dict) -> Path:
        return save_checkpoint(out, step, self.model, self.optimizer, meta)

    def latest(self, out: Path) -> Path | None:
        return latest_checkpoint(out)

    def restore(self, path: Path, expect: dict) -> dict:
        self.model, self.optimizer, meta = restore_checkpoint(
            path, self.model, lambda m: make_optimizer(m.parameters(), self.ocfg), expect)
        return meta
