"""The one-layer network of the autograd tutorial: gradients, the graph, no_grad/detach, retain_graph, Jacobian products.

Network: z = x @ w + b, loss = BCE-with-logits(z, y), mean over the 3 outputs
(torch's default reduction), x = ones(5), y = zeros(3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxmtl.tutorials.inputs import one_layer_inputs


def _arrays(inputs: dict | None) -> dict:
    return {k: jnp.asarray(a) for k, a in (inputs or one_layer_inputs()).items()}


def _bce_loss(w, b, x, y):
    z = jnp.matmul(x, w) + b
    # F.binary_cross_entropy_with_logits(z, y) == mean of optax's elementwise version.
    return jnp.mean(optax.sigmoid_binary_cross_entropy(z, y))


def one_layer_bce(inputs: dict | None = None) -> dict:
    """BCE-with-logits loss of z = x @ w + b: its gradients with respect to w and b."""
    v = _arrays(inputs)
    loss, (gw, gb) = jax.value_and_grad(_bce_loss, argnums=(0, 1))(v["w"], v["b"], v["x"], v["y"])
    return {"loss": np.asarray(loss), "w_grad": np.asarray(gw), "b_grad": np.asarray(gb)}


def grad_fn_jaxpr(inputs: dict | None = None) -> dict:
    """The recorded computation: torch's grad_fn chain corresponds to the jaxpr of the loss and of its gradient."""
    v = _arrays(inputs)
    forward = jax.make_jaxpr(_bce_loss)(v["w"], v["b"], v["x"], v["y"])
    backward = jax.make_jaxpr(jax.grad(_bce_loss, argnums=(0, 1)))(v["w"], v["b"], v["x"], v["y"])
    primitives = sorted({str(e.primitive) for e in forward.jaxpr.eqns})
    return {"forward_jaxpr": str(forward), "grad_jaxpr": str(backward), "primitives": ", ".join(primitives)}


def no_grad_detach(inputs: dict | None = None) -> dict:
    """A stopped value is a constant: torch.no_grad() / z.detach() correspond to lax.stop_gradient.

    loss = sum(stop_gradient(z) * z): the stopped factor is a constant, so
    dloss/dw = outer(x, z) instead of outer(x, 2 z).
    """
    v = _arrays(inputs)

    def loss(w, b):
        z = jnp.matmul(v["x"], w) + b
        return jnp.sum(lax.stop_gradient(z) * z)

    gw, gb = jax.grad(loss, argnums=(0, 1))(v["w"], v["b"])
    z = jnp.matmul(v["x"], v["w"]) + v["b"]
    return {"z": np.asarray(z), "w_grad": np.asarray(gw), "b_grad": np.asarray(gb)}


def retain_graph(inputs: dict | None = None) -> dict:
    """Two losses on one graph: two backward passes add up to the gradient of their sum.

    torch: loss1.backward(retain_graph=True); loss2.backward() accumulates in .grad.
    JAX: jax.vjp linearises once; the returned function can be called any
    number of times (there is no graph to free), and the sum is explicit.
    Also y = 2x, loss = y.sum(), backward twice: x.grad = 2 + 2.
    """
    v = _arrays(inputs)

    def losses(w, b):
        z = jnp.matmul(v["x"], w) + b
        return jnp.mean(optax.sigmoid_binary_cross_entropy(z, v["y"])), jnp.mean(z ** 2)

    (l1, l2), pullback = jax.vjp(losses, v["w"], v["b"])
    one, zero = jnp.ones_like(l1), jnp.zeros_like(l1)
    g1w, g1b = pullback((one, zero))
    g2w, g2b = pullback((zero, one))  # the same linearisation, used a second time
    gsw, gsb = jax.grad(lambda w, b: sum(losses(w, b)), argnums=(0, 1))(v["w"], v["b"])
    x = jnp.array([0.5, -1.0, 2.0])
    _, pull_x = jax.vjp(lambda x: jnp.sum(x * 2), x)
    x_grad_twice = pull_x(jnp.ones(()))[0] + pull_x(jnp.ones(()))[0]
    return {"w_grad_1_plus_2": np.asarray(g1w + g2w), "b_grad_1_plus_2": np.asarray(g1b + g2b),
            "w_grad_of_sum": np.asarray(gsw), "b_grad_of_sum": np.asarray(gsb),
            "x_grad_after_two_backwards": np.asarray(x_grad_twice)}


def jacobian_product() -> dict:
    """inp = eye(4, 5), out = (inp + 1)^2 .T: v^T J with v = ones, twice (accumulated), then after zeroing."""
    inp = jnp.eye(4, 5)
    out, pullback = jax.vjp(lambda a: ((a + 1) ** 2).T, inp)
    v = jnp.ones_like(out)
    (first,) = pullback(v)
    grad = first + pullback(v)[0]  # torch accumulates into inp.grad; here the sum is written out
    (after_zero,) = pullback(v)     # "inp.grad.zero_()": nothing to zero, a fresh pullback
    return {"first_call": np.asarray(first), "second_call": np.asarray(grad),
            "after_zeroing": np.asarray(after_zero)}
