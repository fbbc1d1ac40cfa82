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
    windows add up. lax.reduce_window routes ties the same way, but XLA:CPU
    lowers its gradient (select_and_scatter) to an arg-max reduce-window plus
    a scatter, measured slower in the whole `small` step (benchmarks/README.md).
    Difference from torch: a NaN in a window propagates to the output here too,
    but its gradient is dropped (torch routes it to the NaN); batches with NaN
    are refused before they get here.
    """
    # torch pads with -inf: padding never wins the max.
    return reduce(jnp.maximum, shifted(x, kernel_size, stride, padding, pad_value=-jnp.inf))


@max_pool2d.defjvp
def _max_pool2d_jvp(kernel_size, stride, padding, primals, tangents):
    (x,), (dx,) = primals, tangents
    views = shifted(x, kernel_size, stride, padding, pad_value=-jnp.inf)
    out = reduce(jnp.maximum, views)
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
    dviews = shifted(dx, kernel_size, stride, padding)  # zero padding: linear in dx
    dout = sum(jnp.where(winner == t, dv, jnp.zeros_like(dv)) for t, dv in enumerate(dviews))
    return out, dout


def global_avg_pool(x: jax.Array) -> jax.Array:
    """nn.AdaptiveAvgPool2d(1) + flatten: (N, H, W, C) -> (N, C)."""
    return jnp.mean(x, axis=(1, 2))
