"""total = CE(final) + w_pose * MSE(pose) + w_vel * MSE(velocity), with the parts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxmtl.config import ModelConfig

LOSS_PARTS = ("loss_final", "loss_pose", "loss_vel")


def multitask_loss(outputs: dict[str, jax.Array], batch, cfg: ModelConfig
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns (total, {"loss_final", "loss_pose", "loss_vel"}).

    Reductions match torch's defaults: F.cross_entropy averages over the batch,
    F.mse_loss(reduction="mean") averages over every element (B * T * F), which
    is optax.squared_error(...).mean() (not optax.l2_loss, which halves it).
    """
    loss_final = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        outputs["logits"], batch.label))
    loss_pose = jnp.mean(optax.squared_error(outputs["pose"], batch.pose))
    loss_vel = jnp.mean(optax.squared_error(outputs["vel"], batch.vel))
    total = loss_final + cfg.w_pose * loss_pose + cfg.w_vel * loss_vel
    return total, {"loss_final": loss_final, "loss_pose": loss_pose, "loss_vel": loss_vel}
