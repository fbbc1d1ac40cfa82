"""Convolution formulations for XLA:CPU: native conv, or im2col (shifted slices + one matmul).

XLA:CPU's native convolution is slow for some shapes (measured in
benchmarks/conv_shapes.py): the forward and input-gradient passes on tiny
maps with many channels, and the 7x7/2 stem on 3 channels. Each direction of
a convolution (forward, input gradient dX, kernel gradient dW) can be written
instead as one large matmul over patches built from shifted strided slices:

    patches[n, ho, wo, (i, j, c)] = xpad[n, s*ho + i, s*wo + j, c]
    forward: y  = patches @ W.reshape(k*k*C, O)
    dW:      dW = patches^T @ dY              (one matmul, reduces over N*Ho*Wo)
    dX:      dP = dY @ W^T, then "col2im": the transpose of the slicing, i.e.
             each (i, j) block of dP zero-padded back to its place and summed.

or, for stride 2, as a stride-1 conv on space-to-depth blocks ("s2d"), or as
XLA's conv on chunks of the batch ("xla16", for dW), or, on maps of a few
pixels, as one matmul per tap over the pixel pairs it joins ("pairs") or
one matmul with the whole conv as a matrix ("dense"). conv_plan.plan_for picks
among them per shape and direction, by measurement on the machine or by
its fallback rule.
All formulations compute the same mathematical function, only the summation
order differs (float64 agrees with lax.conv_general_dilated to ~1e-15).
`conv2d_fast` is a `jax.custom_jvp`: its tangent rule is linear in
(dx, dkernel) and uses the chosen formulation for each argument, so reverse
mode obtains dX and dW as the transposes of those formulations (col2im and
patches^T @ dY), and forward mode (jax.jvp, jax.hessian) keeps working.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

FORMULATIONS = ("xla", "xla16", "im2col", "shift", "im2colT", "s2d", "pairs", "dense")


# "pairs" and "dense" unroll the conv over pixel pairs in Python: for maps of a few pixels only.
SMALL_MAP_PIXELS = 4


def formulations_for(stride: int, out_pixels: int) -> tuple[str, ...]:
    """The formulations that apply to a conv of this stride with Ho*Wo = `out_pixels`.

    "s2d" needs stride 2; "pairs" and "dense" need a map of at most SMALL_MAP_PIXELS outputs.
    """
    return tuple(m for m in FORMULATIONS
                 if (m != "s2d" or stride == 2) and (m not in ("pairs", "dense") or out_pixels <= SMALL_MAP_PIXELS))


def xla_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """lax.conv_general_dilated, NHWC/HWIO, symmetric torch padding."""
    return lax.conv_general_dilated(
        x, kernel, window_strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def batch_chunked_xla_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
                           frames: int = 16) -> jax.Array:
    """XLA's conv on chunks of `frames` frames, concatenated ("xla16"): the same numbers per frame.

    Meant for dW. Its transpose in the kernel is a sum of per-chunk
    kernel-gradient convs, and each chunk's activation is transposed to
    (C, H, W, n) on its own. XLA fuses that transpose with the BatchNorm/
    residual/ReLU recomputation feeding it, a loop that reads the activation
    once per channel; a chunk of 16 frames (256 KB at small's layer1) stays
    in L2 between those reads where the whole batch (2 MB) does not. dW alone
    with such a producer, 128 frames: 4.1 -> 2.7 ms at 16x16x16, 3.6 -> 2.0 ms
    at 8x8x32, 12.9 -> 11.6 ms at resnet18's 16x16x64 (64 frames).
    """
    n = x.shape[0]
    if n <= frames:
        return xla_conv(x, kernel, stride, padding)
    return jnp.concatenate([xla_conv(x[i: i + frames], kernel, stride, padding) for i in range(0, n, frames)],
                           axis=0)


def out_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


def patches(x: jax.Array, k: int, stride: int, padding: int) -> jax.Array:
    """(N, H, W, C) -> (N, Ho, Wo, k*k*C), channel blocks ordered (i, j, c) like HWIO."""
    return jnp.concatenate(shifted(x, k, stride, padding), axis=-1)


def im2col_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """Forward conv as patches @ W: one (N*Ho*Wo, k*k*C) x (k*k*C, O) matmul."""
    k, _, c, o = kernel.shape
    p = patches(x, k, stride, padding)
    y = jnp.dot(p.reshape(-1, k * k * c), kernel.reshape(k * k * c, o))
    return y.reshape(p.shape[:3] + (o,))


def shifted(x: jax.Array, k: int, stride: int, padding: int, pad_value: float = 0.0) -> list[jax.Array]:
    """The k*k shifted strided views xpad[:, s*ho + i, s*wo + j, :], each (N, Ho, Wo, C), order (i, j).

    xpad is x with `padding` entries of `pad_value` on every side of H and W
    (torch's symmetric padding; 'SAME' would pad a stride-2 window asymmetrically).
    The views are taken as contiguous slices of xpad reshaped to
    (N, Lh, s, Lw, s, C), row s*q + r at [q, r], rather than as strided
    slices: tap i is block rows i//s .. i//s + Ho at phase i % s. Both are
    the same numbers, but in reverse mode a strided slice transposes into an
    interior-padded pad, which XLA:CPU runs slowly; the reshape transposes
    into plain edge pads and a reshape (ReLU + max-pool forward and backward
    at `small`'s stem, timed alone: 12.0 -> 5.4 ms).
    """
    n, h, w, c = x.shape
    ho, wo = out_size(h, k, stride, padding), out_size(w, k, stride, padding)
    # Whole blocks of s rows covering every window: the bottom/right edge is
    # padded up to (or cropped down to) s * L rows; rows past the last window
    # are never read, so their value does not matter.
    lh, lw = -(-(stride * (ho - 1) + k) // stride), -(-(stride * (wo - 1) + k) // stride)
    pads = ((0, 0, 0), (padding, stride * lh - h - padding, 0), (padding, stride * lw - w - padding, 0),
            (0, 0, 0))
    xp = lax.pad(x, jnp.asarray(pad_value, x.dtype), pads)
    xr = xp.reshape(n, lh, stride, lw, stride, c)
    return [xr[:, i // stride: i // stride + ho, i % stride, j // stride: j // stride + wo, j % stride, :]
            for i in range(k) for j in range(k)]


def shift_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """Forward conv as a sum of k*k matmuls, view_ij @ W[i, j]: no k*k-times patch tensor.

    Transposed, its dW is k*k matmuls view_ij^T @ dY (one per kernel tap) and
    its dX is k*k matmuls dY @ W[i, j]^T each padded back into place and summed.
    """
    k, _, c, o = kernel.shape
    views = shifted(x, k, stride, padding)
    m = views[0].shape[:3]
    w = kernel.reshape(k * k, c, o)
    y = sum(jnp.dot(v.reshape(-1, c), w[t]) for t, v in enumerate(views))
    return y.reshape(m + (o,))


def patches_t(x: jax.Array, k: int, stride: int, padding: int) -> jax.Array:
    """Transposed patches (k*k*C, N*Ho*Wo), rows ordered (i, j, c) like HWIO.

    Built from x transposed once to (C, N, H, W): every tap's view is then a
    block of whole rows, and stacking the taps along the leading axis is a
    run of contiguous copies, while concatenating along the channel (minor)
    axis as `patches` does is slow on XLA:CPU for few channels.
    """
    n, h, w, c = x.shape
    ho, wo = out_size(h, k, stride, padding), out_size(w, k, stride, padding)
    xt = jnp.transpose(x, (3, 0, 1, 2))
    if padding:
        xt = jnp.pad(xt, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    views = [lax.slice(xt, (0, 0, i, j), (c, n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1),
                       (1, 1, stride, stride))
             for i in range(k) for j in range(k)]
    return jnp.stack(views).reshape(k * k * c, n * ho * wo)


def im2colt_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """Forward conv as (patches^T)^T @ W; transposed in W, dW = patches^T @ dY, a plain matmul."""
    k, _, c, o = kernel.shape
    n, h, w, _ = x.shape
    ho, wo = out_size(h, k, stride, padding), out_size(w, k, stride, padding)
    pt = patches_t(x, k, stride, padding)
    y = lax.dot_general(pt, kernel.reshape(k * k * c, o), (((0,), (0,)), ((), ())))
    return y.reshape(n, ho, wo, o)


def space_to_depth_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """A stride-2 conv as a stride-1 conv on 2x2 space-to-depth blocks: 4x the channels, half the taps.

    xs[n, a, b, (p, q, c)] = xpad[n, 2a + p, 2b + q, c] and
    ks[i, j, (p, q, c), o] = kpad[2i + p, 2j + q, c, o], where kpad is the
    kernel zero-padded to an even size, so
    sum over (i, j, p, q, c) of xs[n, ho + i, wo + j, .] * ks[i, j, ., o]
    is the original stride-2 sum over taps (2i + p, 2j + q).
    For the 7x7/2 stem on 3 channels this is a 4x4 conv on 12 channels,
    which XLA:CPU runs ~1.4-2x faster than the 7x7/2 one (benchmarks/conv_shapes.py).
    """
    if stride != 2:
        raise ValueError(f"space-to-depth conv needs stride 2, got {stride}")
    n, h, w, c = x.shape
    k, _, _, o = kernel.shape
    ho, wo = out_size(h, k, stride, padding), out_size(w, k, stride, padding)
    # Pad to even sizes; the extra zeros sit beyond the last window.
    ph, pw = (h + 2 * padding) % 2, (w + 2 * padding) % 2
    xp = jnp.pad(x, ((0, 0), (padding, padding + ph), (padding, padding + pw), (0, 0)))
    hs, ws = xp.shape[1] // 2, xp.shape[2] // 2
    xs = xp.reshape(n, hs, 2, ws, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, hs, ws, 4 * c)
    ke = k + k % 2
    kp = jnp.pad(kernel, ((0, ke - k), (0, ke - k), (0, 0), (0, 0)))
    ks = kp.reshape(ke // 2, 2, ke // 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(ke // 2, ke // 2, 4 * c, o)
    return xla_conv(xs, ks, 1, 0)[:, :ho, :wo]


def tap_pairs(h: int, w: int, k: int, stride: int, padding: int) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """For each kernel tap (i, j), the (input pixel, output pixel) pairs it joins, pixels as h*W + w.

    Only pairs where the tap lands inside the map: padding contributes zeros
    and is left out. On a 2x2 map a 3x3 stride-1 tap joins 1, 2 or 4 pairs
    (16 of the 36 that im2col multiplies), on a 1x1 map only the centre tap
    joins one.
    """
    ho, wo = out_size(h, k, stride, padding), out_size(w, k, stride, padding)
    pairs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i in range(k):
        for j in range(k):
            joined = [(qh * w + qw, ph * wo + pw)
                      for ph in range(ho) for pw in range(wo)
                      for qh, qw in [(stride * ph + i - padding, stride * pw + j - padding)]
                      if 0 <= qh < h and 0 <= qw < w]
            if joined:
                pairs[(i, j)] = joined
    return pairs


def pairs_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """Conv on a map of a few pixels as one matmul per tap over the pixel pairs it joins ("pairs").

    For tap t with pairs (q_r, p_r): the input pixels x[:, q_r] are stacked
    along the batch, multiplied by kernel[t] in one matmul, and each block of
    N rows is added to its output pixel p_r. Transposed, dW[t] is one matmul
    of the stacked inputs with the stacked output gradients and dX one
    matmul per tap: no multiplications by padding zeros and no col2im.
    Small maps only (the Python loop is over pixel pairs).
    """
    n, h, w, c = x.shape
    k, _, _, o = kernel.shape
    ho, wo = out_size(h, k, stride, padding), out_size(w, k, stride, padding)
    x2 = x.reshape(n, h * w, c)
    terms: list[list[jax.Array]] = [[] for _ in range(ho * wo)]
    for (i, j), joined in tap_pairs(h, w, k, stride, padding).items():
        ys = jnp.dot(jnp.concatenate([x2[:, q] for q, _ in joined], axis=0), kernel[i, j])
        for r, (_, p) in enumerate(joined):
            terms[p].append(ys[r * n:(r + 1) * n])
    # An output pixel whose window lies wholly in the padding gets no term: zero.
    return jnp.stack([sum(t[1:], t[0]) if t else jnp.zeros((n, o), x.dtype) for t in terms],
                     axis=1).reshape(n, ho, wo, o)


def dense_matrix(kernel: jax.Array, h: int, w: int, stride: int, padding: int) -> jax.Array:
    """The conv on an h x w map as an (h*w*C, Ho*Wo*O) matrix: block (q, p) is the tap joining q to p, else 0."""
    k, _, c, o = kernel.shape
    zero = jnp.zeros((c, o), kernel.dtype)
    blocks = [[zero] * (out_size(h, k, stride, padding) * out_size(w, k, stride, padding)) for _ in range(h * w)]
    for (i, j), joined in tap_pairs(h, w, k, stride, padding).items():
        for q, p in joined:
            blocks[q][p] = kernel[i, j]
    return jnp.concatenate([jnp.concatenate(row, axis=1) for row in blocks], axis=0)


def dense_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """Conv on a map of a few pixels as one (N, H*W*C) x (H*W*C, Ho*Wo*O) matmul ("dense").

    Its dX is one matmul with the same matrix transposed. Its dW sums the
    blocks of an (H*W*C, Ho*Wo*O) gradient matrix back into the taps, which
    is slow for wide layers: use it for forward and dX only.
    """
    n, h, w, c = x.shape
    k, _, _, o = kernel.shape
    ho, wo = out_size(h, k, stride, padding), out_size(w, k, stride, padding)
    y = jnp.dot(x.reshape(n, h * w * c), dense_matrix(kernel, h, w, stride, padding))
    return y.reshape(n, ho, wo, o)


def conv_by(method: str, x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    if method == "xla":
        return xla_conv(x, kernel, stride, padding)
    if method == "xla16":
        return batch_chunked_xla_conv(x, kernel, stride, padding)
    if method == "im2col":
        return im2col_conv(x, kernel, stride, padding)
    if method == "im2colT":
        return im2colt_conv(x, kernel, stride, padding)
    if method == "shift":
        return shift_conv(x, kernel, stride, padding)
    if method == "s2d":
        return space_to_depth_conv(x, kernel, stride, padding)
    if method == "pairs":
        return pairs_conv(x, kernel, stride, padding)
    if method == "dense":
        return dense_conv(x, kernel, stride, padding)
    raise ValueError(f"unknown conv formulation {method!r}; known: {FORMULATIONS}")


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def conv2d_fast(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
                plan: tuple[str, str, str]) -> jax.Array:
    """Conv whose forward / dX / dW use the formulations in `plan` = (fwd, dx, dw).

    dX is the transpose of `conv_by(plan[1], dx, kernel)` in dx: "xla" gives
    XLA's transposed conv, "im2col" gives col2im (dY @ W^T then pad-and-add).
    dW is the transpose of `conv_by(plan[2], x, dkernel)` in dkernel: "xla"
    gives XLA's kernel-gradient conv, "im2col" gives patches^T @ dY.
    """
    return conv_by(plan[0], x, kernel, stride, padding)


def _conv2d_fast_jvp(stride, padding, plan, primals, tangents):
    x, kernel = primals
    dx, dk = tangents
    y = conv2d_fast(x, kernel, stride, padding, plan)
    # Both terms are linear in the tangents; reverse mode transposes them.
    # Symbolic zeros (e.g. the input images need no gradient) skip their term
    # instead of convolving a tensor of zeros.
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(conv_by(plan[1], dx, kernel, stride, padding))
    if not isinstance(dk, SymbolicZero):
        terms.append(conv_by(plan[2], x, dk, stride, padding))
    if not terms:
        return y, jnp.zeros_like(y)
    return y, terms[0] if len(terms) == 1 else terms[0] + terms[1]


conv2d_fast.defjvp(_conv2d_fast_jvp, symbolic_zeros=True)
