"""The multi-task model as one `harness.make_pair` call: its losses, inputs, optimizers and train steps.

This is what `jaxmtl parity` runs, and what a user writes to point the generic
harness at a port. The table is derived from the two models
(`jaxmtl.parity.derive`) unless one is given; training runs through the
project's own train steps (`jaxmtl.train.compiled_steps` and
`torch_ref.train.train_step_tensors`). The mutation tests pass deliberately
wrong variants through `jax_model_fn`, `loss` or `table`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from flax import nnx

from jaxmtl.batch import Batch, random_batch, validate_batch
from jaxmtl.config import ModelConfig
from jaxmtl.functional import init_model
from jaxmtl.losses import LOSS_PARTS, multitask_loss
from jaxmtl.optim import OptimConfig, make_optimizer
from jaxmtl.parity.harness import InputPair, OptimizerPair, PairSpec, PortPair, derive_pair_table, pair_from_spec

# The parity settings: momentum + nesterov + weight decay for SGD, explicit weight
# decay for AdamW; clip_norm=1.0 is active (tiny's gradient norms start near 30).
# Why these step sizes: curves.py (CURVE_TOLERANCES).
PARITY_OPTIMIZERS: dict[str, OptimConfig] = {
    "sgd": OptimConfig("sgd", lr=0.005, momentum=0.9, nesterov=True, weight_decay=1e-3, clip_norm=1.0),
    "adam": OptimConfig("adam", lr=5e-4, clip_norm=1.0),
    "adamw": OptimConfig("adamw", lr=5e-4, weight_decay=0.01, clip_norm=1.0),
}


def loss_weights(cfg: ModelConfig) -> dict[str, float]:
    """{loss part: its weight in the total}, the `loss_parts` of the pair."""
    return dict(zip(LOSS_PARTS, (1.0, cfg.w_pose, cfg.w_vel)))


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


def input_pair(b: Batch) -> InputPair:
    """(JAX batch NHWC, torch batch NCHW with int64 labels) from the same arrays."""
    return b, b._replace(images=b.images_nchw(), label=np.asarray(b.label, np.int64))


def batches(cfg: ModelConfig, dtype: str, seeds: Sequence[int]) -> list[InputPair]:
    """Random batches (`jaxmtl.batch.random_batch`) as input pairs."""
    return [input_pair(random_batch(cfg, seed, np.dtype(dtype).type)) for seed in seeds]


def curve_batches(cfg: ModelConfig, dtype: str, seed: int, steps: int) -> list[InputPair]:
    """The first `steps` training batches of the motion data set, as input pairs.

    The training set size is fixed (100 steps' worth), so a shorter run sees the
    same first batches as `jaxmtl parity --steps 100`.
    """
    from jaxmtl.data import DataConfig, MotionDataset

    data = MotionDataset(cfg, DataConfig(seed=seed, train_size=max(steps, 100) * cfg.batch_size),
                         dtype=np.dtype(dtype).type)
    return [input_pair(data.train_batch(s)) for s in range(steps)]


def optimizer_pair(pair: PortPair, cfg: ModelConfig, ocfg: OptimConfig, name: str | None = None) -> OptimizerPair:
    """`ocfg` through the project's own train steps on both sides (clipping included)."""
    from jaxmtl.train import compiled_steps
    from torch_ref.optim import make_optimizer as torch_make_optimizer
    from torch_ref.train import train_step_tensors

    step = compiled_steps(pair.graphdef, cfg, ocfg)[0]

    def jax_step(params, stats, opt_state, batch):
        params, stats, opt_state, metrics = step(params, stats, opt_state, batch)
        return params, stats, opt_state, metrics["total"]

    def torch_step(module, optimizer, b: Batch):
        tensors = [b.images, b.dyn, b.pose, b.vel, b.label]
        return train_step_tensors(module, optimizer, [_tensor(a) for a in tensors], cfg, ocfg)["total"]

    return OptimizerPair(name or ocfg.name, lambda ps: torch_make_optimizer(ps, ocfg), make_optimizer(ocfg),
                         jax_step=jax_step, torch_step=torch_step)


def stock_optimizer_pair(ocfg: OptimConfig, name: str, scale: float = 1.0) -> OptimizerPair:
    """`ocfg` as stock torch.optim + clip_grad_norm_ and its optax chain, with no train step of
    its own: the harness's default steps run it (training_run), or `replay.replay` does.
    `scale` multiplies the clip threshold (the scaled replay multiplies the gradients alike)."""
    import dataclasses

    from torch_ref.optim import clip_and_norm, make_optimizer as torch_make_optimizer

    if ocfg.clip_norm is not None:
        ocfg = dataclasses.replace(ocfg, clip_norm=ocfg.clip_norm * scale)
    return OptimizerPair(name, lambda ps: torch_make_optimizer(ps, ocfg), make_optimizer(ocfg),
                         torch_before_step=lambda ps: clip_and_norm(ps, ocfg))


def _tensor(a):
    import torch

    return torch.from_numpy(np.array(a))


def _losses(cfg: ModelConfig, loss: Callable = multitask_loss) -> tuple[Callable, Callable]:
    """(torch_loss, jax_loss) of `cfg` in the harness's (model, inputs, train) form."""
    return (lambda m, b, train: torch_loss(m, b, train, cfg),
            lambda m, b, train: jax_loss(m, b, train, cfg, loss))


def multitask_table(cfg: ModelConfig) -> list:
    """The conversion table derived from the two models of `cfg` (float32, torch seed 0)."""
    import torch

    from torch_ref.model import build_model

    return derive_pair_table(build_model(cfg, 0, torch.float32), nnx.eval_shape(lambda: init_model(cfg)),
                             *_losses(cfg), batches(cfg, "float32", [0])[0], "float32")


def multitask_spec(cfg: ModelConfig, dtype: str = "float64", seed: int = 0, *,
                   jax_model_fn: Callable[[ModelConfig], Any] | None = None,
                   table: Any = None, loss: Callable = multitask_loss) -> PairSpec:
    """The torch reference and the NNX model of `cfg` as a PairSpec (torch weights from `seed`).

    The NNX model is built abstractly (`nnx.eval_shape`): only its structure is
    used, the values come from torch, so no JAX random initialisation runs.
    `table=None` derives the conversion table from the two models. The batch is
    `batches(cfg, dtype, [seed])`; the optimizers are the project's train steps,
    added by `jaxmtl parity` (`optimizer_pair`), so none are listed here.
    """
    import torch

    from torch_ref.model import build_model

    torch_model = build_model(cfg, seed, {"float32": torch.float32, "float64": torch.float64}[dtype])
    nnx_model = nnx.eval_shape(lambda: (jax_model_fn or init_model)(cfg))
    return PairSpec(torch_model, nnx_model, *_losses(cfg, loss), batches(cfg, dtype, [seed]), table=table,
                    loss_parts=loss_weights(cfg), validate=lambda b: validate_batch(b, cfg), name=cfg.name)


def multitask_pair(cfg: ModelConfig, dtype: str = "float64", seed: int = 0, **variant) -> PortPair:
    """`multitask_spec` (same arguments) made into a harness pair."""
    return pair_from_spec(multitask_spec(cfg, dtype, seed, **variant), dtype)
