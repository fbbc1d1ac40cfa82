"""2-D convolution with torch's padding semantics, NHWC activations, HWIO kernels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxmtl.nn.conv_impl import SMALL_MAP_PIXELS, conv2d_fast
from jaxmtl.nn.init import kaiming_normal_fan_out

# Largest (H*W*C) x (Ho*Wo*O) matrix the "dense" formulation builds: small's
# 2x2x128 layers (512 x 512) use it, resnet18's 2x2x512 (2048 x 2048, 16 MB
# per step to build and read back) use "pairs", which was faster there.
DENSE_MAX_ENTRIES = 1 << 20


def cpu_plan(n: int, h: int, w: int, cin: int, cout: int, k: int, stride: int, padding: int
             ) -> tuple[str, str, str]:
    """(forward, dX, dW) formulation for XLA:CPU, one of conv_impl.FORMULATIONS.

    A rule distilled from benchmarks/conv_shapes.py (per-shape timings of every
    formulation in each direction on the tiny/small/resnet18 layers, compiled
    with jaxmtl/cpu_compiler.py's options, i.e. XLA's own Eigen convolution
    rather than YNNPACK's; the suite re-measures them and reports where this
    rule loses to the winner):
    - XLA's forward and input-gradient convs collapse on small output maps with
      many channels (3x3 512->512 on 2x2: ~850 ms instead of ~12 ms). On maps
      of <= 4 output pixels a stride-1 conv is a handful of pixel pairs, each
      joined by one tap: "pairs" runs one matmul per tap over exactly those
      (16 of the 36 tap-pixel products im2col multiplies on a 2x2 map; on a
      1x1 map only the centre tap), in all three directions. Where the
      whole conv fits a matrix of <= DENSE_MAX_ENTRIES, forward and dX are
      one matmul with it ("dense"). fwd+dX+dW of one conv, interleaved:
      small's 2x2x128 3.6 -> 1.9 ms, resnet18's 2x2x512 27.0 -> 14.4 ms;
      whole step, interleaved, two runs: small -5.7% and -5.4%, resnet18
      -6.4% and -6.6%, tiny -14% and -10% (tiny with "pairs" in all three
      directions: -5%).
      Strided convs onto such maps keep im2col (pairs within noise).
    - 1x1 convs are a (strided) slice and one matmul: im2col in all directions
      (XLA's kernel-gradient conv for the 1x1/2 downsample is up to 2x slower).
    - Everything else is XLA's conv in all three directions: with Eigen's
      kernel-gradient conv the patch formulations no longer win (small's stem
      dW: XLA 17.5 ms against 33 ms for im2colT; resnet18 layer1 dW 17.7 ms
      against 22 ms for im2col). Under YNNPACK's convolution they did, by far.
    - Except dW of the strided 3x3 convs (first conv of layer2..4): im2col.
      Timed alone XLA wins there (small layer2.0.conv1: 2.2 ms against
      2.9 ms), but in the training step XLA's kernel-gradient conv wants the
      activation transposed to (C, H, W, N), and XLA fuses that transpose
      with the BatchNorm/residual/ReLU recomputation feeding it into a slow
      loop (5.4 ms profiled for that conv on small). Whole step, interleaved,
      three runs: small -4.5%, -2.6%, resnet18 -2.9% with im2col.
    - dW of the stride-1 3x3 convs: XLA's conv on chunks of 16 frames
      ("xla16"), whose per-chunk activation transposes stay in cache (see
      conv_impl.batch_chunked_xla_conv). Whole step, interleaved: small
      -4.6% and -3.8% (two runs; 8 frames per chunk -1.6%, 32 the same as 16),
      resnet18 -0.3%; tiny's 8 frames are one chunk. Not for the stem's dW
      (small +0.6% with it).
    - The 7x7/2 stem's forward and dX run as a 4x4 stride-1 conv on 2x2
      space-to-depth blocks ("s2d"; small: forward ~17 ms against ~33 ms,
      dX ~17 ms against ~87 ms; the model never asks for the stem's dX, a
      saliency map would). On resnet18's stem (64 outputs) s2d and XLA are
      within run-to-run noise: 16 against 22 ms timed interleaved, 22 against
      17 ms in one sequential convshapes run.
    - The rule does not depend on the batch (`n` is taken for the tables of
      benchmarks/conv_shapes.py). An earlier version sent every conv
      under 10M multiply-adds to XLA (all formulations take ~0.1 ms there when
      timed alone), which also sent the 2x2 maps of small batches to XLA's
      slow forward; the batch sweep (benchmarks/crossover.py) showed it,
      interleaved whole steps confirmed it: small at B=2 41.3 -> 20.7 ms,
      tiny 10.4 -> 7.7 ms, resnet18 at B=1 78.8 -> 76.5 ms without that rule.
    """
    ho = (h + 2 * padding - k) // stride + 1
    wo = (w + 2 * padding - k) // stride + 1
    if k == 1:
        return ("im2col", "im2col", "im2col")
    dw = "im2col" if stride == 2 and k == 3 else ("xla16" if stride == 1 else "xla")
    if ho * wo <= SMALL_MAP_PIXELS:
        if stride == 1:
            fwd = "dense" if h * w * cin * ho * wo * cout <= DENSE_MAX_ENTRIES else "pairs"
            return (fwd, fwd, "pairs")
        return ("im2col", "im2col", dw)
    if k >= 7 and stride == 2:
        return ("s2d", "s2d", "xla")
    return ("xla", "xla", dw)


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
