"""The float32 envelope check (jaxmtl/parity/envelope.py): the mechanism on hand-made traces,
then on the conv-BatchNorm pair, where a BatchNorm epsilon mistake leaves torch's own float32 noise."""

from __future__ import annotations

import numpy as np
import pytest

from jaxmtl.parity import envelope as E


def _trace(losses, w, mean):
    """Steps of a one-weight model with one BatchNorm running mean."""
    return E.Trace(np.array(losses, float), [{"w": np.array([a]), "bn.running_mean": np.array([m])}
                                             for a, m in zip(w, mean)])


def test_distance_is_per_step_and_per_metric():
    base = _trace([2.0, 4.0], [1.0, 2.0], [10.0, 10.0])
    other = _trace([2.0, 5.0], [1.5, 2.0], [10.0, 11.0])
    d = E.distance(other, base)
    np.testing.assert_allclose(d.loss, [0.0, 0.25])
    np.testing.assert_allclose(d.params, [0.5, 0.0])
    np.testing.assert_allclose(d.batch_stats, [0.0, 0.1])


def test_the_port_passes_inside_the_envelope_and_fails_where_it_leaves_it():
    base = _trace([1.0] * 4, [1.0] * 4, [1.0] * 4)
    torch_noise = _trace([1.0, 1.01, 1.1, 2.0], [1.0] * 4, [1.0] * 4)      # spread 0, .01, .1, 1 in the loss
    floor = {"loss": 1e-3, "params": 1e-3, "batch_stats": 1e-3}
    inside = _trace([1.0, 1.02, 1.5, 3.0], [1.0] * 4, [1.0] * 4)            # 2x, 5x, 2x the spread
    env = E.envelope("sgd", base, [torch_noise], inside, k=10.0, floor=floor)
    assert env.first_exit is None and E.envelope_check(env).passed
    np.testing.assert_allclose(env.ratio.loss, [0.0, 0.02 / 0.101, 0.5 / 1.001, 2.0 / 10.001])
    outside = _trace([1.0, 1.2, 1.5, 3.0], [1.0] * 4, [1.0] * 4)            # 20x the spread at step 2
    env = E.envelope("sgd", base, [torch_noise], outside, k=10.0, floor=floor)
    check = E.envelope_check(env)
    assert env.first_exit == 2 and not check.passed
    assert check.worst == "loss@step2" and check.max_rel_err == pytest.approx(0.2 / 0.101)


STEPS = 50


@pytest.fixture(scope="module")
def torch_runs():
    """The conv-BatchNorm pair (float32), Adam lr 1e-2 + clipping, 50 batches: the base torch run
    and its perturbed twins, shared by the port and its mutants."""
    from conv_bn_pair import conv_bn_batches, conv_bn_spec
    from mutants import optimizer_pair

    from jaxmtl.parity import harness

    pair = harness.pair_from_spec(conv_bn_spec("float32"), "float32")
    batches = conv_bn_batches("float32", range(STEPS))
    opt = optimizer_pair("adam", lr=1e-2, clip_norm=1.0)
    base = E.torch_trace(pair, batches, opt)
    return pair, batches, opt, base, [E.torch_trace(pair, batches, opt, p) for p in E.PERTURBATIONS]


def _envelope(torch_runs, pair=None, **jax_cfg):
    import dataclasses

    from mutants import optimizer_pair

    good, batches, opt, base, perturbed = torch_runs
    if jax_cfg:  # the JAX side's optimizer built with these changes; torch stays the truth
        opt = dataclasses.replace(opt, optax_tx=optimizer_pair("adam", **{"lr": 1e-2, "clip_norm": 1.0,
                                                                          **jax_cfg}).optax_tx)
    return E.envelope("adam", base, perturbed, E.jax_trace(pair or good, batches, opt))


def test_the_unmutated_port_stays_inside_torchs_own_noise(torch_runs):
    env = _envelope(torch_runs)
    assert len(env.port.loss) == STEPS and env.first_exit is None
    # Measured 0.60 of the envelope (x64 off; 0.70 after 100 steps): this small model is not
    # chaotic, so the floors set the width; on `tiny` the unmutated worst was 0.24-0.50.
    assert E.envelope_check(env).passed


def test_float32_mistakes_leave_the_envelope_from_the_first_step(torch_runs):
    from conv_bn_pair import conv_bn_spec

    from jaxmtl.nn import BatchNorm2d
    from jaxmtl.parity import harness

    class EpsBatchNorm(BatchNorm2d):  # Flax's default epsilon where torch has 1e-5
        def __init__(self, n):
            super().__init__(n, eps=1e-3)

    wrong_bn = harness.pair_from_spec(conv_bn_spec("float32", EpsBatchNorm), "float32")
    for mistake, env in (("Adam eps 1e-7", _envelope(torch_runs, eps=1e-7)),
                         ("BatchNorm eps 1e-3", _envelope(torch_runs, wrong_bn))):
        check = E.envelope_check(env)
        # measured: 20x (Adam eps) and 2.0e3x (BatchNorm eps) the envelope, out at step 1
        assert not check.passed and check.max_rel_err >= 10 and env.first_exit == 1, (mistake, check.line())
