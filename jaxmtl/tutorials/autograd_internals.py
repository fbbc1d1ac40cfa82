"""PyTorch's autograd internals as JAX transformations.

Control flow, custom rules (autograd.Function <-> custom_vjp), non-scalar
backward (vjp with a cotangent), gradients of intermediates, ReLU at 0,
checkpointing, clipping and mixed precision with loss scaling.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxmtl.tutorials.inputs import mixed_precision_inputs, mlp_stack_inputs


def _branchy(x):
    # Python `if` on a value: works under jax.grad (the primal values are concrete),
    # raises under jax.jit (x is an abstract tracer there).
    if x.sum() > 0:
        return x * 2
    return x * (-1)


def _branchy_cond(x):
    return lax.cond(x.sum() > 0, lambda x: x * 2, lambda x: x * (-1), x)


def control_flow() -> dict:
    """Data-dependent control flow: forward(x) with `if x.sum() > 0`, at x = [3.0] and [-3.0]."""
    pos, neg = jnp.array([3.0]), jnp.array([-3.0])
    grad = jax.grad(lambda x: _branchy(x).sum())
    grad_cond = jax.jit(jax.grad(lambda x: _branchy_cond(x).sum()))
    try:
        jax.jit(grad)(pos)
        jit_error = ""
    except jax.errors.TracerBoolConversionError as e:
        jit_error = type(e).__name__
    return {"grad_pos": np.asarray(grad(pos)), "grad_neg": np.asarray(grad(neg)),
            "grad_pos_lax_cond_jit": np.asarray(grad_cond(pos)), "grad_neg_lax_cond_jit": np.asarray(grad_cond(neg)),
            "python_if_under_jit": jit_error}


def custom_function() -> dict:
    """A custom backward rule: MyAdd(torch.autograd.Function) as a jax.custom_vjp, at a = 2, b = 3."""

    @jax.custom_vjp
    def my_add(x, y):  # the forward
        return x + y

    def my_add_fwd(x, y):
        return x + y, (x, y)  # ctx.save_for_backward(x, y): the residuals

    def my_add_bwd(residuals, g):
        return g * 1, g * 1  # one cotangent per primal input, like backward's tuple

    my_add.defvjp(my_add_fwd, my_add_bwd)
    a, b = jnp.array(2.0), jnp.array(3.0)
    c, (ga, gb) = jax.value_and_grad(my_add, argnums=(0, 1))(a, b)
    jaxpr = str(jax.make_jaxpr(my_add)(a, b))
    return {"c": np.asarray(c), "a_grad": np.asarray(ga), "b_grad": np.asarray(gb),
            "custom_rule_in_jaxpr": "custom_vjp_call" in jaxpr}


def nonscalar_backward() -> dict:
    """Backward from a non-scalar: y = 2x at x = [1, 2] with gradient v = [0.1, 0.2] gives x.grad = v^T J = [0.2, 0.4]."""
    x = jnp.array([1.0, 2.0])
    _, pullback = jax.vjp(lambda x: x * 2, x)
    (gx,) = pullback(jnp.array([0.1, 0.2]))
    return {"x_grad": np.asarray(gx)}


def retain_grad() -> dict:
    """Gradients of intermediates: y in y = 2x, and c, d in the chain loss = (a*b + 1)^2.

    JAX keeps no gradients anywhere: to see dloss/dy, split the function at y
    and differentiate the tail at y; the head's pullback finishes the chain.
    """
    x = jnp.array(2.0)
    y, pull_head = jax.vjp(lambda x: x * 2, x)
    y_grad = jax.grad(lambda y: y)(y)  # the tail is the identity: y.backward()
    (x_grad,) = pull_head(y_grad)
    a, b = jnp.array(2.0), jnp.array(3.0)
    c, pull_c = jax.vjp(lambda a, b: a * b, a, b)
    d, pull_d = jax.vjp(lambda c: c + 1, c)
    d_grad = jax.grad(lambda d: d ** 2)(d)
    (c_grad,) = pull_d(d_grad)
    a_grad, b_grad = pull_c(c_grad)
    return {"y_grad": np.asarray(y_grad), "x_grad": np.asarray(x_grad), "d_grad": np.asarray(d_grad),
            "c_grad": np.asarray(c_grad), "a_grad": np.asarray(a_grad), "b_grad": np.asarray(b_grad)}


def relu_at_zero() -> dict:
    """ReLU's gradient at x = [-1, 0, 2] is [0, 0, 1]: both frameworks take relu'(0) = 0."""
    x = jnp.array([-1.0, 0.0, 2.0])
    _, pullback = jax.vjp(jax.nn.relu, x)
    return {"x_grad": np.asarray(pullback(jnp.ones(3))[0])}


def _mlp_loss(ws, x, remat: bool):
    def layer(h, w):
        return jnp.tanh(h @ w)

    layer = jax.checkpoint(layer) if remat else layer  # recompute activations in the backward
    h = x
    for w in ws:
        h = layer(h, w)
    return jnp.sum(h ** 2)


def checkpointing(inputs: dict | None = None) -> dict:
    """Gradient checkpointing (recompute activations in the backward) leaves the gradients unchanged."""
    v = {k: jnp.asarray(a) for k, a in (inputs or mlp_stack_inputs()).items()}
    ws = list(v["ws"])
    g_plain = jax.grad(_mlp_loss)(ws, v["x"], False)
    g_remat = jax.grad(_mlp_loss)(ws, v["x"], True)
    jaxpr = str(jax.make_jaxpr(jax.grad(_mlp_loss), static_argnums=2)(ws, v["x"], True))
    return {"ws_grad": np.stack([np.asarray(g) for g in g_plain]),
            "ws_grad_checkpointed": np.stack([np.asarray(g) for g in g_remat]),
            "remat_in_jaxpr": "checkpoint" in jaxpr or "remat" in jaxpr}


def grad_clipping(inputs: dict | None = None, max_norm: float = 1.0) -> dict:
    """Gradient clipping by global norm: clip_grad_norm_(params, 1.0) corresponds to optax.clip_by_global_norm(1.0).

    Deliberate difference: torch scales by max_norm / (norm + 1e-6), optax by
    max_norm / norm; the clipped gradients differ by ~1e-6 / norm relative.
    """
    v = {k: jnp.asarray(a) for k, a in (inputs or mlp_stack_inputs()).items()}
    grads = jax.grad(lambda ws: 100.0 * _mlp_loss(list(ws), v["x"], False))(v["ws"])
    clip = optax.clip_by_global_norm(max_norm)
    clipped, _ = clip.update(grads, clip.init(grads))
    return {"total_norm": np.asarray(optax.tree.norm(grads)), "clipped_grad": np.asarray(clipped),
            "clipped_norm": np.asarray(optax.tree.norm(clipped))}


def _mp_loss(w, x, dtype):
    """loss = (x . w)^2 computed in `dtype` from float32 master weights; returned as float32."""
    y = jnp.dot(x.astype(dtype), w.astype(dtype))
    return (y * y).astype(jnp.float32)


def mixed_precision(init_scale: float = 2.0 ** 16, static_scale: float = 1024.0) -> dict:
    """Mixed precision: gradients of (x . w)^2, about 1e-8, in bfloat16, float16, and float16 with loss scaling.

    bfloat16 keeps float32's 8 exponent bits: 1e-8 is representable, no loss
    scaling needed (torch uses autocast(bfloat16) without a GradScaler).
    float16 has 5: normals stop at 6.1e-5, subnormals at 6e-8, the maximum is
    65504. The 2e-8..8e-8 gradients flush to 0 or to one subnormal step, so the
    loss is multiplied by a scale S before the backward and the grads divided
    by S in float32 (what GradScaler does). S = 2^16 (GradScaler's default)
    itself overflows float16 (65536 > 65504): the grads become inf, the step is
    skipped and S is halved, exactly GradScaler's dynamic rule. JAX has no
    built-in scaler; the few lines below are the whole mechanism.
    """
    v = mixed_precision_inputs()  # float32
    x, w = jnp.asarray(v["x"]), jnp.asarray(v["w"])

    def grads(dtype, scale=1.0):
        g = jax.grad(lambda w: _mp_loss(w, x, dtype) * jnp.float32(scale))(w)
        return g / jnp.float32(scale)

    scales, found_inf, scale = [], [], init_scale
    while True:  # dynamic loss scaling: skip the step and halve on inf/nan
        g = grads(jnp.float16, scale)
        scales.append(scale)
        found_inf.append(not bool(jnp.all(jnp.isfinite(g))))
        if not found_inf[-1]:
            break
        scale /= 2
    return {"grad_float32": np.asarray(grads(jnp.float32)),
            "grad_bfloat16": np.asarray(grads(jnp.bfloat16)),
            "grad_float16_unscaled": np.asarray(grads(jnp.float16)),
            "grad_float16_static_scale": np.asarray(grads(jnp.float16, static_scale)),
            "dynamic_scales_tried": np.asarray(scales), "dynamic_found_inf": np.asarray(found_inf),
            "grad_float16_dynamic": np.asarray(g)}
