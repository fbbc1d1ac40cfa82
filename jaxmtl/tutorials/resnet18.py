"""The blitz tutorial's model examples: one resnet18 training step, and fine-tuning with a frozen backbone.

resnet18 here is jaxmtl.model.ResNet(3, (64, 128, 256, 512)) (torchvision's
topology without fc) + a torch-initialised Linear(512, num_classes), NHWC.
The examples take weights converted from the torch model through
torch_ref/convert.py's table, so both frameworks start from the same numbers.
Without weights, the model is initialised in JAX.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax

from jaxmtl.model import ResNet
from jaxmtl.nn import torch_linear
from jaxmtl.trees import flatten_state, path_name
from jaxmtl.tutorials.inputs import resnet18_inputs
from jaxmtl.tutorials.weights import DTYPES, cast_floats, fill, split_abstract

WIDTHS = (64, 128, 256, 512)


class ResNet18(nnx.Module):
    """torchvision's resnet18 (BatchNorm in train mode uses batch statistics, as model.train() does)."""

    def __init__(self, num_classes: int = 1000, *, rngs: nnx.Rngs):
        self.backbone = ResNet(3, WIDTHS, rngs=rngs)
        self.fc = torch_linear(WIDTHS[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return self.fc(self.backbone(x, train=train))


def build(weights: dict | None, num_classes: int, seed: int = 0, dtype: str = "float64"):
    """(graphdef, params, batch_stats); weights = {"params": {name: array}, "batch_stats": {...}} in JAX names."""
    if weights is None:
        model = nnx.jit(lambda: ResNet18(num_classes, rngs=nnx.Rngs(seed)))()
        graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        return graphdef, cast_floats(params, dtype), stats
    graphdef, params, stats = split_abstract(lambda: ResNet18(num_classes, rngs=nnx.Rngs(0)))
    return graphdef, fill(params, weights["params"], dtype), fill(stats, weights["batch_stats"], dtype)


def _inputs(num_classes: int, dtype: str):
    v = resnet18_inputs(num_classes=num_classes)
    data = jnp.asarray(np.transpose(v["data_nchw"], (0, 2, 3, 1)), DTYPES[dtype])  # NCHW -> NHWC
    return data, jnp.asarray(v["labels"], DTYPES[dtype])


def _sum_loss(graphdef, params, stats, data, labels):
    model = nnx.merge(graphdef, params, stats, copy=True)  # copy: BN updates its stats in place
    prediction = model(data, train=True)
    return (prediction - labels).sum(), (prediction, nnx.state(model, nnx.BatchStat))


def resnet18_step(weights: dict | None = None, seed: int = 0, dtype: str = "float64",
                  lr: float = 1e-2, momentum: float = 0.9) -> dict[str, Any]:
    """One training step: prediction = model(data), loss = (prediction - labels).sum(), SGD(1e-2, momentum 0.9).

    optax.sgd(lr, momentum) keeps trace = g + momentum * trace and adds
    -lr * trace; torch's SGD keeps buf = momentum * buf + g (buf = g at the
    first step) and subtracts lr * buf: the same update.
    """
    graphdef, params, stats = build(weights, 1000, seed, dtype)
    data, labels = _inputs(1000, dtype)
    opt = optax.sgd(lr, momentum=momentum)

    @jax.jit
    def step(params, stats, opt_state):
        (loss, (pred, new_stats)), grads = jax.value_and_grad(
            lambda p: _sum_loss(graphdef, p, stats, data, labels), has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, loss, pred

    new_params, new_stats, loss, pred = step(params, stats, opt.init(params))
    before, after = flatten_state(params), flatten_state(new_params)
    return {"loss": np.asarray(loss), "prediction": np.asarray(pred),
            "params_after": after, "update": {k: after[k] - before[k] for k in after},
            "batch_stats_after": flatten_state(new_stats)}


def resnet18_finetune(weights: dict | None = None, seed: int = 0, dtype: str = "float64",
                      lr: float = 1e-2, momentum: float = 0.9) -> dict[str, Any]:
    """Fine-tuning: freeze resnet18, add a new fc = Linear(512, 10); one step changes only fc.

    torch: requires_grad=False on every parameter, then a fresh nn.Linear.
    JAX: the frozen subtree enters the loss through lax.stop_gradient (no
    backward through the backbone, its gradient is zero), and
    optax.multi_transform gives it set_to_zero, so no optimizer (momentum,
    weight decay, Adam) can move it. BatchNorm running statistics still
    update in train mode on both sides: freezing parameters does not freeze
    buffers (torch: call .eval() on the BN layers for that).
    """
    graphdef, params, stats = build(weights, 10, seed, dtype)
    data, labels = _inputs(10, dtype)
    labels_tree = jax.tree_util.tree_map_with_path(
        lambda p, _: "frozen" if path_name(p).startswith("backbone") else "trainable", params)
    opt = optax.multi_transform({"trainable": optax.sgd(lr, momentum=momentum), "frozen": optax.set_to_zero()},
                                labels_tree)

    def loss_fn(params):
        frozen = jax.tree.map(lambda a, lab: lax.stop_gradient(a) if lab == "frozen" else a, params, labels_tree)
        return _sum_loss(graphdef, frozen, stats, data, labels)

    @jax.jit
    def step(params, opt_state):
        (loss, (_, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, loss

    new_params, new_stats, loss = step(params, opt.init(params))
    before, after = flatten_state(params), flatten_state(new_params)
    s_before, s_after = flatten_state(stats), flatten_state(new_stats)
    changed = sorted(k for k in after if not np.array_equal(after[k], before[k]))
    return {"loss": np.asarray(loss), "changed_params": ", ".join(changed),
            "max_abs_change_backbone": np.asarray(max(np.max(np.abs(after[k] - before[k]))
                                                      for k in after if k.startswith("backbone"))),
            "fc_after": {k: v for k, v in after.items() if k.startswith("fc")},
            "batch_stats_changed": any(not np.array_equal(s_after[k], s_before[k]) for k in s_after)}
