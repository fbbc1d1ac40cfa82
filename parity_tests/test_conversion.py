"""The torch <-> JAX conversion table: complete, shape-checked, bit-exact round trip."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from jaxmtl.config import RESNET18, TINY
from jaxmtl.functional import init_model, split_model
from jaxmtl.trees import flatten_state, path_name
from torch_ref.convert import (ConversionError, conversion_table, jax_state_to_torch_dict, jax_to_torch,
                               state_dict_numpy, torch_module_to_jax_state, torch_to_jax)
from torch_ref.model import ResNet, build_model


@pytest.fixture(scope="module")
def torch_tiny():
    return build_model(TINY, seed=0)


def _jax_templates():
    """(params, batch_stats) of TINY's NNX model, structure and shapes only (nnx.eval_shape):
    the conversion fills them, and JAX's initialisers (a compilation per shape) never run."""
    _, p, s = split_model(nnx.eval_shape(lambda: init_model(TINY)))
    return p, s


def _shapes(template) -> dict[str, tuple[int, ...]]:
    """{name: shape} of an abstract state (flatten_state would make each leaf a 0-d object array)."""
    return {path_name(k): v.shape for k, v in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(template))[0]}


def test_round_trip_is_bit_exact(torch_tiny):
    p, s = _jax_templates()
    sd = state_dict_numpy(torch_tiny)
    params, stats = torch_module_to_jax_state(torch_tiny, TINY, p, s)
    back = jax_state_to_torch_dict(params, stats, TINY)
    assert sorted(back) == sorted(sd)
    for k in sd:
        assert back[k].dtype == sd[k].dtype, k
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_table_covers_both_models_exactly(torch_tiny):
    table = conversion_table(TINY)
    assert sorted(e.torch_key for e in table) == sorted(torch_tiny.state_dict())
    p, s = _jax_templates()
    assert sorted(e.jax_key for e in table if e.collection == "params") == sorted(flatten_state(p))
    assert sorted(e.jax_key for e in table if e.collection == "batch_stats") == sorted(flatten_state(s))
    n_torch = sum(x.numel() for x in torch_tiny.parameters())
    assert n_torch == sum(int(np.prod(shape)) for shape in _shapes(p).values())


def test_backbone_has_torchvision_resnet18_keys():
    """torchvision resnet18: 20 convs + 20 BNs x 5 entries (+ fc, which the backbone omits) = 120 keys."""
    sd = ResNet(3, RESNET18.widths).state_dict()
    assert len(sd) == 120
    expected_shapes = {"conv1.weight": (64, 3, 7, 7), "bn1.running_var": (64,),
                       "layer1.0.conv1.weight": (64, 64, 3, 3), "layer2.0.downsample.0.weight": (128, 64, 1, 1),
                       "layer2.0.downsample.1.num_batches_tracked": (), "layer4.1.conv2.weight": (512, 512, 3, 3),
                       "layer4.1.bn2.bias": (512,)}
    for k, shape in expected_shapes.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith("layer1.0.downsample") for k in sd)


def test_missing_unexpected_and_misshaped_keys_are_named(torch_tiny):
    sd = state_dict_numpy(torch_tiny)
    broken = dict(sd)
    del broken["gru.bias_hh_l0"]
    broken["gru.bias_hh_l1"] = np.zeros(3)
    broken["classifier.weight"] = np.zeros((7, 16), np.float32)
    with pytest.raises(ConversionError) as e:
        torch_to_jax(broken, TINY)
    msg = str(e.value)
    assert "gru.bias_hh_l0" in msg and "gru.bias_hh_l1" in msg
    assert "classifier.weight" in msg and "(4, 16)" in msg and "(7, 16)" in msg


def test_state_dict_from_another_config_is_refused():
    sd = state_dict_numpy(build_model(RESNET18, seed=0))
    with pytest.raises(ConversionError, match="backbone.conv1.weight: expected \\(8, 3, 7, 7\\), got \\(64, 3, 7, 7\\)"):
        torch_to_jax(sd, TINY)


def test_jax_side_is_checked_too(torch_tiny):
    flat = torch_to_jax(state_dict_numpy(torch_tiny), TINY)
    flat["params"]["gru/w_ih"] = flat["params"]["gru/w_ih"].T  # (3H, in) where (in, 3H) belongs
    with pytest.raises(ConversionError, match="gru/w_ih"):
        jax_to_torch(flat, TINY)


def test_gradient_dict_converts_with_the_same_table(torch_tiny):
    grads = {k: np.ones(tuple(p.shape), np.float32) for k, p in torch_tiny.named_parameters()}
    flat = torch_to_jax(grads, TINY, collections=("params",))
    p, _ = _jax_templates()
    assert {k: v.shape for k, v in flat["params"].items()} == _shapes(p)


def test_a_counter_beyond_int32_is_refused_not_wrapped():
    from jaxmtl.parity.tables import LAYOUTS

    assert LAYOUTS["count"].to_jax(np.int64(2**31 - 1)) == 2**31 - 1
    with pytest.raises(ConversionError, match="does not fit JAX's int32 count"):
        LAYOUTS["count"].to_jax(np.int64(2**31))
