"""The measured conv plan and its cache (jaxmtl/nn/conv_plan.py).

The suite itself runs under JAXMTL_CONV_PLAN=rule (conftest.py); here each test sets its own mode
and a cache directory of its own. Shapes are small, so a real measurement takes a second or two.
"""

from __future__ import annotations

import json
import multiprocessing
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmtl.nn import conv as conv_mod
from jaxmtl.nn import conv_plan as CP

SHAPE = CP.ConvShape(2, 4, 4, 3, 4, 3, 1, 1, "float32")


@pytest.fixture
def planner(tmp_path, monkeypatch):
    """A fresh planner memory, a cache directory of this test's own, and a count of measurements."""
    monkeypatch.setenv("JAXMTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(CP, "MEASURE_S", 0.01)
    measured = []
    real = CP.measure
    monkeypatch.setattr(CP, "measure", lambda shape, *a: measured.append(shape) or real(shape, *a))
    CP.forget_plans()
    yield measured
    CP.forget_plans()


def test_measure_once_then_reuse_the_cache(planner, monkeypatch):
    monkeypatch.setenv("JAXMTL_CONV_PLAN", "measure")
    plan = CP.plan_for(SHAPE)
    assert planner == [SHAPE] and set(plan) <= set(SHAPE.candidates())
    entry = json.loads(CP.cache_path().read_text())["plans"][SHAPE.key()]
    assert entry["plan"] == list(plan) and set(entry["ms"]["dw"]) == set(SHAPE.candidates())
    assert all(entry["ms"][d][p] <= (1 + CP.RULE_MARGIN) * min(entry["ms"][d].values())
               for d, p in zip(CP.DIRECTIONS, plan))
    assert CP.plan_for(SHAPE) == plan and len(planner) == 1                  # this process remembers
    CP.forget_plans()
    assert CP.plan_for(SHAPE) == plan and len(planner) == 1                  # a new process reads the file
    assert CP.used_plans() == [{"shape": SHAPE.key(), "plan": list(plan), "source": "cache"}]


def test_the_rule_wins_ties_and_loses_to_a_clear_lead():
    assert CP.choose({"xla": 1.0, "im2col": 1.05}, "xla") == "xla"
    assert CP.choose({"xla": 1.0, "im2col": 1.05}, "im2col") == "im2col"          # within the margin
    assert CP.choose({"xla": 1.0, "im2col": 1.5}, "im2col") == "xla"               # a clear lead
    assert CP.choose({"xla": 1.0, "pairs": 0.5}, "dense") == "pairs"               # rule's not a candidate


def test_rule_and_cached_modes_never_measure(planner, monkeypatch):
    monkeypatch.setenv("JAXMTL_CONV_PLAN", "rule")
    assert CP.plan_for(SHAPE) == CP.rule_plan(SHAPE)
    monkeypatch.setenv("JAXMTL_CONV_PLAN", "cached")
    assert CP.plan_for(SHAPE) == CP.rule_plan(SHAPE)                         # no entry: the rule
    assert planner == [] and not CP.cache_path().exists()
    assert {u["source"] for u in CP.used_plans()} == {"rule"}


def test_several_processes_never_measure(planner, monkeypatch):
    """Under jax.distributed, measuring processes would time each other and could compile different programs."""
    monkeypatch.setenv("JAXMTL_CONV_PLAN", "measure")
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert CP.plan_for(SHAPE) == CP.rule_plan(SHAPE) and planner == []


def test_an_unknown_mode_is_refused(monkeypatch):
    monkeypatch.setenv("JAXMTL_CONV_PLAN", "fastest")
    with pytest.raises(ValueError, match="JAXMTL_CONV_PLAN must be one of .* got 'fastest'"):
        conv_mod.conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 3, 4)), 1, 1)


@pytest.mark.parametrize("content,reason", [
    ("{not json", "Expecting property name"),
    ('{"format": 0, "plans": {}}', "not a format-1 conv plan cache"),
    (None, "written for another machine"),
    ("BAD_PLAN", "invalid entries"),
])
def test_a_corrupt_cache_is_ignored_with_a_warning_and_rewritten(planner, monkeypatch, content, reason):
    monkeypatch.setenv("JAXMTL_CONV_PLAN", "measure")
    path = CP.cache_path()
    path.parent.mkdir(parents=True)
    if content is None:
        content = json.dumps({"format": 1, "machine": {**CP.machine_key(), "cpu": "another"}, "plans": {}})
    elif content == "BAD_PLAN":
        content = json.dumps({"format": 1, "machine": CP.machine_key(),
                              "plans": {SHAPE.key(): {"plan": ["xla", "winograd", "xla"]}}})
    path.write_text(content)
    with pytest.warns(RuntimeWarning, match=reason) as record:
        plan = CP.plan_for(SHAPE)
    assert str(path) in str(record[0].message) and planner == [SHAPE]        # re-measured
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                       # the rewritten file is clean
        assert CP.read_cache(path)[SHAPE.key()]["plan"] == list(plan)


def test_a_cached_plan_that_does_not_apply_to_its_shape_is_re_measured(planner, monkeypatch):
    """"pairs" exists, but only for maps of <= 4 output pixels (a hand-edited or mis-keyed file)."""
    monkeypatch.setenv("JAXMTL_CONV_PLAN", "measure")
    CP.write_entry(CP.cache_path(), SHAPE.key(), {"plan": ["pairs", "xla", "xla"]})
    with pytest.warns(RuntimeWarning, match="not every formulation applies"):
        plan = CP.plan_for(SHAPE)
    assert planner == [SHAPE] and set(plan) <= set(SHAPE.candidates())


def _write_many(path: str, prefix: str, n: int, start_at: float) -> None:
    import time
    from pathlib import Path

    time.sleep(max(0.0, start_at - time.time()))  # both processes write at the same time
    for i in range(n):
        CP.write_entry(Path(path), f"{prefix}{i}", {"plan": ["xla", "xla", "xla"]})


def test_concurrent_writers_lose_nothing(tmp_path):
    """Two processes adding entries at once: every entry of both ends up in one valid file."""
    N = 100
    path = tmp_path / "plans.json"
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 5  # after both have started (spawn imports jax)
    procs = [ctx.Process(target=_write_many, args=(str(path), p, N, start_at)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    plans = CP.read_cache(path)
    assert sorted(plans) == sorted([f"a{i}" for i in range(N)] + [f"b{i}" for i in range(N)])


def test_same_cache_same_program_bit_identical(planner, monkeypatch):
    """A measured plan compiled twice (the second time from the cache, compilation caches cleared):
    the same gradient bits; and the value of XLA's conv to float32 rounding."""
    monkeypatch.setenv("JAXMTL_CONV_PLAN", "measure")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 4, 4, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)

    def grads():
        f = lambda x, w: jnp.sum(jnp.sin(conv_mod.conv2d(x, w, 1, 1)))  # noqa: E731
        return [np.asarray(g) for g in jax.jit(jax.grad(f, argnums=(0, 1)))(x, w)]

    first = grads()
    assert [u["source"] for u in CP.used_plans()] == ["measured"]
    CP.forget_plans()
    jax.clear_caches()
    second = grads()
    assert [u["source"] for u in CP.used_plans()] == ["cache"] and len(planner) == 1
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    monkeypatch.setenv("JAXMTL_CONV_PLAN", "rule")  # the rule's formulations agree to rounding
    CP.forget_plans()
    jax.clear_caches()
    # Measured in three runs (the measured plan differs from the rule's in some of them): at most
    # 5.2e-6 apart on gradients up to 11 in size, ~5 float32 ulp there; atol 1e-5 keeps 2x of it.
    for a, b in zip(first, grads()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_the_prepopulating_command_refuses_an_unknown_config(planner, capsys):
    from jaxmtl.cli import main

    assert main(["conv-plans", "--config", "tiny,huge"]) == 2
    assert "jaxmtl conv-plans: error: unknown config 'huge'" in capsys.readouterr().err
    assert planner == [] and not CP.cache_path().exists()
