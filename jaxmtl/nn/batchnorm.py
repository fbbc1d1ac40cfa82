"""BatchNorm2d with torch's momentum convention and running-variance update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class BatchNorm2d(nnx.Module):
    """torch.nn.BatchNorm2d on NHWC input.

    Deliberate differences from flax.nnx.BatchNorm, each matching torch:
    - `momentum` is torch's: running = (1 - momentum) * running + momentum * batch,
      default 0.1. Flax's momentum weights the *old* value (default 0.99), so
      torch's 0.1 corresponds to Flax's 0.9.
    - running_var stores the UNBIASED batch variance (divides by n - 1), while
      the activations are normalised with the BIASED one (divides by n).
      Flax stores the biased variance.
    - `count` mirrors torch's num_batches_tracked so a state_dict round-trips.
    Parameters: scale (torch weight), bias; batch stats: mean, var, count.
    """

    def __init__(self, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5):
        self.momentum = momentum
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
        self.count = nnx.BatchStat(jnp.zeros((), jnp.int32))

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if train:
            axes = (0, 1, 2)
            n = x.shape[0] * x.shape[1] * x.shape[2]
            mean = jnp.mean(x, axis=axes)
            # One `centered` for the variance and the output: reverse mode then
            # sums both of its cotangents before the mean's single reduction
            # (two `x - mean` cost one extra reduction per layer; small step -2%).
            centered = x - mean
            var = jnp.mean(jnp.square(centered), axis=axes)  # biased: normalises
            # Statistics do not receive gradients (torch updates them in-place,
            # outside autograd).
            m = self.momentum
            unbiased = jax.lax.stop_gradient(var) * (n / max(n - 1, 1))
            self.mean[...] = (1 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
            self.var[...] = (1 - m) * self.var[...] + m * unbiased
            self.count[...] = self.count[...] + 1
        else:
            mean, var = self.mean[...], self.var[...]
            centered = x - mean
        inv = jax.lax.rsqrt(var + self.eps)
        return centered * (inv * self.scale[...]) + self.bias[...]
