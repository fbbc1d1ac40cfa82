"""Numerical vs automatic differentiation, measured: finite-difference error vs h per dtype, e^20,
cancellation, gradient cost, PNGs; the docs page is current."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from tutorial_pages import assert_page_current

from jaxmtl.tutorials.numerical import numerical_stability
from jaxmtl.tutorials.run import run_example

DTYPES = ("float32", "float64")
COST_NS = (10, 30, 100, 300, 1000)  # fd_cost's default, as `jaxmtl tutorials` and the docs page run it


@pytest.fixture(scope="module")
def run():
    """run(name): the example in both frameworks as `jaxmtl tutorials` runs it, once per module."""
    return functools.cache(run_example)


@pytest.fixture(scope="module")
def study(run):
    """(JAX's, PyTorch's) results of the whole study."""
    r = run("numerical_stability")
    return r.jax, r.torch


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimum_h_within_a_decade_of_cbrt_eps(study, dtype):
    for res in study[:2]:
        ratio = res[f"fd_error_vs_h/h_opt_{dtype}"] / res[f"fd_error_vs_h/eps_cbrt_{dtype}"]
        assert 0.1 <= ratio <= 10, (dtype, res[f"fd_error_vs_h/h_opt_{dtype}"], res[f"fd_error_vs_h/eps_cbrt_{dtype}"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_error_is_truncation_plus_rounding(study, dtype):
    for res in study[:2]:
        # Measured slopes of log(error) vs log(h): 2.00 right of the optimum (O(h^2)), -1.02 / -1.04 left (O(eps/h)).
        assert 1.8 <= res[f"fd_error_vs_h/slope_truncation_{dtype}"] <= 2.2
        assert -1.3 <= res[f"fd_error_vs_h/slope_rounding_{dtype}"] <= -0.7
        # autodiff: exact to rounding
        assert res[f"fd_error_vs_h/autodiff_err_{dtype}"] <= res[f"fd_error_vs_h/eps_{dtype}"]
    jax_res, torch_res = study[:2]
    # Same measurement in both frameworks: optima within one grid point (10^0.25), the same truncation region.
    # exp differs by an ulp between the libraries; measured: 1.2% apart at h = 1e-2 in float32, where the
    # rounding part (~eps/h) is still 7% of the error, < 1e-5 apart for h >= 0.1.
    assert abs(math.log10(jax_res[f"fd_error_vs_h/h_opt_{dtype}"] / torch_res[f"fd_error_vs_h/h_opt_{dtype}"])) <= 0.26
    big = jax_res["fd_error_vs_h/h"] >= 1e-2
    key = f"fd_error_vs_h/err_{dtype}"
    np.testing.assert_allclose(jax_res[key][big], torch_res[key][big], rtol=5e-2)


def test_exp_at_20(study):
    for res in study[:2]:
        for dtype in DTYPES:
            eps = res[f"fd_error_vs_h/eps_{dtype}"]
            assert res[f"exp_at_20/autodiff_err_{dtype}"] <= eps
            assert res[f"exp_at_20/fd_best_err_{dtype}"] > 100 * eps  # the best h still loses digits
        # worse at x = 20 than near 1
        assert res["exp_at_20/fd_best_err_float32"] > res["fd_error_vs_h/min_err_float32"]


def test_sqrt_cancellation(study):
    for res in study[:2]:
        large = res["sqrt_cancellation/x"] >= 1e8
        assert_array_equal(res["sqrt_cancellation/value_err_naive"][large], 1.0)  # sqrt(x^2 + 1) == x: the value is 0
        assert np.all(res["sqrt_cancellation/grad_err_naive"][large] >= 0.99)  # autodiff of the naive form cancels too
        eps = np.finfo(np.float64).eps
        assert np.max(res["sqrt_cancellation/value_err_stable"]) <= 4 * eps
        assert np.max(res["sqrt_cancellation/grad_err_stable"]) <= 4 * eps
    key = "sqrt_cancellation/value_err_naive"
    np.testing.assert_allclose(study[0][key], study[1][key], rtol=0, atol=1e-15)


def test_cost_counts(study):
    for res in study[:2]:
        assert_array_equal(res["fd_cost/n"], COST_NS)
        assert_array_equal(res["fd_cost/fd_calls"], [2 * n for n in COST_NS])  # 2n evaluations per gradient
        assert_array_equal(res["fd_cost/reverse_passes"], np.ones(len(COST_NS)))
        # Central differences at h = 1e-6 round to eps |f| / h at most, and |f| <= sum(range(n)) < n^2 / 2.
        bound = np.finfo(np.float64).eps * np.square(COST_NS) / 2 / 1e-6
        assert np.all(res["fd_cost/max_abs_diff_fd_vs_autodiff"] <= bound)


def test_pngs_written(tmp_path):
    res = numerical_stability(out_dir=tmp_path, cost_ns=(10, 20))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["exp_at_20.png", "fd_cost.png", "fd_error_vs_h.png", "sqrt_cancellation.png"]
    for p in tmp_path.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    assert res["png_files"].count(".png") == 4


def test_docs_page_matches_the_code(run, tmp_path):
    assert_page_current("numerical", run, tmp_path)
