"""The float32 envelope check (jaxmtl/parity/envelope.py): the mechanism on hand-made distances, then
on the conv-BatchNorm pair, where the unmutated port passes both parts on every batch seed tried
(its trajectory inside torch's own float32 noise, its optimizer on recorded gradients within
float32 rounding) and each of four float32 mistakes fails `envelope/adam` with a margin.
(`make parity` runs it on `tiny` for 100 steps.)"""

from __future__ import annotations

import contextlib
import dataclasses
from unittest import mock

import numpy as np
import pytest

from jaxmtl.parity import envelope as E

FLOOR = {"loss": 1e-3, "params": 1e-3, "batch_stats": 1e-3}


def _trace(losses, w, mean):
    """Steps of a one-weight model with one BatchNorm running mean."""
    return E.Trace(np.array(losses, float), [{"w": np.array([a]), "bn.running_mean": np.array([m])}
                                             for a, m in zip(w, mean)])


def _loss_only(losses) -> E.Distance:
    zeros = np.zeros(len(losses))
    return E.Distance(np.array(losses, float), zeros, zeros)


def test_distance_is_per_step_and_per_metric():
    anchor = _trace([2.0, 4.0], [1.0, 2.0], [10.0, 10.0])
    other = _trace([2.0, 5.0], [1.5, 2.0], [10.0, 11.0])
    d = E.distance(other, anchor)
    np.testing.assert_allclose(d.loss, [0.0, 0.25])
    np.testing.assert_allclose(d.params, [0.5, 0.0])
    np.testing.assert_allclose(d.batch_stats, [0.0, 0.1])


def test_the_port_passes_inside_the_envelope_and_fails_where_it_leaves_it():
    members = {"a": _loss_only([0.0, 0.01, 0.1, 1.0]), "b": _loss_only([0.0, 0.005, 0.02, 0.5])}
    inside = _loss_only([0.0, 0.02, 0.5, 2.0])                       # 2x, 5x, 2x the largest member
    env = E.envelope("sgd", members, inside, k=10.0, floor=FLOOR)
    assert env.first_exit is None and E.envelope_check(env).passed
    np.testing.assert_allclose(env.spread.loss, [0.0, 0.01, 0.1, 1.0])
    np.testing.assert_allclose(env.ratio.loss, [0.0, 0.02 / 0.101, 0.5 / 1.001, 2.0 / 10.001])
    outside = _loss_only([0.0, 0.2, 0.5, 2.0])                       # 20x the spread at step 2
    env = E.envelope("sgd", members, outside, k=10.0, floor=FLOOR)
    check = E.envelope_check(env)
    assert env.first_exit == 2 and not check.passed
    assert check.worst == "loss@step2" and check.max_rel_err == pytest.approx(0.2 / 0.101)
    nan = E.envelope("sgd", members, _loss_only([0.0, np.nan, 0.0, 0.0]), k=10.0, floor=FLOOR)
    assert nan.first_exit == 2 and not E.envelope_check(nan).passed   # a NaN loss leaves the envelope


def test_the_spread_keeps_the_largest_distance_reached_so_far():
    """A distance is the size of a signed difference: every torch run may cross the anchor at one
    step by chance; the spread does not dip with it."""
    members = {"a": _loss_only([0.1, 1e-9, 0.2]), "b": _loss_only([0.05, 1e-9, 0.1])}
    env = E.envelope("sgd", members, _loss_only([0.1, 0.1, 0.1]), k=10.0, floor=FLOOR)
    np.testing.assert_allclose(env.spread.loss, [0.1, 0.1, 0.2])
    assert env.first_exit is None


def test_each_torch_member_is_judged_against_the_others():
    members = {"a": _loss_only([0.01, 0.01]), "b": _loss_only([0.02, 0.01]), "far": _loss_only([1.0, 0.01])}
    env = E.envelope("adam", members, _loss_only([0.0, 0.0]), k=10.0, floor=FLOOR)
    own = E.torch_self_ratio(env)
    assert own["far"] == pytest.approx(1.0 / (10 * 0.02 + 1e-3))      # outside the others' envelope
    assert own["a"] == pytest.approx(0.01 / (10 * 1.0 + 1e-3))        # the others reached 1.0 at step 1
    assert "torch's own runs against each other: worst 4.98" in E.describe(env)


def _replay(name, worst):
    from jaxmtl.parity.replay import ReplayRun

    return ReplayRun(name, np.array([worst]), {"w": worst})


def test_the_optimizer_part_fails_the_envelope_inside_the_trajectory_band():
    from jaxmtl.parity.replay import REPLAY_TOLERANCE

    tol = REPLAY_TOLERANCE["float32"]
    members = {"a": _loss_only([0.1, 0.1])}
    inside = _loss_only([0.0, 0.0])
    env = E.envelope("adam", members, inside, k=10.0, floor=FLOOR, replays=[_replay("adam", tol / 2),
                                                                           _replay("adam@1e-05", 30 * tol)])
    check = E.envelope_check(env)
    assert env.first_exit is None and not check.passed
    assert check.worst == "optimizer:replay/adam@1e-05" and check.max_rel_err == pytest.approx(30)
    assert "FAIL" in E.describe(env) and "replay/adam@1e-05" in E.describe(env)
    good = E.envelope("adam", members, inside, k=10.0, floor=FLOOR, replays=[_replay("adam", tol / 2)])
    assert E.envelope_check(good).passed and E.envelope_check(good).max_rel_err == pytest.approx(0.5)


def test_bad_envelope_input_is_refused():
    with pytest.raises(ValueError, match="at least one torch float32 run"):
        E.envelope("adam", {}, _loss_only([0.0]))
    with pytest.raises(ValueError, match=r"replays of other optimizers: \['adamw'\]"):
        E.envelope("adam", {"a": _loss_only([0.0])}, _loss_only([0.0]), replays=[_replay("adamw", 0.0)])
    with pytest.raises(ValueError, match="unknown envelope member 'threads:4'"):
        E.torch_trace(None, [], None, "threads:4")


STEPS = 50
SEEDS = (0, 1, 2)   # batch sets; the pair's initial weights are fixed
LR, CLIP = 1e-2, 1.0


@pytest.fixture(scope="module")
def torch_runs():
    """The conv-BatchNorm pair (float32), Adam lr 1e-2 + clipping, 50 batches per seed: the torch
    float64 anchor, the torch float32 members and the recorded gradients of the torch float32 run
    (for the optimizer part), shared by the port and its mutants."""
    from conv_bn_pair import conv_bn_batches, conv_bn_spec

    from jaxmtl.parity import harness, replay

    pair = harness.pair_from_spec(conv_bn_spec("float32"), "float32")
    opt = _adam(1.0)
    runs = {}
    for seed in SEEDS:
        batches = conv_bn_batches("float32", range(1000 * seed, 1000 * seed + STEPS))
        anchor = E.torch_trace(pair, batches, opt, E.ANCHOR)
        members = {m: E.distance(E.torch_trace(pair, batches, opt, m), anchor) for m in E.MEMBERS}
        runs[seed] = batches, anchor, members, replay.record_gradients(pair, batches, opt)
    return pair, opt, runs


def _adam(scale: float, **jax_side):
    """Adam lr 1e-2 with the clip threshold 1.0 * scale; `jax_side` (OptimConfig changes, `patches`)
    changes the optax chain only: torch stays the truth."""
    from mutants import optimizer_pair

    truth = optimizer_pair("adam", lr=LR, clip_norm=CLIP * scale)
    if not jax_side:
        return truth
    return dataclasses.replace(truth, optax_tx=optimizer_pair("adam", lr=LR, clip_norm=CLIP * scale,
                                                              **jax_side).optax_tx)


def _envelope(torch_runs, seed=0, pair=None, replays=True, **jax_side) -> E.Envelope:
    """envelope/adam of the port (or of `pair`, a mutant), with `jax_side` changes to its optax chain;
    with `replays`, the optimizer part: the seed's recorded gradients at scale 1 and REPLAY_SCALE."""
    from jaxmtl.parity import replay

    good_pair, _, runs = torch_runs
    batches, anchor, members, grads = runs[seed]
    port = E.jax_trace(pair or good_pair, batches, _adam(1.0, **jax_side))
    params = replay.parameters(good_pair)
    runs = [replay.replay(params, grads, dataclasses.replace(_adam(scale, **jax_side), name=name), scale)
            for name, scale in (("adam", 1.0), (f"adam@{replay.REPLAY_SCALE:g}", replay.REPLAY_SCALE))]
    return E.envelope("adam", members, E.distance(port, anchor), replays=runs if replays else ())


@pytest.mark.parametrize("seed", SEEDS)
def test_the_unmutated_port_passes_both_parts(torch_runs, seed):
    env = _envelope(torch_runs, seed)
    assert len(env.port.loss) == STEPS and len(env.members) == len(E.MEMBERS)
    assert set(env.optimizer) == {"adam", "adam@1e-05"}
    # Measured (seeds 0-2, x64 on): trajectory 0.011-0.014 of the envelope, torch's own runs
    # <= 0.048; optimizer part 0.003-0.011 of the replay tolerance.
    assert env.first_exit is None and E.envelope_check(env).passed, E.describe(env)
    assert all(r <= 1 for r in E.torch_self_ratio(env).values())


def _mistake(name: str):
    """(a mutant pair or None, changes to the JAX optax chain, the context the JAX side runs in)."""
    from conv_bn_pair import conv_bn_spec
    from mutants import adam_without_bias_correction

    from jaxmtl.nn import BatchNorm2d
    from jaxmtl.parity import harness

    class EpsBatchNorm(BatchNorm2d):  # Flax's default epsilon where torch has 1e-5
        def __init__(self, n):
            super().__init__(n, eps=1e-3)

    none = contextlib.nullcontext()
    return {"clip epsilon dropped": (None, {}, mock.patch("jaxmtl.optim.TORCH_CLIP_EPS", 0.0)),
            "Adam eps 1e-7": (None, {"eps": 1e-7}, none),
            "Adam without bias correction": (None, {"patches": {"optax.adam": adam_without_bias_correction}}, none),
            "BatchNorm eps 1e-3": (harness.pair_from_spec(conv_bn_spec("float32", EpsBatchNorm), "float32"), {}, none),
            }[name]


MISTAKES = ["clip epsilon dropped", "Adam eps 1e-7", "Adam without bias correction", "BatchNorm eps 1e-3"]


@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_float32_mistake_fails_the_envelope(torch_runs, mistake):
    pair, jax_side, context = _mistake(mistake)
    with context:
        env = _envelope(torch_runs, 0, pair, **jax_side)
    check = E.envelope_check(env)
    # Measured (ratio to the tolerance 1, seed 0, x64 on): clip epsilon 1.1e3 and Adam eps 8.2e3
    # (optimizer part, replay/adam@1e-05), bias correction 1.7e5 (trajectory; replay/adam 1.1e5),
    # BatchNorm eps 567 (trajectory; the optimizer part stays at 0.006).
    assert not check.passed and check.max_rel_err >= 10, (mistake, E.describe(env))


@pytest.mark.parametrize("mistake", ["Adam without bias correction", "BatchNorm eps 1e-3"])
def test_model_mistakes_leave_the_trajectory_envelope(torch_runs, mistake):
    """The trajectory part alone (no replays) flags these."""
    pair, jax_side, context = _mistake(mistake)
    with context:
        env = _envelope(torch_runs, 0, pair, replays=False, **jax_side)
    check = E.envelope_check(env)
    # Measured 1.7e5 (bias correction) and 567 (BatchNorm eps) times the envelope.
    assert not check.passed and check.max_rel_err >= 100 and env.first_exit is not None, (mistake, E.describe(env))


@pytest.mark.parametrize("mistake", ["clip epsilon dropped", "Adam eps 1e-7"])
def test_an_optimizer_epsilon_needs_the_optimizer_part(torch_runs, mistake):
    """The trajectory alone stays inside (Adam eps measured 0.52): at k = ENVELOPE_K it does not
    resolve an optimizer epsilon, which is why the envelope judges the replays too."""
    pair, jax_side, context = _mistake(mistake)
    with context:
        env = _envelope(torch_runs, 0, pair, replays=False, **jax_side)
    assert env.first_exit is None and E.envelope_check(env).passed, E.describe(env)


def test_the_parity_command_writes_the_float32_envelope(tmp_path):
    """`jaxmtl parity --dtype float32 --steps N` (what `make parity` runs on `tiny`): envelope/<opt>
    in parity.json with its curves and its optimizer part, described in report.md, drawn in curves.png."""
    import json

    from jaxmtl.cli import main
    from jaxmtl.parity import replay

    out = tmp_path / "p"
    assert main(["parity", "--pair", "conv_bn_pair:conv_bn_spec", "--dtype", "float32", "--steps", "20",
                 "--out", str(out)]) == 0
    doc = json.loads((out / "parity.json").read_text())
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["envelope/sgd"]["passed"] and "replay/sgd" in checks
    [env] = doc["envelopes"]
    assert env["name"] == "sgd" and set(env["optimizer_ratio"]) == {"sgd"} and len(env["port/loss"]) == 20
    tolerance = replay.REPLAY_TOLERANCE["float32"]
    assert env["optimizer_ratio"]["sgd"] == pytest.approx(checks["replay/sgd"]["max_rel_err"] / tolerance)
    assert "envelope/sgd: PASS" in (out / "report.md").read_text()
    assert (out / "curves.png").stat().st_size > 0
