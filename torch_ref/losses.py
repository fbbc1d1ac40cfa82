"""total = CE(final) + w_pose * MSE(pose) + w_vel * MSE(velocity), stock torch losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jaxmtl.config import ModelConfig


def multitask_loss(outputs: dict[str, torch.Tensor], pose: torch.Tensor, vel: torch.Tensor,
                   label: torch.Tensor, cfg: ModelConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss_final = F.cross_entropy(outputs["logits"], label)
    loss_pose = F.mse_loss(outputs["pose"], pose)
    loss_vel = F.mse_loss(outputs["vel"], vel)
    total = loss_final + cfg.w_pose * loss_pose + cfg.w_vel * loss_vel
    return total, {"loss_final": loss_final, "loss_pose": loss_pose, "loss_vel": loss_vel}
