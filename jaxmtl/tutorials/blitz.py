"""The blitz autograd tutorial and its companions: Q = 3a^3 - b^2, VJPs, the DAG, backward's gradient, an MLP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmtl.tutorials import inputs as I


def _q(a, b):
    return 3 * a ** 3 - b ** 2


def q_backward() -> dict:
    """Q = 3a^3 - b^2 with Q.backward(gradient=[1, 1]): a.grad = 9a^2, b.grad = -2b."""
    a, b = jnp.array([2.0, 3.0]), jnp.array([6.0, 4.0])
    q, pullback = jax.vjp(_q, a, b)
    ga, gb = pullback(jnp.ones_like(q))  # external_grad = [1, 1]; same as jax.grad(lambda a, b: _q(a, b).sum())
    return {"Q": np.asarray(q), "a_grad": np.asarray(ga), "b_grad": np.asarray(gb),
            "9a^2 == a.grad": np.asarray(9 * a ** 2 == ga), "-2b == b.grad": np.asarray(-2 * b == gb)}


def vjp_jacobian(v: tuple[float, float] = (0.5, -1.0)) -> dict:
    """J^T v from the full Jacobian of Q equals the vector-Jacobian product that backward(gradient=v) computes."""
    a, b = jnp.array([2.0, 3.0]), jnp.array([6.0, 4.0])
    ja, jb = jax.jacrev(_q, argnums=(0, 1))(a, b)  # (2, 2) each: dQ_i / da_j
    v = jnp.asarray(v)
    _, pullback = jax.vjp(_q, a, b)
    va, vb = pullback(v)
    return {"jacobian_a": np.asarray(ja), "jacobian_b": np.asarray(jb),
            "J_a^T v": np.asarray(ja.T @ v), "vjp_a": np.asarray(va),
            "J_b^T v": np.asarray(jb.T @ v), "vjp_b": np.asarray(vb)}


def _depends(f, args: tuple, argnum: int) -> list[bool]:
    """For each output of f: does it change when args[argnum] changes (torch: requires_grad)?"""
    tangents = tuple(jnp.ones_like(a) if i == argnum else jnp.zeros_like(a) for i, a in enumerate(args))
    _, outs = jax.jvp(f, args, tangents)
    return [bool(jnp.any(t != 0)) for t in outs]


def requires_grad_propagation() -> dict:
    """Which results need gradients: those that depend on an input that requires them.

    JAX has no requires_grad flag: you differentiate with respect to chosen
    arguments, and exactly the results that depend on them carry tangents.
    """
    x, y, z = (jnp.asarray(a) for a in I.rand_inputs((5, 5), 3))
    first = _depends(lambda x, y, z: (x + y, x + z), (x, y, z), argnum=2)  # z requires grad
    second = _depends(lambda x, y, z: (x + y, (x + y) + z, y + z), (x, y, z), argnum=0)  # x requires grad
    return {"z requires grad -> (a = x + y, b = x + z)": np.asarray(first),
            "x requires grad -> (a = x + y, b = a + z, c = y + z)": np.asarray(second)}


def x1_x2_x3() -> dict:
    """y2 = x1*x2 + x3: z = sum(y2).backward() and y2.backward(ones) both give [4,5,6], [1,2,3], [1,1,1]."""
    x1, x2, x3 = jnp.array([1.0, 2.0, 3.0]), jnp.array([4.0, 5.0, 6.0]), jnp.array([7.0, 8.0, 9.0])

    def y2_of(x1, x2, x3):
        return x1 * x2 + x3

    g1, g2, g3 = jax.grad(lambda *xs: jnp.sum(y2_of(*xs)), argnums=(0, 1, 2))(x1, x2, x3)
    _, pullback = jax.vjp(y2_of, x1, x2, x3)
    v1, v2, v3 = pullback(jnp.ones(3))  # y2.backward(external_grad = [1, 1, 1])
    return {"x1_grad": np.asarray(g1), "x2_grad": np.asarray(g2), "x3_grad": np.asarray(g3),
            "x1_grad_vjp": np.asarray(v1), "x2_grad_vjp": np.asarray(v2), "x3_grad_vjp": np.asarray(v3)}


def mlp_intermediates(inputs: dict | None = None) -> dict:
    """y1 = x w1 + b1, y2 = y1 w2 + b2, l = sum((y - y2)^2): gradients of y2, y1 and the weights, by autodiff and by hand."""
    v = {k: jnp.asarray(a) for k, a in (inputs or I.mlp_inputs()).items()}

    def tail2(y2):
        return jnp.sum((v["y"] - y2.squeeze()) ** 2)

    def tail1(y1):
        return tail2(y1 @ v["w2"] + v["b2"])

    def loss(w1, b1, w2, b2):
        return tail2((v["x"] @ w1 + b1) @ w2 + b2)

    y1 = v["x"] @ v["w1"] + v["b1"]
    y2 = y1 @ v["w2"] + v["b2"]
    y2_grad = jax.grad(tail2)(y2)  # autograd.grad(l, y2): the tail differentiated at the intermediate
    y1_grad = jax.grad(tail1)(y1)
    l, grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(v["w1"], v["b1"], v["w2"], v["b2"])
    return {"l": np.asarray(l), "y2_grad": np.asarray(y2_grad),
            "y2_grad_hand 2(y2 - y)": np.asarray(2 * (y2.squeeze() - v["y"]))[:, None],
            "y1_grad": np.asarray(y1_grad), "y1_grad_hand y2_grad @ w2^T": np.asarray(y2_grad @ v["w2"].T),
            "w1_grad": np.asarray(grads[0]), "w1_grad_hand x^T @ y1_grad": np.asarray(v["x"].T @ y1_grad),
            "b1_grad": np.asarray(grads[1]), "b1_grad_hand column sums": np.asarray(y1_grad.sum(axis=0)),
            "w2_grad": np.asarray(grads[2]), "b2_grad": np.asarray(grads[3])}


def mlp_printed_values() -> dict:
    """The same MLP at printed values of y, y2 and y1_grad: l, y2_grad and b1.grad recomputed from them."""
    y, y2 = jnp.asarray(I.PRINTED_MLP_Y), jnp.asarray(I.PRINTED_MLP_Y2)
    l, y2_grad = jax.value_and_grad(lambda y2: jnp.sum((y - y2.squeeze()) ** 2))(y2)
    v = I.mlp_inputs()  # x and w1 were not printed; the b1 pullback does not depend on them
    _, pullback = jax.vjp(lambda b1: jnp.asarray(v["x"]) @ jnp.asarray(v["w1"]) + b1, jnp.zeros(4))
    (b1_grad,) = pullback(jnp.asarray(I.PRINTED_MLP_Y1_GRAD))
    return {"l": np.asarray(l), "y2_grad": np.asarray(y2_grad), "b1_grad": np.asarray(b1_grad)}


def ones_mean() -> dict:
    """x = ones(2, 2), y = x + 2, z = 3 y^2, out = mean(z) = 27: x.grad = 6 (x + 2) / 4 = 4.5."""
    x = jnp.ones((2, 2))

    def forward(x):
        y = x + 2
        z = y * y * 3
        return z.mean(), (y, z)

    (out, (y, z)), x_grad = jax.value_and_grad(forward, has_aux=True)(x)  # d out/dx = 6 (x + 2) / 4 = 4.5
    return {"y": np.asarray(y), "z": np.asarray(z), "out": np.asarray(out), "x_grad": np.asarray(x_grad)}
