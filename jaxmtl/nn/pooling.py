"""Pooling with torch's padding and gradient semantics (NHWC)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


def _window_views(x: jax.Array, kernel_size: int, stride: int, padding: int,
                  pad_value: float) -> list[jax.Array]:
    """The k*k strided views xpad[:, s*ho + i, s*wo + j, :] in row-major tap order (i, j).

    torch pads `padding` on every side with -inf (padding never wins the max);
    tangents are padded with 0 (the views must stay linear in them). The padding
    is symmetric and spelled out for the same reason as in conv2d: 'SAME'
    would pad a stride-2 pool asymmetrically.
    """
    n, h, w, c = x.shape
    k, s, p = kernel_size, stride, padding
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=pad_value) if p else x
    return [lax.slice(xp, (0, i, j, 0), (n, i + s * (ho - 1) + 1, j + s * (wo - 1) + 1, c), (1, s, s, 1))
            for i in range(k) for j in range(k)]


@partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def max_pool2d(x: jax.Array, kernel_size: int, stride: int, padding: int) -> jax.Array:
    """torch.nn.MaxPool2d(kernel_size, stride, padding) on NHWC input, torch's gradient included.

    Forward: the max over the k*k shifted strided views (exact, like any max).
    Gradient (the custom_jvp below): each output's gradient goes to exactly one
    input, the FIRST maximum of its window in row-major order, as torch's
    kernels pick it (they keep the running max on a strict `>`); overlapping
    windows add up. lax.reduce_window routes ties the same way, but XLA:CPU
    lowers its gradient (select_and_scatter) to an arg-max reduce-window plus
    a scatter, measured slower in the whole `small` step (benchmarks/README.md).
    Difference from torch: a NaN in a window propagates to the output here too,
    but its gradient is dropped (torch routes it to the NaN); batches with NaN
    are refused before they get here.
    """
    views = _window_views(x, kernel_size, stride, padding, -jnp.inf)
    out = views[0]
    for v in views[1:]:
        out = jnp.maximum(out, v)
    return out


@max_pool2d.defjvp
def _max_pool2d_jvp(kernel_size, stride, padding, primals, tangents):
    (x,), (dx,) = primals, tangents
    views = _window_views(x, kernel_size, stride, padding, -jnp.inf)
    out = max_pool2d(x, kernel_size, stride, padding)
    # The winning tap per output, scanned last to first so the first maximum wins.
    taps = len(views)
    winner = jnp.full(out.shape, taps - 1, jnp.int8 if taps <= 127 else jnp.int32)
    for t in range(taps - 2, -1, -1):
        winner = jnp.where(views[t] == out, jnp.asarray(t, winner.dtype), winner)
    # Materialized once: otherwise XLA fuses the compare chain into each of the
    # k*k consumers below (and into their transposes) and recomputes it there.
    winner = lax.optimization_barrier(winner)
    # Linear in dx, one independent term per tap: reverse mode transposes each
    # slice into a pad, so each output's cotangent lands on its winning input.
    dviews = _window_views(dx, kernel_size, stride, padding, 0.0)
    dout = sum(jnp.where(winner == t, dv, jnp.zeros_like(dv)) for t, dv in enumerate(dviews))
    return out, dout


def global_avg_pool(x: jax.Array) -> jax.Array:
    """nn.AdaptiveAvgPool2d(1) + flatten: (N, H, W, C) -> (N, C)."""
    return jnp.mean(x, axis=(1, 2))
