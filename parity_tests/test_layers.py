"""Each torch-semantics layer against the stock torch layer, float64, plus the pitfalls they avoid."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from jax import lax

from jaxmtl.nn import GRU, BatchNorm2d, conv2d, max_pool2d

RNG = np.random.default_rng(0)


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


@pytest.mark.parametrize("k,stride,pad,size", [(7, 2, 3, 32), (3, 2, 1, 8), (3, 1, 1, 5), (1, 2, 0, 4)])
def test_conv_matches_torch(k, stride, pad, size):
    x = RNG.standard_normal((2, size, size, 3))
    w = RNG.standard_normal((4, 3, k, k))  # OIHW
    ref = torch.nn.functional.conv2d(nchw(x), torch.from_numpy(w), stride=stride, padding=pad)
    out = conv2d(jnp.asarray(x), jnp.asarray(np.transpose(w, (2, 3, 1, 0))), stride, pad)
    np.testing.assert_allclose(np.transpose(np.asarray(out), (0, 3, 1, 2)), ref.numpy(), rtol=1e-12, atol=1e-12)


def test_same_padding_on_stride_2_differs_from_torch():
    """Why conv2d spells out its padding: 'SAME' pads (2, 3) for 7x7/2 on 32x32, torch pads (3, 3)."""
    x = RNG.standard_normal((1, 32, 32, 3))
    w = RNG.standard_normal((7, 7, 3, 4))
    same = lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours = conv2d(jnp.asarray(x), jnp.asarray(w), 2, 3)
    assert same.shape == ours.shape
    assert not np.allclose(np.asarray(same), np.asarray(ours))


def test_max_pool_matches_torch():
    x = RNG.standard_normal((2, 16, 16, 3))
    ref = torch.nn.MaxPool2d(3, 2, 1)(nchw(x))
    out = max_pool2d(jnp.asarray(x), 3, 2, 1)
    np.testing.assert_array_equal(np.transpose(np.asarray(out), (0, 3, 1, 2)), ref.numpy())


@pytest.mark.parametrize("k,stride,pad", [(3, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_max_pool_gradient_routes_ties_like_torch(k, stride, pad):
    """Integer-valued inputs make most windows tie: torch sends each output's gradient to the
    first maximum of its window (row-major); a split or a last-max choice would differ here."""
    x = RNG.integers(0, 3, (2, 9, 9, 3)).astype(np.float64)
    g = RNG.standard_normal((2, 3, (9 + 2 * pad - k) // stride + 1, (9 + 2 * pad - k) // stride + 1))
    xt = nchw(x).requires_grad_(True)
    torch.nn.functional.max_pool2d(xt, k, stride, pad).backward(torch.from_numpy(g))
    out, vjp = jax.vjp(lambda a: max_pool2d(a, k, stride, pad), jnp.asarray(x))
    (dx,) = vjp(jnp.asarray(np.transpose(g, (0, 2, 3, 1))))
    np.testing.assert_array_equal(np.transpose(np.asarray(dx), (0, 3, 1, 2)), xt.grad.numpy())
    # The forward-mode rule is the same linear map: <jvp(t), g> == <t, vjp(g)>.
    t = RNG.standard_normal(x.shape)
    _, jt = jax.jvp(lambda a: max_pool2d(a, k, stride, pad), (jnp.asarray(x),), (jnp.asarray(t),))
    np.testing.assert_allclose(float(jnp.vdot(jt, jnp.transpose(jnp.asarray(g), (0, 2, 3, 1)))),
                               float(jnp.vdot(jnp.asarray(t), dx)), rtol=1e-12)


def test_max_pool_gradient_of_all_minus_inf_windows_like_torch():
    """Windows whose inputs are all -inf tie with the -inf padding: torch routes their gradient to
    the first input of the window, never to the padding (nor, through a flat index, to a pixel of
    the row above)."""
    x = RNG.standard_normal((1, 7, 7, 2))
    x[:, :4, :4] = -np.inf
    g = RNG.standard_normal((1, 2, 4, 4))
    xt = nchw(x).requires_grad_(True)
    torch.nn.functional.max_pool2d(xt, 3, 2, 1).backward(torch.from_numpy(g))
    _, vjp = jax.vjp(lambda a: max_pool2d(a, 3, 2, 1), jnp.asarray(x))
    (dx,) = vjp(jnp.asarray(np.transpose(g, (0, 2, 3, 1))))
    np.testing.assert_array_equal(np.transpose(np.asarray(dx), (0, 3, 1, 2)), xt.grad.numpy())


def test_max_pool_gradient_refuses_inputs_too_large_for_int32_indices():
    """Traced abstractly (no memory): 1024 x 514 x 514 x 16 padded elements overflow the flat index."""
    big = jax.ShapeDtypeStruct((1024, 512, 512, 16), jnp.float32)
    with pytest.raises(ValueError, match="too many elements for int32"):
        jax.eval_shape(jax.grad(lambda a: max_pool2d(a, 3, 2, 1).sum()), big)
    jax.eval_shape(jax.grad(lambda a: max_pool2d(a, 3, 2, 1).sum()), jax.ShapeDtypeStruct((8, 512, 512, 16), jnp.float32))


def test_batchnorm_train_step_and_running_stats_match_torch():
    x = RNG.standard_normal((4, 3, 3, 5)) * 3 + 1
    tbn = torch.nn.BatchNorm2d(5).double().train()
    bn = BatchNorm2d(5)
    for v in (bn.scale, bn.bias, bn.mean, bn.var):
        v.set_value(v[...].astype(jnp.float64))  # `v[...] = ` would keep float32
    y_ref = tbn(nchw(x)).detach().numpy()
    y = np.transpose(np.asarray(bn(jnp.asarray(x), train=True)), (0, 3, 1, 2))
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(bn.mean[...]), tbn.running_mean.numpy(), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(bn.var[...]), tbn.running_var.numpy(), rtol=1e-13)
    # The independent formula: torch stores 0.9 * 1 + 0.1 * unbiased variance (n = 4*3*3 = 36).
    unbiased = x.reshape(-1, 5).var(axis=0, ddof=1)
    np.testing.assert_allclose(np.asarray(bn.var[...]), 0.9 + 0.1 * unbiased, rtol=1e-13)
    assert int(bn.count[...]) == int(tbn.num_batches_tracked)
    tbn.eval()
    np.testing.assert_allclose(np.transpose(np.asarray(bn(jnp.asarray(x), train=False)), (0, 3, 1, 2)),
                               tbn(nchw(x)).detach().numpy(), rtol=1e-12, atol=1e-12)


def test_gru_matches_torch_gru():
    torch.manual_seed(0)
    tgru = torch.nn.GRU(5, 7, batch_first=True).double()
    gru = GRU(5, 7, rngs=nnx.Rngs(0))
    gru.w_ih.set_value(jnp.asarray(tgru.weight_ih_l0.detach().numpy().T))
    gru.w_hh.set_value(jnp.asarray(tgru.weight_hh_l0.detach().numpy().T))
    gru.b_ih.set_value(jnp.asarray(tgru.bias_ih_l0.detach().numpy()))
    gru.b_hh.set_value(jnp.asarray(tgru.bias_hh_l0.detach().numpy()))
    x = RNG.standard_normal((3, 6, 5))
    hs_ref, h_ref = tgru(torch.from_numpy(x))
    hs, h = gru(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(hs), hs_ref.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(h), h_ref[0].detach().numpy(), rtol=1e-12, atol=1e-13)


def test_import_jaxmtl_does_not_import_torch():
    code = "import sys, jaxmtl, jaxmtl.functional, jaxmtl.parity; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
