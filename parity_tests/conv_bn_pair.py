"""A conv -> BatchNorm -> ReLU -> pool -> linear pair: the smallest port with batch statistics.

For `jaxmtl parity --pair conv_bn_pair:conv_bn_spec --devices N`, where the
whole multi-task model would spend minutes compiling what a dozen weights show:
whether BatchNorm's statistics span the global batch. The batch (8) divides
over 1, 2, 4 and 8 devices.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmtl.nn import BatchNorm2d, Conv2d, torch_linear

BATCH, SIZE, CHANNELS, OUT = 8, 6, 4, 3


class ConvBNBatch(NamedTuple):
    x: np.ndarray       # (B, H, W, 3) for JAX, (B, 3, H, W) for torch
    target: np.ndarray  # (B, OUT)


class JaxConvBN(nnx.Module):
    def __init__(self, bn_cls=BatchNorm2d):
        rngs = nnx.Rngs(0)
        self.conv = Conv2d(3, CHANNELS, 3, padding=1, rngs=rngs)
        self.bn = bn_cls(CHANNELS)
        self.head = torch_linear(CHANNELS, OUT, rngs=rngs)

    def __call__(self, x, *, train: bool):
        h = nnx.relu(self.bn(self.conv(x), train=train))   # (B, H, W, C)
        return self.head(jnp.mean(h, axis=(1, 2)))          # (B, OUT)


def torch_conv_bn():
    import torch
    from torch import nn

    class TorchConvBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, CHANNELS, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(CHANNELS)
            self.head = nn.Linear(CHANNELS, OUT)

        def forward(self, x):
            return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    torch.manual_seed(0)
    return TorchConvBN()


def jax_loss(model, b: ConvBNBatch, train: bool):
    out = model(b.x, train=train)
    return jnp.mean(jnp.square(out - b.target)), {"out": out}


def torch_loss(module, b: ConvBNBatch, train: bool):
    out = module(b.x)
    return ((out - b.target) ** 2).mean(), {"out": out}


def conv_bn_batches(dtype: str, seeds=(0,)) -> list:
    pairs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(BATCH, SIZE, SIZE, 3)).astype(dtype)
        target = rng.normal(size=(BATCH, OUT)).astype(dtype)
        pairs.append((ConvBNBatch(x, target), ConvBNBatch(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), target)))
    return pairs


def conv_bn_spec(dtype: str, bn_cls=BatchNorm2d):
    """The correct pair: `jaxmtl parity --pair conv_bn_pair:conv_bn_spec`."""
    import torch
    import optax

    from jaxmtl.parity.harness import OptimizerPair, PairSpec

    sgd = OptimizerPair("sgd", lambda ps: torch.optim.SGD(ps, lr=0.1), optax.sgd(0.1))
    return PairSpec(torch_conv_bn().to(getattr(torch, dtype)), nnx.eval_shape(lambda: JaxConvBN(bn_cls)),
                    torch_loss, jax_loss, conv_bn_batches(dtype, (0, 1)), optimizers=[sgd], name="conv_bn")


def per_device_bn_spec(dtype: str):
    """The pair with mutants.PerDeviceBatchNorm over every device JAX has: wrong only when sharded."""
    from jaxmtl.data_parallel import data_parallel
    from mutants import PerDeviceBatchNorm

    class OnTheseDevices(PerDeviceBatchNorm):
        mesh = data_parallel().mesh

    return conv_bn_spec(dtype, OnTheseDevices)
