"""The tutorial examples without a model: the values printed in the original material, independent
formulas, and JAX == PyTorch (same dtype, same values) for every example; their docs pages are current."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from tutorial_pages import assert_page_current

from jaxmtl.trees import rel_err
from jaxmtl.tutorials import EXAMPLES, TOPICS
from jaxmtl.tutorials import inputs as I
from jaxmtl.tutorials.run import run_example

run = functools.cache(run_example)  # each example once per session: its tests and its docs page share it


def both(name: str) -> tuple[dict, dict]:
    """(JAX's, PyTorch's) results of the example, as `jaxmtl tutorials NAME` computes them."""
    r = run(name)
    return r.jax, r.torch


def assert_agree(jax_res: dict, torch_res: dict, tol: float = 1e-12) -> None:
    """Every numeric key present on both sides has one dtype on both sides and agrees:
    rel_err (Frobenius) <= tol for floats, exact otherwise."""
    common = [k for k in jax_res if k in torch_res and not isinstance(jax_res[k], str)]
    assert common, "no common keys to compare"
    for k in common:
        a, b = np.asarray(jax_res[k]), np.asarray(torch_res[k])
        assert a.dtype == b.dtype, (k, a.dtype, b.dtype)
        if a.dtype.kind in "biu" and b.dtype.kind in "biu":
            assert_array_equal(a, b, err_msg=k)
        else:
            assert rel_err(a, b) <= tol, (k, rel_err(a, b))


# ---- the chain rule --------------------------------------------------------------------

def test_linear_loss():
    j, t = both("linear_loss")
    v = I.linear_inputs()
    r = v["w"] * v["x"] + v["b"] - v["target"]
    assert_allclose(j["w_grad"], 2 * r * v["x"], rtol=1e-14)
    assert_allclose(j["b_grad"], 2 * r, rtol=1e-14)
    assert_agree(j, t)
    assert t["grad_fns"] == "z: AddBackward0, y: MulBackward0, w: None"  # as printed in the original Q&A


def test_printed_chain_values():
    j, t = both("mul_grad")
    for res in (j, t):
        assert_array_equal(res["W_grad"], [2.0])
        assert_array_equal(res["x_grad"], [3.0])
    j, t = both("scalar_chain")
    for res in (j, t):
        assert (float(res["a_grad"]), float(res["b_grad"])) == (42.0, 28.0)
    assert_agree(j, t)


def test_paths_sum_to_the_gradient():
    j, t = both("two_paths")
    assert_allclose([j["path1"], j["path2"], j["grad"]], [3.0, 2.0, 5.0], rtol=1e-15)  # 2 theta, 2, 2 theta + 2
    assert_agree(j, t)
    j, t = both("four_op_paths")
    theta = 1.0
    assert_allclose(j["path1"], 3 / theta, rtol=1e-14)                   # D 3 theta^2 / E
    assert_allclose(j["path2"], math.cos(theta) / math.sin(theta), rtol=1e-14)  # C cos / E
    assert_allclose(j["grad"], j["path1"] + j["path2"], rtol=1e-14)
    assert_agree(j, t)


# ---- the one-layer network ---------------------------------------------------------------

def test_one_layer_bce():
    j, t = both("one_layer_bce")
    v = I.one_layer_inputs()
    z = v["x"] @ v["w"] + v["b"]
    b_grad = (1 / (1 + np.exp(-z)) - v["y"]) / 3  # d mean(BCE)/dz
    assert_allclose(j["b_grad"], b_grad, rtol=1e-12)
    # With x = ones(5) every row of w.grad equals b.grad (as the tutorial's printout shows).
    assert_allclose(j["w_grad"], np.tile(b_grad, (5, 1)), rtol=1e-12)
    assert_agree(j, t)


def test_grad_fn_and_jaxpr():
    j, t = both("grad_fn_jaxpr")
    assert t["z_grad_fn"] == "AddBackward0"  # the tutorial prints <AddBackward0 object ...>
    assert t["loss_grad_fn"] == "BinaryCrossEntropyWithLogitsBackward0"
    assert {"dot_general", "add"} <= set(j["primitives"].split(", "))
    assert "dot_general" in j["grad_jaxpr"] and "transpose" in j["grad_jaxpr"]


def test_no_grad_detach():
    j, t = both("no_grad_detach")
    assert t["requires_grad(z, no_grad z, detached z)"] == (True, False, False)  # as the tutorial prints
    v = I.one_layer_inputs()
    z = v["x"] @ v["w"] + v["b"]
    assert_allclose(j["w_grad"], np.outer(v["x"], z), rtol=1e-14)  # the stopped factor is a constant
    assert_agree(j, t)


def test_retain_graph():
    j, t = both("retain_graph")
    for res in (j, t):
        assert_allclose(res["w_grad_1_plus_2"], res["w_grad_of_sum"], rtol=1e-14)
        assert_allclose(res["b_grad_1_plus_2"], res["b_grad_of_sum"], rtol=1e-14)
        assert_array_equal(res["x_grad_after_two_backwards"], [4.0, 4.0, 4.0])
    assert "backward through the graph a second time" in t["second_backward_without_retain_graph"]
    assert_agree(j, t)


def test_jacobian_product():
    j, t = both("jacobian_product")
    first = 2 * (np.eye(4, 5) + 1)  # d/dinp of sum((inp + 1)^2)
    for res in (j, t):
        assert_array_equal(res["first_call"], first)
        assert_array_equal(res["second_call"], 2 * first)   # accumulated
        assert_array_equal(res["after_zeroing"], first)
    assert_agree(j, t)


# ---- autograd internals ------------------------------------------------------------------

def test_control_flow():
    j, t = both("control_flow")
    for res in (j, t):
        assert_array_equal(res["grad_pos"], [2.0])
        assert_array_equal(res["grad_neg"], [-1.0])
    assert_agree(j, t)
    assert_array_equal(j["grad_pos_lax_cond_jit"], [2.0])
    assert_array_equal(j["grad_neg_lax_cond_jit"], [-1.0])
    assert j["python_if_under_jit"] == "TracerBoolConversionError"


def test_custom_function():
    j, t = both("custom_function")
    for res in (j, t):
        assert (float(res["c"]), float(res["a_grad"]), float(res["b_grad"])) == (5.0, 1.0, 1.0)
    assert j["custom_rule_in_jaxpr"] and t["grad_fn"] == "MyAddBackward"
    assert_agree(j, t)


def test_nonscalar_backward_and_relu():
    j, t = both("nonscalar_backward")
    for res in (j, t):
        assert_allclose(res["x_grad"], [0.2, 0.4], rtol=1e-15)  # as printed: tensor([0.2, 0.4])
    assert_agree(j, t)
    j, t = both("relu_at_zero")
    for res in (j, t):
        assert_array_equal(res["x_grad"], [0.0, 0.0, 1.0])  # relu'(0) = 0 in both frameworks
    assert_agree(j, t)


def test_retain_grad():
    j, t = both("retain_grad")
    expected = {"y_grad": 1.0, "x_grad": 2.0, "d_grad": 14.0, "c_grad": 14.0, "a_grad": 42.0, "b_grad": 28.0}
    for res in (j, t):
        assert {k: float(res[k]) for k in expected} == expected
    assert_agree(j, t)


def test_checkpointing():
    j, t = both("checkpointing")
    for res in (j, t):
        assert_allclose(res["ws_grad_checkpointed"], res["ws_grad"], rtol=1e-14)
    assert j["remat_in_jaxpr"]
    assert_agree(j, t, tol=1e-13)


def test_grad_clipping():
    j, t = both("grad_clipping")
    assert float(j["total_norm"]) > 1.0
    assert_allclose(j["clipped_norm"], 1.0, rtol=1e-12)
    # torch scales by 1 / (norm + 1e-6), optax by 1 / norm: measured relative difference 1.1e-9 at norm 892.
    assert_agree(j, t, tol=1e-8)


def test_mixed_precision():
    j, t = both("mixed_precision")
    exact = 2 * float(I.np.dot(I.np.array([1, 2, 3, 4.0]) * 1e-3, np.full(4, 1e-3))) * np.array([1, 2, 3, 4.0]) * 1e-3
    for res in (j, t):
        assert_allclose(res["grad_float32"], exact, rtol=1e-6)
        assert_allclose(res["grad_bfloat16"], exact, rtol=1e-2)            # bf16: no scaling needed
        assert res["grad_float16_unscaled"][0] == 0.0                         # 2e-8 flushes to zero
        assert np.max(np.abs(res["grad_float16_unscaled"] / exact - 1)) > 0.2
        assert_allclose(res["grad_float16_static_scale"], exact, rtol=1e-2)
        assert_array_equal(res["dynamic_scales_tried"], [65536.0, 32768.0])  # 2^16 overflows float16
        assert_array_equal(res["dynamic_found_inf"], [True, False])
        assert_allclose(res["grad_float16_dynamic"], exact, rtol=1e-2)
    assert_agree(j, t, tol=1e-6)  # measured: bit-identical on this CPU (float16 ulp is 1e-3)


# ---- Q, vector-Jacobian products, the DAG, the MLP --------------------------------------------

def test_q_backward_and_vjp():
    j, t = both("q_backward")
    for res in (j, t):
        assert_array_equal(res["a_grad"], [36.0, 81.0])
        assert_array_equal(res["b_grad"], [-12.0, -8.0])
        assert res["9a^2 == a.grad"].all() and res["-2b == b.grad"].all()
    assert_agree(j, t)
    j, t = both("vjp_jacobian")
    assert_array_equal(j["jacobian_a"], np.diag([36.0, 81.0]))
    for res in (j, t):
        assert_allclose(res["J_a^T v"], res["vjp_a"], rtol=1e-14)
        assert_allclose(res["J_b^T v"], res["vjp_b"], rtol=1e-14)
    assert_agree(j, t)


def test_requires_grad_propagation():
    j, t = both("requires_grad_propagation")
    first, second = "z requires grad -> (a = x + y, b = x + z)", "x requires grad -> (a = x + y, b = a + z, c = y + z)"
    for res in (j, t):
        assert_array_equal(res[first], [False, True])  # as the tutorial prints
        # The original Q&A prints False for `a` here; torch (and JAX) say True: a depends on x.
        assert_array_equal(res[second], [True, True, False])


def test_x1_x2_x3():
    j, t = both("x1_x2_x3")
    for res in (j, t):
        for suffix in ("", "_vjp"):
            assert_array_equal(res[f"x1_grad{suffix}"], [4.0, 5.0, 6.0])
            assert_array_equal(res[f"x2_grad{suffix}"], [1.0, 2.0, 3.0])
            assert_array_equal(res[f"x3_grad{suffix}"], [1.0, 1.0, 1.0])
    assert_agree(j, t)


def test_ones_mean():
    j, t = both("ones_mean")
    for res in (j, t):
        assert_array_equal(res["y"], np.full((2, 2), 3.0))   # the values printed in the original
        assert_array_equal(res["z"], np.full((2, 2), 27.0))
        assert float(res["out"]) == 27.0
        assert_array_equal(res["x_grad"], np.full((2, 2), 4.5))  # 6 (x + 2) / 4
    assert t["grad_fns (y, z, out, b)"] == "AddBackward0, MulBackward0, MeanBackward0, SumBackward0"  # as printed
    assert t["requires_grad before/after requires_grad_()"] == (False, True)
    assert_agree(j, t)


def test_mlp_intermediates():
    j, t = both("mlp_intermediates")
    for res in (j, t):
        for auto, hand in (("y2_grad", "y2_grad_hand 2(y2 - y)"), ("y1_grad", "y1_grad_hand y2_grad @ w2^T"),
                           ("w1_grad", "w1_grad_hand x^T @ y1_grad"), ("b1_grad", "b1_grad_hand column sums")):
            assert_allclose(res[auto], res[hand], rtol=1e-13, err_msg=auto)
    assert_agree(j, t, tol=1e-13)


def test_mlp_printed_values():
    j, t = both("mlp_printed_values")
    for res in (j, t):
        # The original Q&A prints 4 decimals; y and y2 are rounded, so 2(y2 - y) is good to 2e-4.
        assert_allclose(res["y2_grad"], I.PRINTED_MLP_Y2_GRAD, atol=2e-4)
        assert_allclose(res["l"], I.PRINTED_MLP_LOSS, atol=2e-3)
        assert_allclose(res["b1_grad"], I.PRINTED_MLP_B1_GRAD, atol=3e-4)  # five 4-decimal terms summed
    assert_agree(j, t)


# ---- higher order and the jit cache --------------------------------------------------

def test_higher_order_and_hessian():
    j, t = both("higher_order")
    for res in (j, t):
        assert (float(res["d1"]), float(res["d2"]), float(res["d3"])) == (12.0, 12.0, 6.0)
    j, t = both("hessian")
    x0, x1, x2 = 1.0, 2.0, 3.0
    hand = np.array([[2 * x1, 2 * x0, math.cos(x2)], [2 * x0, 0, 0], [math.cos(x2), 0, -x0 * math.sin(x2)]])
    assert_allclose(j["hessian"], hand, rtol=1e-14)
    assert_allclose(j["jacfwd(jacrev)"], hand, rtol=1e-14)
    assert_agree(j, t, tol=1e-14)


def test_retracing():
    j, t = both("retracing")
    assert_array_equal(j["traces_after_each_call"], [1, 1, 2, 2])  # a new shape retraces, new values do not
    assert t["graph_per_call"].split("; ")[1] == "SumBackward0 <- NegBackward0"  # that call's branch
    assert_agree(j, t)


# ---- the command ---------------------------------------------------------------------

def test_cli_lists_runs_and_rejects(capsys, tmp_path):
    from jaxmtl.cli import main

    assert main(["tutorials"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in EXAMPLES)
    assert main(["tutorials", "no_such_example"]) == 2
    err = capsys.readouterr().err
    assert "no_such_example" in err and "scalar_chain" in err and "resnet18_step" in err
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["tutorials", "numerical_stability", "--out", str(blocker / "plots")]) == 2  # fails before computing
    assert "cannot create --out directory" in capsys.readouterr().err
    assert main(["tutorials", "scalar_chain"]) == 0
    out = capsys.readouterr().out
    assert "JAX     : 42  float64" in out and "PyTorch : 42  float64" in out
    assert "loss.backward()" in out and "jax.value_and_grad(loss, argnums=(0, 1))" in out  # both programs


def test_jax_side_does_not_import_torch():
    import subprocess
    import sys

    modules = ", ".join(["jaxmtl.tutorials", "jaxmtl.tutorials.run", "jaxmtl.tutorials.pages"]
                        + [f"jaxmtl.tutorials.{t}" for t in TOPICS])
    code = f"import sys, {modules}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# Last in the module, so every example's results are already in `run`'s cache.
@pytest.mark.parametrize("topic", ["chain_rule", "one_layer", "autograd_internals", "blitz", "higher_order"])
def test_docs_page_matches_the_code(topic, tmp_path):
    assert_page_current(topic, run, tmp_path)
