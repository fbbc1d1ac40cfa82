"""Pooling with torch's padding and gradient semantics (NHWC)."""

from __future__ import annotations

from functools import partial, reduce

import jax
import jax.numpy as jnp
from jax import lax

from jaxmtl.nn.conv_impl import shifted


@partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def max_pool2d(x: jax.Array, kernel_size: int, stride: int, padding: int) -> jax.Array:
    """torch.nn.MaxPool2d(kernel_size, stride, padding) on NHWC input, torch's gradient included.

    Forward: the max over the k*k shifted strided views (exact, like any max).
    Gradient (the custom_jvp below): each output's gradient goes to exactly one
    input, the FIRST maximum of its window in row-major order, as torch's
    kernels pick it (they keep the running max on a strict `>`); overlapping
    windows add up. As in torch, the winner is kept as an index: the tangent
    gathers it, so reverse mode is one scatter-add of the output gradient.
    lax.reduce_window routes ties the same way, but XLA:CPU lowers its
    gradient (select_and_scatter) to an arg-max reduce-window plus a scatter,
    measured slower in the whole `small` step (benchmarks/README.md).
    Difference from torch: a NaN in a window propagates to the output here too,
    but its gradient goes to the window's last tap, or nowhere if that tap is
    padding (torch routes it to the NaN); batches with NaN are refused before
    they get here.
    """
    # torch pads with -inf: padding never wins the max.
    return reduce(jnp.maximum, shifted(x, kernel_size, stride, padding, pad_value=-jnp.inf))


def first_max_index(x: jax.Array, kernel_size: int, stride: int, padding: int) -> tuple[jax.Array, jax.Array]:
    """(max pool of x, flat index of each window's first maximum into x zero-padded by `padding`).

    The index addresses x padded symmetrically, (N, H + 2p, W + 2p, C)
    flattened, which holds every window. Padding taps never win, not even in
    a window whose inputs are all -inf: torch then routes the gradient to the
    window's first input, and so does this.
    """
    k, s, p = kernel_size, stride, padding
    n, h, w, c = x.shape
    hp, wp = h + 2 * p, w + 2 * p
    if n * hp * wp * c > jnp.iinfo(jnp.int32).max:
        raise ValueError(f"max_pool2d: padded input {(n, hp, wp, c)} has too many elements for int32 indices")
    views = shifted(x, k, s, p, pad_value=-jnp.inf)
    out = reduce(jnp.maximum, views)
    shape = out.shape
    iota = partial(lax.broadcasted_iota, jnp.int32, shape)
    # Index of tap (0, 0) of each window: the window of output (a, b) starts at padded (s*a, s*b).
    corner = ((iota(0) * hp + s * iota(1)) * wp + s * iota(2)) * c + iota(3)
    # Scanned last to first so the first maximum wins; no match (NaN) leaves the last tap.
    index = corner + ((k - 1) * wp + (k - 1)) * c
    for t in range(k * k - 2, -1, -1):
        i, j = divmod(t, k)
        wins = views[t] == out
        # Only taps that can fall into the padding pay for a bounds check.
        if i < p or s * (shape[1] - 1) + i - p >= h:
            row = s * iota(1) + i - p
            wins &= (row >= 0) & (row < h)
        if j < p or s * (shape[2] - 1) + j - p >= w:
            col = s * iota(2) + j - p
            wins &= (col >= 0) & (col < w)
        index = jnp.where(wins, corner + (i * wp + j) * c, index)
    return out, index


@max_pool2d.defjvp
def _max_pool2d_jvp(kernel_size, stride, padding, primals, tangents):
    (x,), (dx,) = primals, tangents
    # Why an index rather than a per-tap mask: XLA:CPU fuses a mask (a chain
    # of k*k compares and selects) into each of the k*k terms of the input
    # gradient and recomputes it there, from a second copy of the padded
    # input; lax.optimization_barrier does not survive its pipeline. A
    # gather's index is never fused, so it is computed once, and the gather
    # transposes into a single scatter-add (whole `small` step, interleaved
    # with torch.compile: -2.9%, -3.3%, and -2.1% with the bounds checks).
    out, index = first_max_index(x, kernel_size, stride, padding)
    p = padding
    dx_padded = jnp.pad(dx, ((0, 0), (p, p), (p, p), (0, 0)))  # zero padding: linear in dx
    return out, dx_padded.reshape(-1).at[index].get(mode="promise_in_bounds")


def global_avg_pool(x: jax.Array) -> jax.Array:
    """nn.AdaptiveAvgPool2d(1) + flatten: (N, H, W, C) -> (N, C)."""
    return jnp.mean(x, axis=(1, 2))
