"""Initializers with the distributions torch's layers use by default.

Parity tests always start from torch weights converted to JAX, so these only
matter for JAX-only training; they make a JAX-initialised model statistically
the same as a torch-initialised one.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def uniform_bound(bound: float) -> nnx.Initializer:
    """U(-bound, bound), the family behind torch's default Linear/GRU init."""

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# torchvision's ResNet: kaiming_normal_(mode="fan_out", nonlinearity="relu"),
# an untruncated normal with std sqrt(2 / fan_out) (JAX's "normal" is untruncated;
# nnx.Conv's default would be lecun_normal over fan_in).
kaiming_normal_fan_out = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_linear(in_features: int, out_features: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    """nnx.Linear initialised like torch.nn.Linear.

    torch: weight ~ kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(in), 1/sqrt(in)),
    bias ~ U(-1/sqrt(in), 1/sqrt(in)). Flax's default bias init is zeros.
    The kernel is stored (in, out): the transpose of torch's (out, in) weight.
    """
    bound = 1.0 / math.sqrt(in_features)
    return nnx.Linear(in_features, out_features, kernel_init=uniform_bound(bound),
                      bias_init=uniform_bound(bound), rngs=rngs)
