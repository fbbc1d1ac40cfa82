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


def test_scaling_layouts_are_checked_before_any_process_starts():
    from benchmarks.scaling import Layout, parse_layouts

    assert parse_layouts("1x1,2x4", 16) == [Layout(1, 1), Layout(2, 4)]
    assert parse_layouts("2x4", 16)[0].devices == 8
    with pytest.raises(SystemExit, match="does not divide over layout 1x3"):
        parse_layouts("1x3", 16)
    with pytest.raises(SystemExit, match="PROCESSESxDEVICES"):
        parse_layouts("4", 16)


def test_scaling_counts_collective_time_once_where_collectives_overlap(tmp_path):
    import gzip
    import json

    from benchmarks.scaling import _collective_seconds, _is_collective

    assert all(map(_is_collective, ["all-reduce", "all-reduce.193", "all-gather-start.2", "collective-permute.38"]))
    assert not any(map(_is_collective, ["ynn_fusion", "Rendezvous", "all_reduce_fusion", "while.47"]))
    events = [{"ph": "X", "name": "all-reduce.1", "ts": 0, "dur": 100},     # two devices' all-reduces,
              {"ph": "X", "name": "all-reduce.1", "ts": 50, "dur": 100},    # overlapping: 0..150 us
              {"ph": "X", "name": "fusion.3", "ts": 150, "dur": 500},       # not a collective
              {"ph": "X", "name": "all-gather.2", "ts": 1000, "dur": 50}]   # 1000..1050 us
    (tmp_path / "p").mkdir()
    with gzip.open(tmp_path / "p" / "host.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    assert _collective_seconds(tmp_path) == pytest.approx(200e-6)
