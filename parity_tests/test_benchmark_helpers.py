"""Pure helpers of the benchmark suite (no timing here: speed is measured in benchmarks/, not in tests)."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.crossover import fit_overhead, run


def test_crossover_fit_recovers_fixed_and_per_sample_cost():
    # t(B) = 10 ms + 4 ms * B exactly: t0 = 10 ms, c = 4 ms, B_half = 2.5.
    fit = fit_overhead([1, 2, 4, 8, 16], [0.010 + 0.004 * b for b in (1, 2, 4, 8, 16)])
    assert fit["t0_s"] == pytest.approx(0.010, rel=1e-9)
    assert fit["per_sample_s"] == pytest.approx(0.004, rel=1e-9)
    assert fit["b_half"] == pytest.approx(2.5, rel=1e-9)


def test_crossover_fit_without_per_sample_growth_has_no_crossover():
    assert fit_overhead([1, 2, 4], [0.03, 0.02, 0.01])["b_half"] is None  # time falling with B: no kernel cost


@pytest.mark.parametrize("batches,message", [("1", "at least two"), ("0,4", "at least two"),
                                             ("2,x", "comma list of integers")])
def test_crossover_refuses_bad_batches_before_compiling(batches, message):
    args = argparse.Namespace(config="small", batches=batches, budget=1.0, out="unused")
    with pytest.raises(SystemExit, match=message):
        run(args)
