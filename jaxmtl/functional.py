"""The model as pure functions over explicit pytrees.

`nnx.split` turns the NNX model into (graphdef, params, batch_stats); every
function below takes those pytrees explicitly and `nnx.merge`s them inside,
so they can be jitted, differentiated (`jax.value_and_grad`, `jax.vjp`) and
composed like any JAX function. Nothing here holds state.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from flax import nnx

from jaxmtl import cpu_compiler
from jaxmtl.config import ModelConfig
from jaxmtl.losses import multitask_loss
from jaxmtl.model import MultiTaskModel

Params = Any      # nnx.State of nnx.Param leaves (a pytree)
BatchStats = Any  # nnx.State of nnx.BatchStat leaves (a pytree)


def init_model(cfg: ModelConfig, seed: int = 0) -> MultiTaskModel:
    """A JAX-initialised model (torch's default distributions)."""
    return MultiTaskModel(cfg, rngs=nnx.Rngs(seed))


def split_model(model: MultiTaskModel) -> tuple[nnx.GraphDef, Params, BatchStats]:
    """(graphdef, params, batch_stats): the static structure and the two state pytrees."""
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return graphdef, params, batch_stats


def apply(graphdef: nnx.GraphDef, params: Params, batch_stats: BatchStats,
          images: jax.Array, dyn: jax.Array, *, train: bool
          ) -> tuple[dict[str, jax.Array], BatchStats]:
    """Forward pass; returns (outputs, batch_stats after the pass).

    In train mode BatchNorm updates its running statistics inside the merged
    copy; they are read back out, so the caller's pytrees are never mutated.
    """
    # copy=True: the states hold nnx.Variable objects; without a copy the merged
    # model would reuse Variables created outside this trace, and BatchNorm's
    # in-place update of its statistics would raise TraceContextError under grad.
    model = nnx.merge(graphdef, params, batch_stats, copy=True)
    outputs = model(images, dyn, train=train)
    return outputs, nnx.state(model, nnx.BatchStat)


def loss_fn(params: Params, batch_stats: BatchStats, batch, graphdef: nnx.GraphDef,
            cfg: ModelConfig, *, train: bool = True):
    """Total loss and aux (loss parts, new batch stats, outputs). Differentiate w.r.t. `params`."""
    outputs, new_stats = apply(graphdef, params, batch_stats, batch.images, batch.dyn, train=train)
    total, parts = multitask_loss(outputs, batch, cfg)
    return total, (parts, new_stats, outputs)


def make_grad_fn(graphdef: nnx.GraphDef, cfg: ModelConfig, *, train: bool = True) -> Callable:
    """jit(value_and_grad(loss_fn)): (params, batch_stats, batch) -> ((total, aux), grads)."""

    def f(params, batch_stats, batch):
        return loss_fn(params, batch_stats, batch, graphdef, cfg, train=train)

    return cpu_compiler.jit(jax.value_and_grad(f, has_aux=True))


def make_part_grad_fn(graphdef: nnx.GraphDef, cfg: ModelConfig, *, train: bool = True) -> Callable:
    """jit fn: (params, batch_stats, batch) -> {part: grads of that loss alone}, one forward, one vjp per part.

    `jax.vjp` linearises the forward once; each loss part is then pulled back
    with a one-hot cotangent. This is PyTorch's `retain_graph=True` followed by
    one backward per loss, without any graph to retain.
    """

    def parts_of(params, batch_stats, batch):
        _, (parts, _, _) = loss_fn(params, batch_stats, batch, graphdef, cfg, train=train)
        return parts

    def f(params, batch_stats, batch):
        parts, pullback = jax.vjp(lambda p: parts_of(p, batch_stats, batch), params)
        out = {}
        for name in parts:
            cot = {k: jax.numpy.zeros_like(v) for k, v in parts.items()}
            cot[name] = jax.numpy.ones_like(parts[name])
            (out[name],) = pullback(cot)
        return out

    return cpu_compiler.jit(f)
