"""The generic harness on two unrelated pairs: the autodiff study's MLP and the multi-task model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import optax
import pytest
import torch
from flax import nnx

import mutants
from jaxmtl.parity import harness
from jaxmtl.parity.precision import TOLERANCES
from jaxmtl.trees import flatten_state
from torch_ref.convert import Entry


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with mutants.one_torch_thread():
        yield


# ---- the study's MLP (mlp_intermediates): x (5, 3) -> Linear(3, 4) -> Linear(4, 1), loss ((y - y2.squeeze()) ** 2).sum() --

class NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(3, 4, rngs=rngs)
        self.l2 = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.l1(x))


MLP_TABLE = [Entry("0.weight", "l1/kernel", "params", "matrix", (4, 3)),
             Entry("0.bias", "l1/bias", "params", "vector", (4,)),
             Entry("1.weight", "l2/kernel", "params", "matrix", (1, 4)),
             Entry("1.bias", "l2/bias", "params", "vector", (1,))]


def jax_mlp_loss(model, inputs, train):
    x, y = inputs
    y2 = model(x)
    return ((y - y2.squeeze()) ** 2).sum(), {"y2": y2}


def torch_mlp_loss(module, inputs, train):
    x, y = inputs
    y2 = module(x)
    return ((y - y2.squeeze()) ** 2).sum(), {"y2": y2}


@pytest.fixture(scope="module")
def mlp_pair():
    from jaxmtl.parity.precision import set_full_precision

    set_full_precision("float64")
    torch.manual_seed(4)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)).double()
    return harness.make_pair(module, NnxMLP(nnx.Rngs(0)), MLP_TABLE, torch_mlp_loss, jax_mlp_loss,
                             dtype="float64")


def mlp_batches(n):
    rng = np.random.default_rng(4)
    out = []
    for _ in range(n):
        x, y = rng.standard_normal((5, 3)), rng.standard_normal(5)
        out.append(((x, y), (x, y)))
    return out


OPTS = [harness.OptimizerPair("sgd", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9), optax.sgd(0.01, 0.9)),
        harness.OptimizerPair("adam", lambda p: torch.optim.Adam(p, lr=0.01), optax.adam(0.01))]


def test_mlp_pair_passes_every_check(mlp_pair):
    checks = {c.name: c for c in harness.compare(mlp_pair, mlp_batches(5), optimizers=OPTS, steps=5)}
    assert set(checks) == {"forward/train", "forward/eval", "grad/total", "curve/sgd", "params_after/sgd",
                           "curve/adam", "params_after/adam"}  # no BatchNorm: no batch_stats checks
    for c in checks.values():
        assert c.passed, c.line()
    assert set(checks["grad/total"].errors) == {"0.weight", "0.bias", "1.weight", "1.bias"}


def test_mlp_gradient_matches_the_seed_formula(mlp_pair):
    """Independent of both frameworks: dl/dy2 = 2 (y2 - y), the hand derivation."""
    (x, y), _ = mlp_batches(1)[0]
    w1, b1, w2, b2 = (mlp_pair.initial_state[k] for k in ("0.weight", "0.bias", "1.weight", "1.bias"))
    y1 = x @ w1.T + b1
    y2 = (y1 @ w2.T + b2).squeeze()
    dy2 = 2 * (y2 - y)
    (_, _), grads = mlp_pair.grad_fn(mlp_pair.params, mlp_pair.batch_stats, mlp_pair.rest, (x, y))
    flat = flatten_state(grads)
    np.testing.assert_allclose(flat["l2/bias"], [dy2.sum()], rtol=1e-12)
    np.testing.assert_allclose(flat["l2/kernel"][:, 0], y1.T @ dy2, rtol=1e-12)


def test_wrong_mlp_table_is_caught(mlp_pair):
    """A wrong conversion for the second pair too: the bias of l1 read as l2's is a key error."""
    from torch_ref.convert import ConversionError

    bad = MLP_TABLE[:3] + [Entry("1.bias", "l1/bias", "params", "vector", (1,))]
    with pytest.raises((ConversionError, KeyError), match="l2/bias|l1/bias"):
        harness.make_pair(mlp_pair.torch_module, NnxMLP(nnx.Rngs(0)), bad, torch_mlp_loss, jax_mlp_loss)


def test_multitask_model_through_the_generic_harness():
    """The multi-task model via the same API: forward (train/eval), BN statistics, gradient,
    and 2 SGD steps; the forward checks run eagerly to spare a second whole-model compile."""
    import jax

    from jaxmtl.optim import OptimConfig, make_optimizer
    from torch_ref.optim import clip_and_norm
    from torch_ref.optim import make_optimizer as torch_make_optimizer

    pair = mutants.multitask_pair64()  # shared with the finite-difference test: one compile
    bs = mutants.tiny_batches()[:2]
    with jax.disable_jit():
        checks = harness.forward_checks(pair, bs[0]) + harness.forward_checks(pair, bs[0], train=False)
    cfg = OptimConfig("sgd", lr=0.05, momentum=0.9)
    opt = harness.OptimizerPair("sgd", lambda p: torch_make_optimizer(p, cfg), make_optimizer(cfg),
                                lambda p: clip_and_norm(p, cfg))
    checks += harness.gradient_checks(pair, bs[0]) + harness.training_checks(pair, bs, opt)
    names = [c.name for c in checks]
    assert names == ["forward/train", "batch_stats", "forward/eval", "grad/total", "grad/loss_final",
                     "grad/loss_pose", "grad/loss_vel", "grad/weighted_sum",
                     "curve/sgd", "params_after/sgd", "batch_stats_after/sgd"]
    for c in checks:
        assert c.passed, c.line()
    assert checks[3].tolerance == TOLERANCES["float64"]
    assert len(checks[3].errors) == len(list(pair.torch_module.parameters()))


def test_readme_example_runs():
    """The README's 'your own port' example (derived table, assert_port_parity) runs as written."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### 2. One assertion in your pytest suite", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
    assert all(c.passed for c in scope["checks"])
    assert {c.name for c in scope["checks"]} >= {"forward/train", "grad/total", "curve/adam"}
