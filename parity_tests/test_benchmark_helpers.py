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


# ---- benchmarks/mode_processes.py: the protocol with stand-in workers (a sleep, not a model) ----

def _stand_in(log, fail: bool = False) -> list[str]:
    """A worker whose step sleeps 2 ms and logs its (start, end) on the system-wide monotonic clock."""
    import sys
    from pathlib import Path

    code = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from benchmarks.mode_processes import serve
def setup():
    if {fail}:
        raise SystemExit("no model called 'huge'")
    log = open({str(log)!r}, "a")
    def step():
        t0 = time.monotonic()
        time.sleep(0.002)
        print("library chatter on stdout")  # must not get between the protocol's lines
        log.write(f"{{t0}} {{time.monotonic()}}\\n")
        log.flush()
    return step, {{"compile_s": 0.5}}
serve(setup)
"""
    return [sys.executable, "-c", code]


def test_mode_processes_take_turns_and_never_overlap(tmp_path):
    from benchmarks.mode_processes import time_in_processes

    logs = {m: tmp_path / f"{m}.log" for m in ("a", "b", "c")}
    runs = time_in_processes({m: _stand_in(log) for m, log in logs.items()}, budget_s=0, min_rounds=3,
                             max_calls_per_turn=4)
    spans = []
    for mode, run in runs.items():
        assert run["ready"] == {"compile_s": 0.5} and run["rounds"] == 3 and run["calls_per_turn"] == 4
        assert len(run["times"]) == 12 and all(t >= 0.002 for t in run["times"])
        # every call ran: 12 timed + 3 untimed (one per turn) + the probe turn's 1 + 1 untimed
        lines = logs[mode].read_text().splitlines()
        assert len(lines) == 12 + 3 + 2
        spans += [(*map(float, line.split()), mode) for line in lines]
    spans.sort()
    for (_, end, m1), (start, _, m2) in zip(spans, spans[1:]):
        assert end <= start, f"{m1} and {m2} ran at the same time"


def test_a_worker_that_fails_is_named_with_its_error(tmp_path):
    from benchmarks.mode_processes import time_in_processes

    with pytest.raises(RuntimeError, match="(?s)worker 'b' exited with status 1.*no model called 'huge'"):
        time_in_processes({"a": _stand_in(tmp_path / "a.log"), "b": _stand_in(tmp_path / "b.log", fail=True)},
                          budget_s=0, min_rounds=1)


def test_the_bf16_step_computes_in_bf16_and_keeps_float32_state():
    """benchmarks' jax_jit_bf16 mode: the convs run in bfloat16 (seen in the traced program), the
    parameters, optimizer state and BatchNorm statistics stay float32, and the loss is the float32
    loss to bfloat16 precision."""
    import jax
    import jax.numpy as jnp

    from benchmarks import steps_impl as S
    from jaxmtl.config import TINY

    step16, args = S.jax_setup(TINY, compute_dtype=jnp.bfloat16)
    step32, _ = S.jax_setup(TINY)
    # The suite runs with x64 on, where some of the setup's leaves come out float64; the benchmark runs without.
    args = jax.tree.map(lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a, args)
    jaxpr = str(jax.make_jaxpr(step16)(*args))
    assert "conv_general_dilated" in jaxpr and "bf16[" in jaxpr
    out16 = jax.jit(step16)(*args)
    out32 = jax.jit(step32)(*args)
    for a, b in zip(jax.tree.leaves(out16[:3]), jax.tree.leaves(out32[:3])):
        assert a.dtype == b.dtype and (a.dtype == jnp.float32 or not jnp.issubdtype(a.dtype, jnp.floating))
    # bfloat16 keeps 8 significant bits (relative rounding 2**-9 = 2e-3 per operation);
    # measured on tiny: 2.1e-3 relative.
    assert abs(float(out16[3]) - float(out32[3])) / abs(float(out32[3])) < 2e-2


# ---- benchmarks/conv_shapes.py: step totals and torch's per-shape worker ----

def _stat(ms: float) -> dict:
    return {"median": ms * 1e-3}


def test_step_conv_totals_weight_by_layers_and_skip_the_stems_input_gradient():
    from benchmarks.conv_shapes import step_conv_totals

    def row(layer, count, jax_ms, torch_ms):
        # two formulations per direction: "a" (the rule's) takes jax_ms, "b" half of it and wins
        return {"config": "c", "layer": layer, "count": count, "plan": ["a", "a", "a"],
                **{d: {"a": _stat(jax_ms), "b": _stat(jax_ms / 2)} for d in ("fwd", "dx", "dw")},
                **{f"{d}_winner": "b" for d in ("fwd", "dx", "dw")},
                "torch": {d: _stat(torch_ms) for d in ("fwd", "dx", "dw")}}

    totals = step_conv_totals([row("stem", 1, 10.0, 4.0), row("layer1.x.conv", 3, 2.0, 1.0)])["c"]
    # stem: fwd + dW only (2 directions); layer1: 3 layers x 3 directions
    assert totals["jax_rule_s"] == pytest.approx((2 * 10.0 + 9 * 2.0) * 1e-3)
    assert totals["jax_best_s"] == pytest.approx((2 * 5.0 + 9 * 1.0) * 1e-3)
    assert totals["torch_s"] == pytest.approx((2 * 4.0 + 9 * 1.0) * 1e-3)


def test_torch_conv_shapes_worker_times_every_direction_of_every_shape():
    from benchmarks.conv_shapes import torch_rows

    shapes = [dict(config="t", layer="a", n=2, h=8, cin=3, cout=4, k=3, stride=1, pad=1, count=1),
              dict(config="t", layer="b", n=2, h=8, cin=4, cout=8, k=1, stride=2, pad=0, count=2)]
    answer = torch_rows(shapes, budget_s=0.0)
    assert answer["torch_threads"] >= 1 and len(answer["rows"]) == 2
    for r in answer["rows"]:
        assert set(r) == {"fwd", "dx", "dw"} and all(r[d]["median"] > 0 and r[d]["reps"] >= 3 for d in r)


def test_torch_conv_shapes_worker_failure_names_its_error():
    from benchmarks.conv_shapes import torch_rows

    bad = [dict(config="t", layer="a", n=2, h=8, cin=3, cout=4, k=3, stride=1, pad=-1, count=1)]
    with pytest.raises(RuntimeError, match="(?s)torch conv-shapes worker failed.*padding"):
        torch_rows(bad, budget_s=0.0)


def test_report_renders_the_torch_conv_table_and_step_totals(tmp_path):
    import json

    from benchmarks.conv_shapes import step_conv_totals
    from benchmarks.report import markdown

    row = {"config": "c", "layer": "stem", "count": 1, "n": 2, "h": 8, "cin": 3, "cout": 4, "k": 7, "stride": 2,
           "plan": ["a", "a", "a"], "plan_loss_s": 0.0,
           **{d: {"a": _stat(2.0), "b": _stat(1.0)} for d in ("fwd", "dx", "dw")},
           **{f"{d}_winner": "b" for d in ("fwd", "dx", "dw")},
           "torch": {d: _stat(0.5) for d in ("fwd", "dx", "dw")}}
    (tmp_path / "conv_shapes").mkdir()
    (tmp_path / "conv_shapes" / "results.json").write_text(json.dumps(
        {"rows": [row], "step_conv_totals": step_conv_totals([row]), "maxpool": []}))
    text = markdown(tmp_path)
    assert "| c | stem (x1) | 2.00/1.00/0.50 | 2.00/1.00/0.50 (unused) | 2.00/1.00/0.50 |" in text
    assert "JAX rule 4.0 ms, JAX per-direction winners 2.0 ms, torch 1.0 ms" in text
    # results from before torch's side was measured: the formulation table only
    del row["torch"]
    (tmp_path / "conv_shapes" / "results.json").write_text(json.dumps({"rows": [row], "maxpool": []}))
    assert "against torch" not in markdown(tmp_path) and "Conv formulations per shape" in markdown(tmp_path)


def test_report_says_when_jit_compile_time_includes_measuring_conv_plans():
    from benchmarks.report import jit_compile_cell

    plans = [{"shape": "a", "plan": ["xla"] * 3, "source": s} for s in ("measured", "cache", "measured", "rule")]
    assert jit_compile_cell({"compile_s": 32.31, "conv_plans": plans}) == "32.3 (incl. measuring 2 conv plans)"
    assert jit_compile_cell({"compile_s": 6.0, "conv_plans": plans[1:2]}) == "6.0"
    assert jit_compile_cell({"compile_s": 6.0}) == "6.0"  # results from before conv plans were recorded
