"""`jaxmtl.testing.assert_port_parity` and the `port_parity` pytest fixture (jaxmtl's pytest plugin)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx

import mutants
from jaxmtl.nn import torch_linear
from jaxmtl.parity.harness import OptimizerPair, PairSpec


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with mutants.one_torch_thread():
        yield


class BiasForgotten(nnx.Module):
    """A Linear port that forgets its bias in the forward pass."""

    def __init__(self, fin: int, fout: int):
        self.kernel = nnx.Param(np.zeros((fin, fout)))
        self.bias = nnx.Param(np.zeros((fout,)))

    def __call__(self, x):
        return x @ self.kernel[...]


class Net(nnx.Module):
    """x (5, 3) -> Linear(3, 4) -> tanh -> Linear(4, 2), with one of two planted mistakes:
    bug="between": the activation between the layers is scaled by 1.001;
    bug="inside": the second layer forgets its bias."""

    def __init__(self, bug: str | None = None):
        rngs = nnx.Rngs(0)
        self.hidden = torch_linear(3, 4, rngs=rngs)
        self.head = BiasForgotten(4, 2) if bug == "inside" else torch_linear(4, 2, rngs=rngs)
        self.scale = 1.001 if bug == "between" else 1.0

    def __call__(self, x):
        import jax.numpy as jnp

        return self.head(jnp.tanh(self.hidden(x)) * self.scale)


def _spec(bug: str | None = None) -> PairSpec:
    import optax

    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    rng = np.random.default_rng(0)
    data = [(x, x) for x in (rng.standard_normal((5, 3)) for _ in range(2))]

    def loss(model, x, train):
        y = model(x)
        return (y ** 2).mean(), {"y": y}

    sgd = OptimizerPair("sgd", lambda p: torch.optim.SGD(p, lr=0.1), optax.sgd(0.1))
    return PairSpec(ref, nnx.eval_shape(lambda: Net(bug)), loss, loss, data, [sgd], name="net")


def test_fixture_passes_a_correct_port(port_parity):
    checks = port_parity(_spec(), steps=3)
    assert {c.name for c in checks} >= {"forward/train", "grad/total", "curve/sgd", "params_after/sgd"}


def test_failure_names_check_tensor_and_layer(port_parity):
    with pytest.raises(AssertionError) as err:
        port_parity(_spec(bug="inside"))
    msg = str(err.value)
    assert "port 'net' (float64) fails" in msg
    assert "FAIL forward/train: worst tensor y" in msg
    assert "FAIL forward/train: first divergent layer 2 (forward)" in msg


def test_a_mistake_between_layers_is_placed_before_the_next_layer(port_parity):
    with pytest.raises(AssertionError) as err:
        port_parity(_spec(bug="between"))
    assert "first divergent layer 2 (forward; its input already differs" in str(err.value)


@pytest.mark.parametrize("argv,message", [
    (["--pair", "no_colon"], "--pair must look like package.module:function"),
    (["--pair", "no_such_module_xyz:spec"], "cannot import 'no_such_module_xyz'"),
    (["--pair", "test_testing:no_such_function"], "has no function 'no_such_function'"),
    (["--pair", "test_testing:_not_a_spec"], "returned 'int', not a jaxmtl.parity.harness.PairSpec"),
    (["--pair", "test_testing:_spec", "--config", "tiny"], "--config and --pair exclude each other"),
    (["--pair", "test_testing:_spec", "--steps", "2", "--optimizer", "sgd"], "--optimizer does not apply to --pair"),
])
def test_jaxmtl_parity_pair_refuses_bad_arguments(argv, message, tmp_path, capsys):
    from jaxmtl.cli import main

    assert main(["parity", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "parity.json").exists()


def _not_a_spec(dtype):
    return 3
