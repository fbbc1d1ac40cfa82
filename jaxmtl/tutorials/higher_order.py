"""Higher-order derivatives, and the jit cache as the counterpart of the dynamic graph.

torch needs create_graph=True to differentiate a gradient again, because a
gradient is normally computed outside the graph. In JAX grad returns a
function, so grad(grad(f)) is just composition.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def higher_order(x: float = 2.0) -> dict:
    """f = x^3 at x = 2: f' = 12, f'' = 12, f''' = 6."""
    f = lambda x: x ** 3  # noqa: E731
    x = jnp.asarray(x)
    return {"d1": np.asarray(jax.grad(f)(x)), "d2": np.asarray(jax.grad(jax.grad(f))(x)),
            "d3": np.asarray(jax.grad(jax.grad(jax.grad(f)))(x))}


def hessian_fn(x):
    """f(x) = x0^2 x1 + x0 sin(x2)."""
    return x[0] ** 2 * x[1] + x[0] * jnp.sin(x[2])


def hessian(x: tuple[float, float, float] = (1.0, 2.0, 3.0)) -> dict:
    """The Hessian of x0^2 x1 + x0 sin(x2) at (1, 2, 3)."""
    x = jnp.asarray(x)
    return {"hessian": np.asarray(jax.hessian(hessian_fn)(x)),
            "jacfwd(jacrev)": np.asarray(jax.jacfwd(jax.jacrev(hessian_fn))(x))}


def retracing() -> dict:
    """torch records a new graph on every call; jax.jit traces once per input signature.

    A jitted function is traced (its Python body runs) once per input shape,
    dtype and static-argument value; later calls with the same signature
    reuse the compiled program from the cache, whatever the values.
    """
    traces = []

    @jax.jit
    def loss(x):
        traces.append(x.shape)  # a Python side effect: runs at trace time only
        return jnp.sum(jnp.where(x.sum() > 0, x * 2, -x))  # data-dependent choice without Python `if`

    grad = jax.grad(loss)
    calls = [np.array([1.0, 2.0, 3.0]), np.array([-4.0, 5.0, -9.0]), np.array([1.0, 2.0, 3.0, 4.0]),
             np.array([3.0, 2.0, 1.0])]
    grads, traces_after = [], []
    for x in calls:
        grads.append(np.asarray(grad(jnp.asarray(x))))
        traces_after.append(len(traces))
    return {"grads": np.concatenate(grads), "traces_after_each_call": np.asarray(traces_after),
            "traced_shapes": str(traces)}
