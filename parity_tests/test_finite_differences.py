"""A third opinion: finite differences in float64, independent of both autodiff systems.

If JAX and torch shared a wrong idea (the same wrong derivative), parity
would still pass; central differences of the function itself would not.
Small slices keep it to seconds: the GRU + heads sub-model, the ResNet stem
(strided conv, train-mode BatchNorm, max-pool), and directional derivatives of the whole
tiny model's loss (cheap: two loss evaluations per direction).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from jax.test_util import check_grads

import mutants
from jaxmtl.config import TINY
from jaxmtl.nn import max_pool2d

# check_grads compares AD against central differences with step EPS: truncation
# O(EPS^2) ~ 1e-12 and rounding O(1e-16 / EPS) ~ 1e-10 in float64, far below its
# float64 tolerance (1e-5), and a step this small is unlikely to cross a ReLU kink.
EPS = 1e-6

@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with mutants.one_torch_thread():
        yield



def _heads_loss_fn():
    """f(w_hh, b_hh, classifier kernel) -> total loss of the heads sub-model (train mode)."""
    pair = mutants.correct_heads_pair()
    batch = mutants.heads_batches(TINY, [31])[0][0]

    def f(w_hh, b_hh, cls_kernel):
        model = nnx.merge(pair.graphdef, pair.params, pair.batch_stats, pair.rest, copy=True)
        model.gru.w_hh[...] = w_hh
        model.gru.b_hh[...] = b_hh
        model.classifier.kernel[...] = cls_kernel
        return pair.jax_loss(model, batch, True)[0]

    model = nnx.merge(pair.graphdef, pair.params, pair.batch_stats, pair.rest, copy=True)
    args = (model.gru.w_hh[...], model.gru.b_hh[...], model.classifier.kernel[...])
    return jax.jit(f), args


def test_jax_heads_against_finite_differences():
    """order=2 checks first derivatives (jvp and vjp) and then the derivatives of those."""
    f, args = _heads_loss_fn()
    assert all(a.dtype == jnp.float64 for a in args)
    check_grads(f, args, order=2, modes=("fwd", "rev"), eps=EPS)


def _stem_fn():
    """f(x, conv1 kernel, bn1 scale) of the ResNet stem: 7x7/2 conv (pad 3), train-mode BN, ReLU,
    3x3/2 max-pool (pad 1): strided padding, BatchNorm's batch-statistics backward, pooling."""
    from jaxmtl.nn import BatchNorm2d, Conv2d

    # Built abstractly and filled from numpy: no JAX random-init kernels to compile.
    conv, bn = nnx.eval_shape(lambda: (Conv2d(3, 8, 7, stride=2, padding=3, rngs=nnx.Rngs(0)), BatchNorm2d(8)))
    graphdef, state = nnx.split((conv, bn))
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape) if a.dtype.kind == "f"
                                               else np.zeros(a.shape, a.dtype)), state)
    x = jnp.asarray(rng.standard_normal((2, 16, 16, 3)))
    weights = jnp.asarray(rng.standard_normal((2, 4, 4, 8)))

    def f(x, kernel, scale):
        conv, bn = nnx.merge(graphdef, state, copy=True)
        conv.kernel[...] = kernel
        bn.scale[...] = scale
        y = jax.nn.relu(bn(conv(x), train=True))
        return jnp.sum(weights * max_pool2d(y, kernel_size=3, stride=2, padding=1))

    conv, bn = nnx.merge(graphdef, state, copy=True)
    return jax.jit(f), (x, conv.kernel[...], bn.scale[...])


def test_jax_resnet_stem_against_finite_differences():
    f, args = _stem_fn()
    check_grads(f, args, order=2, modes=("fwd", "rev"), eps=EPS)


def test_jax_whole_model_directional_derivatives():
    """grad . v of the whole tiny model (every parameter) against (L(p + hv) - L(p - hv)) / 2h."""
    from jaxmtl.parity.harness import forward_checks  # noqa: F401  (the pair below is the harness's)

    pair = mutants.multitask_pair64()
    batch = mutants.tiny_batches()[0][0]
    (_, _), grads = pair.grad_fn(pair.params, pair.batch_stats, pair.rest, batch)
    rng = np.random.default_rng(7)
    for _ in range(2):
        v = jax.tree.map(lambda g: jnp.asarray(rng.standard_normal(g.shape)), grads)
        v = jax.tree.map(lambda a: a / jnp.sqrt(sum(jnp.sum(b * b) for b in jax.tree.leaves(v))), v)
        h = 1e-5  # truncation O(h^2) ~ 1e-10, rounding O(1e-16 / h) ~ 1e-11 relative
        with jax.disable_jit():  # eager forward: reuses the primitives the other eager runs compiled
            lp = pair.forward_fn(jax.tree.map(lambda p, d: p + h * d, pair.params, v), pair.batch_stats,
                                 pair.rest, batch, True)[0]
            lm = pair.forward_fn(jax.tree.map(lambda p, d: p - h * d, pair.params, v), pair.batch_stats,
                                 pair.rest, batch, True)[0]
        fd = float(lp - lm) / (2 * h)
        ad = float(sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(v))))
        assert abs(fd - ad) <= 1e-6 * max(abs(ad), 1e-3), (fd, ad)


# ---- torch: gradcheck / gradgradcheck on the reference in float64 ----------------------------

def _torch_loss_of(module, names, batch):
    from torch.func import functional_call

    from torch_ref.losses import multitask_loss

    def f(*tensors):
        out = functional_call(module, dict(zip(names, tensors)), (batch.images, batch.dyn))
        return multitask_loss(out, batch.pose, batch.vel, batch.label, TINY)[0]

    return f


def test_torch_model_gradcheck():
    """gradcheck on the whole torch model (train mode) w.r.t. a few parameters across all modules."""
    from jaxmtl.parity.harness import to_torch
    from torch_ref.model import build_model

    module = build_model(TINY, 0, torch.float64).train()
    names = ["backbone.conv1.weight", "backbone.bn1.weight", "backbone.layer2.0.downsample.1.bias",
             "backbone.layer4.1.conv2.weight", "pose_head.weight", "gru.weight_hh_l0", "classifier.bias"]
    params = dict(module.named_parameters())
    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
    batch = to_torch(mutants.tiny_batches()[0][1])
    # fast_mode: compares u^T J v for random u, v (two loss evaluations per check) instead of
    # the full numerical Jacobian, which would cost two forwards per parameter element.
    assert torch.autograd.gradcheck(_torch_loss_of(module, names, batch), inputs, eps=EPS, atol=1e-5,
                                    rtol=1e-5, fast_mode=True)


def test_torch_heads_gradgradcheck():
    """Second order on the torch GRU + heads (the recurrent part, where BPTT lives)."""
    from torch.func import functional_call

    from jaxmtl.parity.harness import to_torch
    from torch_ref.losses import multitask_loss

    module = mutants.torch_heads(TINY)
    b = to_torch(mutants.heads_batches(TINY, [31])[0][1])
    names = ["gru.bias_hh_l0", "gru.bias_ih_l0", "classifier.bias"]
    params = dict(module.named_parameters())
    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)

    def f(*tensors):
        out = functional_call(module, dict(zip(names, tensors)), (b.feats, b.dyn))
        return multitask_loss(out, b.pose, b.vel, b.label.long(), TINY)[0]

    assert torch.autograd.gradcheck(f, inputs, eps=EPS, atol=1e-5, rtol=1e-5)
    # fast_mode: random projections of the Hessian instead of its every column.
    assert torch.autograd.gradgradcheck(f, inputs, eps=EPS, atol=1e-5, rtol=1e-5, fast_mode=True)
