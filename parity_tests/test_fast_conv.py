"""The CPU convolution formulations (jaxmtl/nn/conv_impl.py) against lax.conv_general_dilated, float64.

Each formulation is the same function with another summation order, so
values, dX and dW agree with XLA's conv to rounding (~1e-15 relative in
float64); 1e-12 leaves three decades of room and still catches any wrong
index, stride, padding or tap order (those give O(1) errors).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxmtl.nn.conv as conv_mod
from jaxmtl.config import CONFIGS
from jaxmtl.nn.conv_plan import ConvShape, Plan, rule_plan
from jaxmtl.nn.conv_impl import conv2d_fast, conv_by, formulations_for, out_size, shifted
from jaxmtl.trees import rel_err

# (kernel, stride, padding, input size): every class the ResNet uses (7x7/2 p3 stem, 3x3/1 p1,
# 3x3/2 p1, 1x1/2 p0) plus an odd size, where a stride-2 window drops the last row; the maps of
# <= 4 output pixels where "pairs" and "dense" apply (2x2 and 1x1 stride 1, 4x4 -> 2x2 strided),
# and one (1x1/2 p1 on 2x2) whose first output pixel reads padding only.
SHAPE_CLASSES = [(7, 2, 3, 9), (3, 1, 1, 6), (3, 2, 1, 6), (3, 2, 1, 7), (1, 2, 0, 6), (3, 1, 1, 2), (3, 1, 1, 1),
                 (3, 2, 1, 4), (1, 2, 1, 2)]
RTOL = 1e-12


def reference(x, w, stride, pad):
    return lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _data(k, size, seed=0, cin=3, cout=5):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((2, size, size, cin)))
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout)))
    return x, w


@pytest.mark.parametrize("k,stride,pad,size", SHAPE_CLASSES)
def test_every_formulation_matches_xla_value_dx_dw(k, stride, pad, size):
    x, w = _data(k, size)
    dy_shape = reference(x, w, stride, pad).shape
    methods = formulations_for(stride, dy_shape[1] * dy_shape[2])
    dy = jnp.asarray(np.random.default_rng(1).standard_normal(dy_shape))

    @jax.jit  # one compile per shape class for all formulations (op-by-op is slower)
    def all_plans(x, w, dy):
        out = {}
        # dX depends only on plan[1] and dW only on plan[2], so the plans (m, m, m)
        # cover every formulation in every direction; the reference is plan xla/xla/xla.
        for m in ("ref",) + methods:
            f = (lambda a, b: reference(a, b, stride, pad)) if m == "ref" else \
                (lambda a, b, m=m: conv2d_fast(a, b, stride, pad, (m, m, m)))
            y, pull = jax.vjp(f, x, w)
            out[m] = (y,) + pull(dy)
        return out

    assert x.dtype == jnp.float64  # conftest enables x64: the 1e-12 bound needs float64
    res = all_plans(x, w, dy)
    assert set(res) == {"ref"} | set(methods)
    for m in methods:
        for name, got, want in zip(("y", "dx", "dw"), res[m], res["ref"]):
            assert rel_err(np.asarray(got), np.asarray(want)) < RTOL, (m, name)


def test_space_to_depth_refuses_other_strides():
    x, w = _data(3, 6)
    with pytest.raises(ValueError, match="stride 2"):
        conv_by("s2d", x, w, 1, 1)


@pytest.mark.parametrize("k,stride,pad,size", [(3, 2, 1, 7), (2, 2, 0, 9), (3, 3, 0, 10), (1, 3, 0, 8),
                                                (7, 2, 3, 9), (3, 1, 1, 5)])
def test_shifted_views_are_the_strided_windows(k, stride, pad, size):
    """`shifted` takes its views from a reshape; they must be xpad[:, s*ho + i, s*wo + j]. The
    cases include a bottom edge cropped (10 rows, 3x3/3: row 9 is in no window) and padded
    up to whole blocks (9 rows, 2x2/2), and a -inf pad value (max-pool)."""
    x = np.random.default_rng(2).standard_normal((2, size, size, 3))
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
    ho = (size + 2 * pad - k) // stride + 1
    views = shifted(jnp.asarray(x), k, stride, pad, pad_value=-np.inf)
    assert len(views) == k * k
    for t, v in enumerate(views):
        i, j = divmod(t, k)
        want = xp[:, i: i + stride * (ho - 1) + 1: stride, j: j + stride * (ho - 1) + 1: stride]
        np.testing.assert_array_equal(np.asarray(v), want)


def test_batch_chunks_match_one_conv_value_and_dw():
    """"xla16" splits the batch only for n > 16: 37 frames give chunks of 16, 16 and 5."""
    x, w = _data(3, 5)
    x = jnp.concatenate([x] * 19)[:37] * jnp.arange(1, 38, dtype=x.dtype)[:, None, None, None]
    dy = jnp.asarray(np.random.default_rng(3).standard_normal(reference(x, w, 1, 1).shape))
    y, pull = jax.vjp(lambda a, b: conv2d_fast(a, b, 1, 1, ("xla16", "xla16", "xla16")), x, w)
    y_ref, pull_ref = jax.vjp(lambda a, b: reference(a, b, 1, 1), x, w)
    for got, want in zip((y,) + pull(dy), (y_ref,) + pull_ref(dy)):
        assert rel_err(np.asarray(got), np.asarray(want)) < RTOL


def test_forward_mode_matches_xla():
    """custom_jvp keeps jax.jvp (and so jax.hessian) usable; a custom_vjp would refuse forward mode."""
    x, w = _data(3, 5, cin=2, cout=2)
    tx, tw = _data(3, 5, seed=2, cin=2, cout=2)

    @jax.jit
    def jvps(x, w, tx, tw):
        ref = jax.jvp(lambda a, b: reference(a, b, 2, 1), (x, w), (tx, tw))
        return ref, [jax.jvp(lambda a, b, p=p: conv2d_fast(a, b, 2, 1, p), (x, w), (tx, tw))
                     for p in (("im2col", "shift", "im2colT"), ("im2colT", "im2col", "shift"), ("s2d", "s2d", "s2d"))]

    ref, got = jvps(x, w, tx, tw)
    for y, t in got:
        assert rel_err(np.asarray(y), np.asarray(ref[0])) < RTOL
        assert rel_err(np.asarray(t), np.asarray(ref[1])) < RTOL


def test_gradient_wrt_one_argument_only():
    """A symbolic-zero tangent (images need no gradient) must not break or change dW."""
    x, w = _data(3, 6)
    f_ref = lambda b: jnp.sum(jnp.sin(reference(x, b, 2, 1)))
    f = lambda b: jnp.sum(jnp.sin(conv2d_fast(x, b, 2, 1, ("im2col", "shift", "im2colT"))))
    grads = jax.jit(lambda b: (jax.grad(f)(b), jax.grad(f_ref)(b)))(w)
    assert rel_err(np.asarray(grads[0]), np.asarray(grads[1])) < RTOL


def test_rule_plan_names_known_formulations_for_every_model_shape():
    from benchmarks.conv_shapes import conv_shape, conv_shapes

    for cfg in CONFIGS.values():
        for s in conv_shapes(cfg):
            plan = rule_plan(conv_shape(s))
            ho = out_size(s["h"], s["k"], s["stride"], s["pad"])
            assert len(plan) == 3 and set(plan) <= set(formulations_for(s["stride"], ho * ho)), (s, plan)


def test_conv2d_seam_uses_plan_and_matches_reference(monkeypatch):
    """conv2d (the function Conv2d calls) goes through the plan on CPU, with the same values."""
    x, w = _data(3, 6)
    seen = []
    monkeypatch.setattr(conv_mod, "plan_for", lambda shape: seen.append(shape) or Plan("shift", "im2col", "shift"))
    y = conv_mod.conv2d(x, w, 2, 1)
    assert seen == [ConvShape(2, 6, 6, 3, 5, 3, 2, 1, "float64")]
    assert rel_err(np.asarray(y), np.asarray(reference(x, w, 2, 1))) < RTOL
