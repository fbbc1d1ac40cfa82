"""The conversion table derived from the two modules (jaxmtl/parity/derive.py).

The hand-written table of torch_ref/convert.py is the independent expectation for the
multi-task model; the MLP tables below are written out by hand from the layer shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx

import mutants
from jaxmtl.config import CONFIGS
from jaxmtl.functional import init_model
from jaxmtl.parity import harness
from jaxmtl.parity.derive import DerivationError, derive_table
from jaxmtl.parity.multitask_port import batches
from jaxmtl.parity.tables import Entry, table_source
from jaxmtl.nn import torch_linear
from torch_ref.convert import conversion_table
from torch_ref.model import build_model


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with mutants.one_torch_thread():
        yield


@pytest.mark.parametrize("name", ["tiny", "small", "resnet18"])
def test_derived_table_equals_the_hand_table(name):
    cfg = CONFIGS[name]
    jax_in, torch_in = batches(cfg, "float32", [0])[0]
    t = harness.to_torch(torch_in)
    derived = derive_table(build_model(cfg, 0).eval(), nnx.eval_shape(lambda: init_model(cfg)),
                           lambda m: m(t.images, t.dyn), lambda m: m(jax_in.images, jax_in.dyn, train=False))
    assert derived == conversion_table(cfg)
    assert {e.kind for e in derived} == {"conv", "matrix", "vector", "count"}


def test_table_source_is_python_that_rebuilds_the_table():
    table = conversion_table(CONFIGS["tiny"])
    scope: dict = {}
    exec(table_source(table, "FROZEN"), scope)  # noqa: S102
    assert scope["FROZEN"] == table


# ---- MLPs: x (5, 4) -> Linear(4, 4) -> Linear(4, 4) -> Linear(4, 1) ---------------------------

def torch_mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)).double()


class Reordered(nnx.Module):
    """Attributes declared last layer first, named unlike torch's 0/1/2: the call order pairs them."""

    def __init__(self, last: int = 1, missing: bool = False):
        rngs = nnx.Rngs(0)
        self.out = torch_linear(4, last, rngs=rngs)
        self.second = None if missing else torch_linear(4, 4, rngs=rngs)
        self.first = torch_linear(4, 4, rngs=rngs)

    def __call__(self, x):
        x = self.first(x)
        if self.second is not None:
            x = self.second(x)
        return self.out(x)


def _loss(model, inputs, train):
    y = model(inputs)
    return (y ** 2).sum(), {"y": y}


X = np.random.default_rng(0).standard_normal((5, 4))


def _derive(nnx_model):
    return derive_table(torch_mlp(), nnx_model, lambda m: m(torch.from_numpy(X)), lambda m: m(X))


def test_declaration_order_and_names_do_not_matter():
    expected = [Entry(f"{i}.{p}", f"{j}/{q}", "params", kind, shape)
                for i, j, shapes in [(0, "first", ((4, 4), (4,))), (1, "second", ((4, 4), (4,))),
                                     (2, "out", ((1, 4), (1,)))]
                for (p, q, kind), shape in zip([("weight", "kernel", "matrix"), ("bias", "bias", "vector")], shapes)]
    assert _derive(nnx.eval_shape(lambda: Reordered())) == expected


def test_reordered_port_passes_parity_without_a_table():
    from jaxmtl.parity.precision import set_full_precision

    set_full_precision("float64")
    pair = harness.make_pair(torch_mlp(), nnx.eval_shape(lambda: Reordered()), None, _loss, _loss,
                             example=(X, X))
    for check in harness.compare(pair, [(X, X)]):
        assert check.passed, check.line()


def test_missing_layer_is_one_clear_error():
    with pytest.raises(DerivationError) as err:
        _derive(nnx.eval_shape(lambda: Reordered(missing=True)))
    msg = str(err.value)
    assert "torch layer 1 Linear(weight (4, 4), bias (4,)) matches no JAX layer" in msg
    assert "nearest candidates" in msg


def test_wrong_shaped_layer_is_one_clear_error():
    with pytest.raises(DerivationError) as err:
        _derive(nnx.eval_shape(lambda: Reordered(last=2)))
    msg = str(err.value)
    assert "torch layer 2 Linear(weight (1, 4), bias (1,)) matches no JAX layer" in msg
    assert "JAX layer out Linear(bias (2,), kernel (4, 2)) matches no torch layer" in msg
    assert "no JAX tensor fits torch weight (1, 4)" in msg


class TwoLookalikes(nnx.Module):
    """A layer whose two parameters have the same shape and names that say nothing."""

    def __init__(self):
        self.p = nnx.Param(np.zeros((4, 4)))
        self.q = nnx.Param(np.zeros((4, 4)))

    def __call__(self, x):
        return x @ self.p[...] @ self.q[...]


def test_ambiguous_tensors_are_an_error_not_a_guess():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4, bias=False).double()
    with pytest.raises(DerivationError, match="fits several JAX tensors equally well: p .4, 4. as matrix, "
                                              "q .4, 4. as matrix"):
        derive_table(lin, TwoLookalikes(), lambda m: m(torch.from_numpy(X)), lambda m: m(X))
