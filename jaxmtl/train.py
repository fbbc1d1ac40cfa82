"""The functional JAX training step, evaluation step and the JAX trainer.

`make_train_step` returns one jitted function
  (params, batch_stats, opt_state, batch) -> (params, batch_stats, opt_state, metrics)
built on `jax.value_and_grad` over `jaxmtl.functional.loss_fn` and an optax
chain from `jaxmtl.optim`. The train state is the plain pytree `TrainState`.
torch_ref/train.py is the textbook torch loop with the same interface.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxmtl import cpu_compiler
from jaxmtl.batch import Batch
from jaxmtl.checkpoint import latest_checkpoint, restore_checkpoint, save_checkpoint
from jaxmtl.config import ModelConfig, require_x64
from jaxmtl.data_parallel import DataParallel, put_batch, put_replicated
from jaxmtl.functional import apply, init_model, loss_fn, split_model
from jaxmtl.losses import multitask_loss
from jaxmtl.optim import OptimConfig, make_optimizer


class TrainState(NamedTuple):
    params: Any
    batch_stats: Any
    opt_state: Any


def make_train_step(graphdef, cfg: ModelConfig, tx: optax.GradientTransformation,
                    dp: DataParallel | None = None) -> Callable:
    """jit: (params, batch_stats, opt_state, batch) -> (params, batch_stats, opt_state, metrics).

    With `dp` (jaxmtl.data_parallel) the batch is split over dp's devices and
    everything else replicated; the step itself is the same code.

    metrics: total, loss_final, loss_pose, loss_vel, grad_norm (global, before
    clipping, = torch's clip_grad_norm_ return value), param_norm (before the
    update), update_norm (the applied update, after clipping and lr).
    """

    def train_step(params, batch_stats, opt_state, batch):
        (total, (parts, new_stats, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, batch, graphdef, cfg, train=True)
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics = {"total": total, **parts, "grad_norm": optax.tree.norm(grads),
                   "param_norm": optax.tree.norm(params), "update_norm": optax.tree.norm(updates)}
        return optax.apply_updates(params, updates), new_stats, opt_state, metrics

    if dp is None:
        return cpu_compiler.jit(train_step)
    rep = dp.replicated
    return cpu_compiler.jit(train_step, in_shardings=(rep, rep, rep, dp.batch), out_shardings=rep)


def make_eval_step(graphdef, cfg: ModelConfig, dp: DataParallel | None = None) -> Callable:
    """jit: (params, batch_stats, batch) -> metrics in eval mode (running BN statistics)."""

    def eval_step(params, batch_stats, batch):
        outputs, _ = apply(graphdef, params, batch_stats, batch.images, batch.dyn, train=False)
        total, parts = multitask_loss(outputs, batch, cfg)
        return {"total": total, **parts,
                "pose_mse": jnp.mean(jnp.square(outputs["pose"] - batch.pose)),
                "vel_mse": jnp.mean(jnp.square(outputs["vel"] - batch.vel)),
                "accuracy": jnp.mean(jnp.argmax(outputs["logits"], -1) == batch.label)}

    if dp is None:
        return cpu_compiler.jit(eval_step)
    return cpu_compiler.jit(eval_step, in_shardings=(dp.replicated, dp.replicated, dp.batch),
                            out_shardings=dp.replicated)


def _cast(tree, dtype):
    """Floating leaves to `dtype`, on the host: per-leaf `astype` would compile one program per shape."""
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x, dtype)) if jnp.issubdtype(x.dtype, jnp.floating)
                        else x, tree)


@functools.lru_cache(maxsize=16)
def compiled_steps(graphdef, cfg: ModelConfig, ocfg: OptimConfig,
                   dp: DataParallel | None = None) -> tuple[Callable, Callable]:
    """One jitted (train_step, eval_step) per (model structure, optimizer, mesh), shared by all trainers."""
    return make_train_step(graphdef, cfg, make_optimizer(ocfg), dp), make_eval_step(graphdef, cfg, dp)


class JaxTrainer:
    """The JAX side of the training loop (jaxmtl.loop.fit drives it)."""

    framework = "jax"
    suffix = ""  # checkpoint directories step_XXXXXXXX/

    def __init__(self, cfg: ModelConfig, ocfg: OptimConfig, *, seed: int = 0, dtype: str = "float32",
                 dp: DataParallel | None = None, init: str = "jax"):
        """float64 needs x64 switched on by the caller (`jaxmtl train --dtype float64` does).

        `init="torch"`: the weights of torch_ref.model.build_model(cfg, seed), converted
        (imports torch), so that a run can be compared step by step with --framework torch.

        With `dp`, `train_step`/`eval_step` take this process's rows of the global batch
        (the whole batch with one process; jaxmtl.data.ProcessShare).
        """
        require_x64(dtype, "the float64 trainer")
        self.primary = jax.process_index() == 0  # the process that writes logs (jaxmtl.loop.fit)
        self.cfg, self.ocfg, self.dtype = cfg, ocfg, np.dtype(dtype)
        if init not in ("jax", "torch"):
            raise ValueError(f"init must be 'jax' or 'torch', got {init!r}")
        if init == "torch":  # the structure only (nnx.eval_shape): JAX's initialisers never run
            from torch_ref.convert import torch_module_to_jax_state
            from torch_ref.model import build_model

            graphdef, params, batch_stats = split_model(nnx.eval_shape(lambda: init_model(cfg, seed)))
            params, batch_stats = torch_module_to_jax_state(build_model(cfg, seed), cfg, params, batch_stats)
        else:
            graphdef, params, batch_stats = split_model(init_model(cfg, seed))
        self.graphdef = graphdef
        tx = make_optimizer(ocfg)
        params, batch_stats = _cast(params, self.dtype), _cast(batch_stats, self.dtype)
        self.state = TrainState(params, batch_stats, jax.jit(tx.init)(params))  # one program, not one per leaf
        self.dp = dp
        if dp is not None:
            self.state = put_replicated(self.state, dp)
        self._train, self._eval = compiled_steps(graphdef, cfg, ocfg, dp)

    def _place(self, batch: Batch) -> Batch:
        return batch if self.dp is None else put_batch(batch, self.dp)

    def train_step(self, batch: Batch) -> dict[str, float]:
        params, stats, opt_state, metrics = self._train(*self.state, self._place(batch))
        self.state = TrainState(params, stats, opt_state)
        return {k: float(v) for k, v in jax.device_get(metrics).items()}

    def eval_step(self, batch: Batch) -> dict[str, float]:
        metrics = self._eval(self.state.params, self.state.batch_stats, self._place(batch))
        return {k: float(v) for k, v in jax.device_get(metrics).items()}

    def save(self, out: Path, step: int, meta: dict) -> Path:
        return save_checkpoint(out, step, self.state._asdict(), meta)

    def latest(self, out: Path) -> Path | None:
        return latest_checkpoint(out)

    def restore(self, path: Path, expect: dict) -> dict:
        state, meta = restore_checkpoint(path, self.state._asdict(), expect)
        # Checkpoints hold whole arrays, written once: they restore onto any number of devices and processes.
        self.state = TrainState(**state) if self.dp is None else put_replicated(TrainState(**state), self.dp)
        return meta
