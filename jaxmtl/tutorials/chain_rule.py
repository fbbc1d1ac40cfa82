"""The chain rule on scalars, and gradients as sums over paths.

PyTorch marks leaves with requires_grad=True and reads .grad after
loss.backward(); JAX differentiates a function with respect to the arguments
named by `argnums` and returns the gradients. Nothing is stored on arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmtl.tutorials.inputs import linear_inputs


def linear_loss(inputs: dict | None = None) -> dict:
    """z = w*x + b, loss = (z - target)^2: dloss/dw = 2 (z - target) x, dloss/db = 2 (z - target)."""
    v = {k: jnp.asarray(a) for k, a in (inputs or linear_inputs()).items()}

    def loss(w, b):
        z = w * v["x"] + b
        return jnp.sum((z - v["target"]) ** 2)

    value, (gw, gb) = jax.value_and_grad(loss, argnums=(0, 1))(v["w"], v["b"])
    return {"loss": np.asarray(value), "w_grad": np.asarray(gw), "b_grad": np.asarray(gb)}


def mul_grad() -> dict:
    """y = W * x at W = 3, x = 2: dy/dW = x = 2, dy/dx = W = 3."""
    w, x = jnp.array([3.0]), jnp.array([2.0])
    gw, gx = jax.grad(lambda w, x: jnp.sum(w * x), argnums=(0, 1))(w, x)
    return {"W_grad": np.asarray(gw), "x_grad": np.asarray(gx)}


def scalar_chain() -> dict:
    """c = a*b, d = c + 1, loss = d^2 at a = 2, b = 3: dloss/da = 2 d b = 42, dloss/db = 2 d a = 28."""

    def loss(a, b):
        c = a * b
        d = c + 1
        return d ** 2

    value, (ga, gb) = jax.value_and_grad(loss, argnums=(0, 1))(jnp.array(2.0), jnp.array(3.0))
    return {"loss": np.asarray(value), "a_grad": np.asarray(ga), "b_grad": np.asarray(gb)}


def two_paths(theta: float = 1.5) -> dict:
    """L = A + B, A = theta^2, B = 2 theta: dL/dtheta = 2 theta + 2 is the sum of one term per path."""
    t = jnp.asarray(theta)

    def loss_ab(a, b):  # the last op, differentiated at its inputs: dL/dA, dL/dB
        return a + b

    a, pull_a = jax.vjp(lambda t: t ** 2, t)
    b, pull_b = jax.vjp(lambda t: 2 * t, t)
    dl_da, dl_db = jax.grad(loss_ab, argnums=(0, 1))(a, b)
    (path1,) = pull_a(dl_da)  # dL/dA * dA/dtheta
    (path2,) = pull_b(dl_db)  # dL/dB * dB/dtheta
    total = jax.grad(lambda t: t ** 2 + 2 * t)(t)
    return {"path1": np.asarray(path1), "path2": np.asarray(path2), "grad": np.asarray(total)}


def four_op_paths(theta: float = 1.0) -> dict:
    """C = theta^3, D = sin(theta), E = C*D, L = ln(E): the sum over the paths via C and via D is the gradient."""
    t = jnp.asarray(theta)
    c, pull_c = jax.vjp(lambda t: t ** 3, t)
    d, pull_d = jax.vjp(jnp.sin, t)
    dl_de = jax.grad(jnp.log)(c * d)
    dl_dc, dl_dd = jax.grad(lambda c, d: c * d, argnums=(0, 1))(c, d)
    (path1,) = pull_c(dl_de * dl_dc)  # 1/E * D * 3 theta^2
    (path2,) = pull_d(dl_de * dl_dd)  # 1/E * C * cos(theta)
    total = jax.grad(lambda t: jnp.log(t ** 3 * jnp.sin(t)))(t)
    return {"path1": np.asarray(path1), "path2": np.asarray(path2), "grad": np.asarray(total)}
