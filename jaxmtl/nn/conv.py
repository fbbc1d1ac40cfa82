"""2-D convolution with torch's padding semantics, NHWC activations, HWIO kernels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxmtl.nn.conv_impl import conv2d_fast
from jaxmtl.nn.conv_plan import ConvShape, Plan, plan_for
from jaxmtl.nn.init import kaiming_normal_fan_out


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """Cross-correlation of NHWC `x` with an HWIO `kernel`, no bias.

    torch.nn.Conv2d(padding=p) pads p zeros on every side. Flax's 'SAME' does
    not: for a stride-2 conv on an even-sized map it pads (0, 1) or (p-1, p),
    shifting every output by one pixel against torch. So the padding is
    spelled out as the symmetric pair ((p, p), (p, p)).

    On the CPU backend (checked at trace time) the forward pass, dX and dW
    each use the formulation conv_plan.plan_for picks for this shape: measured
    on this machine and cached, or the fallback rule (JAXMTL_CONV_PLAN, see
    conv_plan.py); the values are the same function with a different
    summation order. On GPU/TPU XLA's native conv (cuDNN) is used as is.
    """
    if jax.default_backend() == "cpu":
        plan = plan_for(ConvShape(*x.shape, kernel.shape[3], kernel.shape[0], stride, padding, str(x.dtype)))
        if plan != Plan("xla", "xla", "xla"):
            return conv2d_fast(x, kernel, stride, padding, tuple(plan))
    return lax.conv_general_dilated(
        x, kernel,
        window_strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


class Conv2d(nnx.Module):
    """Bias-free Conv2d as used in ResNet; `kernel` is HWIO (torch: OIHW)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 stride: int = 1, padding: int = 0, rngs: nnx.Rngs):
        self.stride = stride
        self.padding = padding
        self.kernel = nnx.Param(kaiming_normal_fan_out(
            rngs.params(), (kernel_size, kernel_size, in_channels, out_channels), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return conv2d(x, self.kernel[...], self.stride, self.padding)
