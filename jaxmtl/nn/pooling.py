"""Pooling with torch's padding semantics (NHWC)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def max_pool2d(x: jax.Array, kernel_size: int, stride: int, padding: int) -> jax.Array:
    """torch.nn.MaxPool2d(kernel_size, stride, padding) on NHWC input.

    torch pads `padding` on every side with -inf (padding never wins the max);
    the window and padding are spelled out here for the same reason as in
    conv2d: 'SAME' would pad a stride-2 pool asymmetrically.
    """
    return lax.reduce_window(
        x, -jnp.inf, lax.max,
        window_dimensions=(1, kernel_size, kernel_size, 1),
        window_strides=(1, stride, stride, 1),
        padding=((0, 0), (padding, padding), (padding, padding), (0, 0)),
    )


def global_avg_pool(x: jax.Array) -> jax.Array:
    """nn.AdaptiveAvgPool2d(1) + flatten: (N, H, W, C) -> (N, C)."""
    return jnp.mean(x, axis=(1, 2))
