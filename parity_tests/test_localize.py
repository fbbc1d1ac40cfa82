"""The report names the layer where a port goes wrong: each single-layer porting mistake of
test_mutations.py, planted in one layer, is localised to exactly that layer.

The mutants run eagerly (jax.disable_jit), as in test_mutations.py: eager primitives
compile once per shape and are shared by every mutant, where a jit would compile the
whole model for each.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import jax
import pytest

import mutants
from jaxmtl.config import TINY
from jaxmtl.parity import localize
from jaxmtl.parity.multitask_port import batches, multitask_pair

L20_BN2 = "backbone/layer2/0/bn2"

# (mistake, how to build the mutant pair: (patch or None, multitask_pair keywords),
# the torch layer it lives in, direction).
CASES = [
    ("Flax 'SAME' padding on stride-2 convs (first: the stem)",
     lambda: (mock.patch("jaxmtl.nn.conv.conv2d", mutants.same_padding_conv2d), {}), "backbone.conv1", "forward"),
    ("BN momentum 0.9 (torch's 0.1 as Flax momentum) in one BN",
     lambda: (None, {"jax_model_fn": mutants.mutate_layer(L20_BN2, mutants.set_attr("momentum", 0.9))}),
     "backbone.layer2.0.bn2", "forward"),
    ("BN eps 1e-3 in one BN",
     lambda: (None, {"jax_model_fn": mutants.mutate_layer("backbone/layer3/1/bn1", mutants.set_attr("eps", 1e-3))}),
     "backbone.layer3.1.bn1", "forward"),
    ("BN biased running variance in one BN",
     lambda: (None, {"jax_model_fn": mutants.mutate_layer("backbone/layer1/1/bn1",
                                                          mutants.set_class(mutants.BiasedVarBatchNorm))}),
     "backbone.layer1.1.bn1", "forward"),
    ("GRU gate order r/z swapped", lambda: (None, {"table": mutants.gru_rz_swapped(TINY)}), "gru", "forward"),
    ("NCHW/NHWC kernel mix-up in one conv",
     lambda: (None, {"table": mutants.nchw_nhwc_mixup(TINY, {"backbone.layer2.0.conv1.weight"})}),
     "backbone.layer2.0.conv1", "forward"),
    ("BN backward without d mean / d x in one BN (backward only)",
     lambda: (None, {"jax_model_fn": mutants.mutate_layer(L20_BN2, mutants.set_class(mutants.StopGradMeanBatchNorm))}),
     "backbone.layer2.0.bn2", "backward"),
]


_DONE: dict = {}


def _case(name: str):
    """The localisation of CASES[name], computed once per module."""
    if name not in _DONE:
        _DONE[name] = _localise(next(c[1] for c in CASES if c[0] == name))
    return _DONE[name]


def _localise(build, cfg=TINY):
    patch, kw = build()
    with patch or contextlib.nullcontext(), jax.disable_jit():
        pair = multitask_pair(cfg, "float64", **kw)
        return localize.localize(pair, batches(cfg, "float64", [11])[0])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_mutation_is_localised_to_its_layer(case):
    name, _, layer, direction = case
    loc = _case(name)
    found = loc.forward if direction == "forward" else loc.backward
    assert found is not None, f"no {direction} divergence found"
    assert (found.layer, found.inside) == (layer, True), found
    assert found.error > 100 * loc.tolerance
    if direction == "backward":  # the forward is untouched by a backward-only mistake
        assert loc.forward is None, loc.forward
    rows = {r.torch_name: r for r in loc.layers}
    upstream = [r for r in loc.layers[:list(rows).index(layer)]]
    assert all(r.output <= loc.tolerance for r in upstream)  # nothing before it is off


def test_transposed_square_linear_is_localised():
    loc = _localise(lambda: (None, {"table": mutants.untransposed_classifier(mutants.SQUARE)}), mutants.SQUARE)
    assert (loc.forward.layer, loc.forward.what) == ("classifier", "output")


def test_unmutated_model_has_no_divergent_layer():
    with jax.disable_jit():
        loc = localize.localize(mutants.multitask_pair64(), batches(TINY, "float64", [11])[0])
    assert loc.forward is None and loc.backward is None
    n_layers = sum(1 for k in mutants.multitask_pair64().initial_state if k.endswith((".weight", ".weight_ih_l0")))
    assert len(loc.layers) == n_layers  # every layer that owns tensors was seen on both sides
    for r in loc.layers:
        for col in localize.COLUMNS:
            v = getattr(r, col)
            assert v is None or v <= loc.tolerance, (r.torch_name, col, v)
        assert not r.note, (r.torch_name, r.note)  # everything was comparable
    gru = next(r for r in loc.layers if r.torch_name == "gru")
    assert gru.grad_input is not None and gru.grad_params is not None and gru.state is None


def test_report_table_and_plot(tmp_path):
    """report.md gets the per-layer table, the verdict line and layer_errors.png."""
    from jaxmtl.parity.checks import check_from_errs
    from jaxmtl.parity.report import failure_lines, write_report

    loc = _case("GRU gate order r/z swapped")
    failing = check_from_errs("forward/train", {"logits": 0.5}, 1e-10)
    text = write_report(tmp_path, [failing], {"config": "tiny"}, loc).read_text()
    assert "## Per layer" in text and "| `gru` | `gru` | GRU |" in text
    assert "first divergent layer gru (forward)" in text
    assert "FAIL forward/train: first divergent layer gru (forward)" in failure_lines([failing], loc)
    assert (tmp_path / "layer_errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
