"""2-D convolution with torch's padding semantics, NHWC activations, HWIO kernels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxmtl.nn.conv_impl import conv2d_fast
from jaxmtl.nn.init import kaiming_normal_fan_out


# Below this many forward multiply-adds per conv, launch overhead dominates (see cpu_plan).
SMALL_CONV_MACS = 10_000_000


def cpu_plan(n: int, h: int, w: int, cin: int, cout: int, k: int, stride: int, padding: int
             ) -> tuple[str, str, str]:
    """(forward, dX, dW) formulation for XLA:CPU: "xla", "im2col", "shift" or "im2colT" (conv_impl.py).

    A rule distilled from benchmarks/conv_shapes.py (per-shape timings of every
    formulation in each direction on the tiny/small/resnet18 layers, with the
    allocator settings of cpu_malloc.py; the suite re-measures them and
    reports where this rule loses to the winner):
    - XLA's forward and input-gradient convs collapse on small output maps with
      many channels (3x3 512->512 on 2x2: ~880 ms instead of ~10 ms), so
      maps of <= 4 output pixels use im2col; dX uses col2im up to 4x4 maps.
    - 1x1 convs are a (strided) slice and one matmul: im2col in all directions
      (XLA's kernel-gradient conv for the 1x1/2 downsample is ~5x slower).
    - XLA's kernel-gradient conv is slow wherever the output map is larger
      than 2x2 (16x16x64 3x3: 61 ms against 24 ms for patches^T @ dY) and for
      strided convs (4x4->2x2, 256->512: 10 ms against 6 ms), so dW is im2col
      there; for the 7x7/2 stem the transposed-patch layout (im2colT) is the
      fastest (resnet18: 28 ms against XLA's 279 ms).
    Forward and dX of 3x3 convs on 8x8 and larger maps stay with XLA.
    - Tiny k>1 convs (< SMALL_CONV_MACS multiply-adds, e.g. all of `tiny`'s 3x3/7x7)
      stay with XLA: there every formulation takes ~0.1 ms, within timing
      noise of the others, and one conv op keeps the graph (and compile) small.
    """
    ho = (h + 2 * padding - k) // stride + 1
    wo = (w + 2 * padding - k) // stride + 1
    pixels = ho * wo
    if k == 1:
        return ("im2col", "im2col", "im2col")
    if n * pixels * k * k * cin * cout < SMALL_CONV_MACS:
        return ("xla", "xla", "xla")
    fwd = "im2col" if pixels <= 4 or (stride == 2 and cin >= 64) else "xla"
    dx = "im2col" if pixels <= 16 else "xla"
    if k >= 7:
        dw = "im2colT"
    else:
        dw = "xla" if pixels <= 4 and stride == 1 else "im2col"
    return (fwd, dx, dw)


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """Cross-correlation of NHWC `x` with an HWIO `kernel`, no bias.

    torch.nn.Conv2d(padding=p) pads p zeros on every side. Flax's 'SAME' does
    not: for a stride-2 conv on an even-sized map it pads (0, 1) or (p-1, p),
    shifting every output by one pixel against torch. So the padding is
    spelled out as the symmetric pair ((p, p), (p, p)).

    On the CPU backend (checked at trace time) the forward pass, dX and dW
    each use the formulation `cpu_plan` picks for this shape (see
    conv_impl.py and benchmarks/conv_shapes.py); the values are the same
    function with a different summation order. On GPU/TPU XLA's native conv
    (cuDNN) is used as is.
    """
    if jax.default_backend() == "cpu":
        k = kernel.shape[0]
        plan = cpu_plan(x.shape[0], x.shape[1], x.shape[2], x.shape[3], kernel.shape[3], k, stride, padding)
        if plan != ("xla", "xla", "xla"):
            return conv2d_fast(x, kernel, stride, padding, plan)
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
