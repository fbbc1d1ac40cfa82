"""A second, unrelated architecture through the parity engine: torch's nn.LSTM in a sequence tagger.

The pair is `jaxmtl.parity.lstm_port.lstm_pair_spec` (torch_ref/lstm_tagger.py against
jaxmtl/lstm_tagger.py), float64, tiny sizes (F=5, H=6, C=3, K=2, B=3, T=7). Its
conversion table is derived, and must use the "gates4" layout the multi-task
model never exercises; the LSTM formula is checked once more in plain numpy;
planted mistakes (gate order, folded biases, a forget-gate bias of +1) must fail
the check that is meant to catch them, and the localiser (jaxmtl.parity.localize)
must put the two forward mistakes in the lstm layer (nn.LSTM's nested output
(output, (h_n, c_n)) compared whole) and find no single-step divergence for the
folded biases; the gate-order mutant also goes through
`jaxmtl parity --pair test_lstm_port:gate_swap_spec`, as a user would run it.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mutants
from jaxmtl.lstm_tagger import LSTM, LSTMTagger, TaggerConfig, lstm_scan
from jaxmtl.parity import harness, localize
from jaxmtl.parity.curves import CURVE_TOLERANCES
from jaxmtl.parity.lstm_port import lstm_pair_spec
from jaxmtl.parity.precision import TOLERANCES
from jaxmtl.parity.tables import LAYOUTS, Entry, Layout, TableConversion

TOL = TOLERANCES["float64"]
CFG = TaggerConfig()
F, H, C, K = CFG.in_features, CFG.hidden, CFG.num_tags, CFG.seq_out

# Written by hand from the two modules' sources, not printed from the derivation.
EXPECTED_TABLE = [
    Entry("lstm.weight_ih_l0", "rnn/w_ih", "params", "gates4", (4 * H, F)),
    Entry("lstm.weight_hh_l0", "rnn/w_hh", "params", "gates4", (4 * H, H)),
    Entry("lstm.bias_ih_l0", "rnn/b_ih", "params", "gates4", (4 * H,)),
    Entry("lstm.bias_hh_l0", "rnn/b_hh", "params", "gates4", (4 * H,)),
    Entry("tagger.weight", "step_head/kernel", "params", "matrix", (C, H)),
    Entry("tagger.bias", "step_head/bias", "params", "vector", (C,)),
    Entry("regressor.weight", "seq_head/kernel", "params", "matrix", (K, H)),
    Entry("regressor.bias", "seq_head/bias", "params", "vector", (K,)),
]
LSTM_KEYS = ("lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with mutants.one_torch_thread():
        yield


@pytest.fixture(scope="module")
def spec():
    from jaxmtl.parity.precision import set_full_precision

    set_full_precision("float64")
    return lstm_pair_spec("float64")


@pytest.fixture(scope="module")
def pair(spec):
    return harness.pair_from_spec(spec, "float64")


# ---- (a) the derived table ------------------------------------------------------------------

def test_derived_table_uses_gates4_and_equals_the_hand_written_one(pair):
    table = list(pair.conversion.table)
    kinds = {e.torch_key: e.kind for e in table}
    assert all(kinds[k] == "gates4" for k in LSTM_KEYS)
    assert {e.torch_key: e.jax_key for e in table} == {e.torch_key: e.jax_key for e in EXPECTED_TABLE}
    assert table == EXPECTED_TABLE


def test_gates4_puts_each_torch_gate_block_on_the_gate_axis(pair):
    """w_ih[:, k, :] is torch's k-th (H, F) block transposed, for k = i, f, g, o; biases likewise."""
    from jaxmtl.trees import flatten_state

    sd, p = pair.initial_state, flatten_state(pair.params)
    assert p["rnn/w_ih"].shape == (F, 4, H) and p["rnn/w_hh"].shape == (H, 4, H)
    assert p["rnn/b_ih"].shape == p["rnn/b_hh"].shape == (4, H)
    for k in range(4):
        rows = slice(k * H, (k + 1) * H)
        np.testing.assert_array_equal(p["rnn/w_ih"][:, k, :], sd["lstm.weight_ih_l0"][rows].T)
        np.testing.assert_array_equal(p["rnn/w_hh"][:, k, :], sd["lstm.weight_hh_l0"][rows].T)
        np.testing.assert_array_equal(p["rnn/b_ih"][k], sd["lstm.bias_ih_l0"][rows])
        np.testing.assert_array_equal(p["rnn/b_hh"][k], sd["lstm.bias_hh_l0"][rows])
    back = pair.conversion.to_torch({"params": p}, ("params",))
    for k in LSTM_KEYS:
        np.testing.assert_array_equal(back[k], sd[k])


def test_same_shaped_heads_pair_by_call_order(spec):
    """With C == K both heads are Linear(6, 2) and share no name word with torch's; the JAX side
    declares seq_head first but calls step_head first, so only call order pairs them right."""
    square = CFG._replace(num_tags=2, seq_out=2)
    s = lstm_pair_spec("float64", cfg=square)
    table = harness.derive_pair_table(s.torch_module, s.nnx_module, s.torch_loss, s.jax_loss,
                                      s.batches[0], "float64")
    jax_of = {e.torch_key: e.jax_key for e in table}
    assert jax_of["tagger.weight"] == "step_head/kernel"
    assert jax_of["regressor.weight"] == "seq_head/kernel"


def test_port_does_not_import_torch():
    code = ("import sys, jaxmtl.lstm_tagger, jaxmtl.parity.lstm_port; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---- (b) every check of the engine passes --------------------------------------------------

def test_every_check_passes_in_float64(spec, pair):
    checks = {c.name: c for c in harness.compare(pair, spec.batches, optimizers=spec.optimizers, steps=5)}
    assert set(checks) == {"forward/train", "forward/eval", "grad/total", "grad/loss_ce", "grad/loss_mse",
                           "grad/weighted_sum", "curve/sgd", "params_after/sgd", "curve/adam",
                           "params_after/adam"}  # no BatchNorm: no batch_stats checks
    for c in checks.values():
        assert c.passed, c.line()
        kind = c.name.split("/")[0]
        assert c.tolerance == CURVE_TOLERANCES["float64"].get(kind, TOL)
    for name in ("grad/total", "grad/loss_ce", "grad/loss_mse"):
        assert set(checks[name].errors) == {e.torch_key for e in EXPECTED_TABLE}
    assert len(checks["curve/sgd"].errors) == 5


# ---- (c) the LSTM formula, once more in plain numpy from the torch weights ------------------

def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_lstm(x, w_ih, w_hh, b_ih, b_hh):
    """torch's documented nn.LSTM equations, weights in torch's (4H, in) layout, gates i, f, g, o."""
    hidden = w_hh.shape[1]
    blocks = lambda a: [a[k * hidden:(k + 1) * hidden] for k in range(4)]  # noqa: E731
    (wii, wif, wig, wio), (whi, whf, whg, who) = blocks(w_ih), blocks(w_hh)
    (bii, bif, big, bio), (bhi, bhf, bhg, bho) = blocks(b_ih), blocks(b_hh)
    h = c = np.zeros((x.shape[0], hidden))
    hs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        i = _sigmoid(xt @ wii.T + bii + h @ whi.T + bhi)
        f = _sigmoid(xt @ wif.T + bif + h @ whf.T + bhf)
        g = np.tanh(xt @ wig.T + big + h @ whg.T + bhg)
        o = _sigmoid(xt @ wio.T + bio + h @ who.T + bho)
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs, axis=1), h, c


def test_lstm_layer_matches_the_numpy_formula(spec, pair):
    import torch

    x = spec.batches[0][0].x
    sd = pair.initial_state
    hs_np, h_np, c_np = numpy_lstm(x, *(sd[k] for k in LSTM_KEYS))
    model = nnx.merge(pair.graphdef, pair.params, pair.batch_stats, pair.rest)
    hs, (h, c) = model.rnn(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(hs), hs_np, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(h), h_np, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(c), c_np, rtol=1e-12, atol=1e-14)
    # The first step alone (h0 = c0 = 0) and the step_head on top of it.
    np.testing.assert_allclose(np.asarray(model.rnn(jnp.asarray(x[:, :1]))[0][:, 0]), hs_np[:, 0], rtol=1e-12)
    logits = hs_np @ sd["tagger.weight"].T + sd["tagger.bias"]
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))["logits"]), logits, rtol=1e-12, atol=1e-14)
    # And the numpy formula is torch's own.
    with torch.no_grad():
        hs_t, (h_t, c_t) = pair.torch_module.lstm(torch.from_numpy(x))
    np.testing.assert_allclose(hs_t.numpy(), hs_np, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c_t[0].numpy(), c_np, rtol=1e-12, atol=1e-14)


# ---- (d) planted mistakes fail the right check ---------------------------------------------

def _swap_if(a: np.ndarray) -> np.ndarray:
    """Gates (i, f, g, o) -> (f, i, g, o) on the JAX gate axis (-2 for (in, 4, H) and (4, H))."""
    return np.ascontiguousarray(np.take(a, [1, 0, 2, 3], axis=-2))


def gates_if_swapped() -> TableConversion:
    """The conversion of a port that reads torch's stack as (f, i, g, o): shapes all still fit."""
    g4 = LAYOUTS["gates4"]
    swapped = Layout(lambda w: _swap_if(g4.to_jax(w)), lambda k: g4.to_torch(_swap_if(k)), g4.jax_shape)
    table = tuple(e._replace(kind="gates4_if") if e.torch_key in LSTM_KEYS else e for e in EXPECTED_TABLE)
    return TableConversion(table, {**LAYOUTS, "gates4_if": swapped})


class ForgetBiasLSTM(LSTM):
    """tf.compat.v1 BasicLSTMCell's forget_bias=1.0 (Keras' unit_forget_bias in spirit) kept in the
    port: f = sigmoid(... + 1). No weight conversion shows it; the parameters are torch's."""

    def __call__(self, x):
        gi = jnp.einsum("bti,igh->tbgh", x, self.w_ih[...]) + self.b_ih[...]
        h0 = jnp.zeros((x.shape[0], self.hidden_size), x.dtype)
        (h, c), hs = lstm_scan(gi, h0, h0, self.w_hh[...], self.b_hh[...].at[1].add(1.0))
        return jnp.swapaxes(hs, 0, 1), (h, c)


class FoldedBiasLSTM(LSTM):
    """A Flax/Keras-style cell with one bias b (4, H) = b_ih + b_hh."""

    def __init__(self, input_size, hidden_size, *, rngs):
        super().__init__(input_size, hidden_size, rngs=rngs)
        del self.b_ih, self.b_hh
        self.b = nnx.Param(jnp.zeros((4, hidden_size)))

    def __call__(self, x):
        gi = jnp.einsum("bti,igh->tbgh", x, self.w_ih[...]) + self.b[...]
        h0 = jnp.zeros((x.shape[0], self.hidden_size), x.dtype)
        (h, c), hs = lstm_scan(gi, h0, h0, self.w_hh[...], jnp.zeros_like(self.b[...]))
        return jnp.swapaxes(hs, 0, 1), (h, c)


@dataclasses.dataclass(frozen=True)
class FoldedBiasConversion:
    """What a porter writes for FoldedBiasLSTM: b = b_ih + b_hh. Back to torch, b goes to both
    biases, which is exact for gradients (dL/db_ih = dL/db_hh = dL/db)."""

    base: TableConversion

    @property
    def table(self):
        """The base rows: localize.layer_map pairs the layers by them (lstm <-> rnn, ...)."""
        return self.base.table

    def to_jax(self, state_dict, collections=("params", "batch_stats")):
        flat = self.base.to_jax(state_dict, collections)
        p = flat["params"]
        p["rnn/b"] = p.pop("rnn/b_ih") + p.pop("rnn/b_hh")
        return flat

    def to_torch(self, flat, collections=("params", "batch_stats")):
        flat = {c: dict(v) for c, v in flat.items()}
        if "params" in collections:
            p = flat["params"]
            p["rnn/b_ih"] = p["rnn/b_hh"] = p.pop("rnn/b")
        return self.base.to_torch(flat, collections)


def _tagger_with(rnn_cls):
    def build():
        model = LSTMTagger(CFG, rngs=nnx.Rngs(0))
        model.rnn = rnn_cls(F, H, rngs=nnx.Rngs(0))
        return model

    return nnx.eval_shape(build)


def _mutant_pair(table=None, rnn_cls=LSTM):
    s = lstm_pair_spec("float64")  # a fresh torch module per mutant
    return s, harness.make_pair(s.torch_module, _tagger_with(rnn_cls), table, s.torch_loss, s.jax_loss,
                                dtype="float64", example=s.batches[0], loss_parts=s.loss_parts)


def _forward_only(table=None, rnn_cls=LSTM):
    s, p = _mutant_pair(table, rnn_cls)
    return harness.forward_checks(p, s.batches[0]) + harness.forward_checks(p, s.batches[0], train=False)


def _everything(table=None, rnn_cls=LSTM):
    s, p = _mutant_pair(table, rnn_cls)
    return harness.compare(p, s.batches, optimizers=s.optimizers, steps=5)


# name -> (run, checks that must fail by > 100x their tolerance, checks that must still pass)
MUTATIONS = {
    "control: the unmutated pair": (lambda: _forward_only(), (), ("forward/train", "forward/eval")),
    "gate order i/f swapped in the conversion": (
        lambda: _forward_only(gates_if_swapped()), ("forward/train", "forward/eval"), ()),
    "forget-gate bias +1 in the cell (TF forget_bias=1.0)": (
        lambda: _forward_only(rnn_cls=ForgetBiasLSTM), ("forward/train", "forward/eval"), ()),
    "b_ih + b_hh folded into one bias": (
        lambda: _everything(FoldedBiasConversion(TableConversion(tuple(EXPECTED_TABLE))), FoldedBiasLSTM),
        # params_after/* fail too, but partly by construction (b goes back to both torch
        # biases); the curve is where the training difference shows.
        ("curve/sgd", "curve/adam"),
        ("forward/train", "forward/eval", "grad/total", "grad/loss_ce", "grad/loss_mse",
         "grad/weighted_sum")),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_planted_mistake_fails_the_right_check(name):
    run, must_fail, must_pass = MUTATIONS[name]
    checks = {c.name: c for c in run()}
    for n in must_fail:
        assert not checks[n].passed, checks[n].line()
        assert checks[n].max_rel_err > 100 * checks[n].tolerance, checks[n].line()
    for n in must_pass:
        assert checks[n].passed, checks[n].line()
    for n in must_fail:
        if n.startswith("curve/"):  # same forward: the first loss agrees, the first update parts them
            assert checks[n].errors["step_001"] <= checks[n].tolerance, checks[n].errors
    if not must_fail:  # the control: everything it ran passes
        assert all(c.passed for c in checks.values()), [c.line() for c in checks.values()]


# ---- (e) the planted mistakes, localised: which layer parts ways (jaxmtl.parity.localize) ----

LAYERS = ["lstm", "tagger", "regressor"]  # torch's call order


def _localise(table=None, rnn_cls=LSTM):
    s, p = _mutant_pair(table, rnn_cls)
    return localize.localize(p, s.batches[0])


def _folded():
    return _localise(FoldedBiasConversion(TableConversion(tuple(EXPECTED_TABLE))), FoldedBiasLSTM)


def _assert_every_layer_agrees(loc):
    assert loc.forward is None and loc.backward is None, (loc.forward, loc.backward)
    assert [r.torch_name for r in loc.layers] == LAYERS
    for r in loc.layers:
        for col in localize.COLUMNS:
            v = getattr(r, col)
            assert v is None or v <= loc.tolerance, (r.torch_name, col, v)


def test_unmutated_pair_has_no_divergent_layer():
    """The control: every layer, forward and backward, within the tolerance (h_n and c_n included)."""
    loc = _localise()
    _assert_every_layer_agrees(loc)
    assert loc.tolerance == TOL
    lstm = loc.layers[0]
    assert (lstm.jax_name, lstm.type, lstm.state) == ("rnn", "LSTM", None)
    assert lstm.grad_input is not None and lstm.grad_params is not None


FORWARD_MISTAKES = {
    "gate order i/f swapped in the conversion": lambda: _localise(gates_if_swapped()),
    "forget-gate bias +1 in the cell": lambda: _localise(rnn_cls=ForgetBiasLSTM),
}


@pytest.mark.parametrize("name", list(FORWARD_MISTAKES))
def test_forward_mistake_is_localised_to_the_lstm(name):
    """The input of lstm agrees, its output does not: the mistake is in lstm; the heads follow."""
    loc = FORWARD_MISTAKES[name]()
    assert [r.torch_name for r in loc.layers] == LAYERS
    d = loc.forward
    assert d is not None, "no forward divergence found"
    assert (d.layer, d.direction, d.what, d.inside) == ("lstm", "forward", "output", True), d
    assert d.error > 100 * loc.tolerance, d
    at = LAYERS.index("lstm")
    for r in loc.layers[:at]:  # nothing before it is off (lstm runs first: nothing runs before it)
        assert r.input <= loc.tolerance and r.output <= loc.tolerance, r
    assert loc.layers[at].input <= loc.tolerance, loc.layers[at]
    for r in loc.layers[at + 1:]:  # downstream, the inputs are lstm's outputs (hs, h_n): off as well
        assert 100 * loc.tolerance < r.input < 10 and 100 * loc.tolerance < r.output < 10, r


def test_folded_biases_have_no_single_step_divergence():
    """The same forward and the same gradient: the localiser finds every layer in agreement, so
    what curve/* catches must come from training (the optimizer steps two biases, not one)."""
    _assert_every_layer_agrees(_folded())


# ---- (f) the same, from the user's side: `jaxmtl parity --pair` (jaxmtl.cli.main, in-process) --

def gate_swap_spec(dtype: str) -> harness.PairSpec:
    """The LSTM pair with the gate-order mistake: `jaxmtl parity --pair test_lstm_port:gate_swap_spec`."""
    return lstm_pair_spec(dtype)._replace(table=gates_if_swapped())


def _jaxmtl_parity(pair: str, out, capsys) -> tuple[int, str]:
    from jaxmtl.cli import main

    status = main(["parity", "--pair", pair, "--dtype", "float64", "--out", str(out)])
    return status, capsys.readouterr().err


def test_jaxmtl_parity_names_the_lstm_for_the_gate_swap(tmp_path, capsys):
    status, err = _jaxmtl_parity("test_lstm_port:gate_swap_spec", tmp_path, capsys)
    assert status == 1, err
    assert "FAIL forward/train: worst tensor" in err
    assert "FAIL forward/train: first divergent layer lstm (forward)" in err
    report = (tmp_path / "report.md").read_text()
    assert "## Per layer" in report
    assert "| 0 | `lstm` | `rnn` | LSTM | " in report
    row = next(line for line in report.splitlines() if line.startswith("| 0 | `lstm` |"))
    assert row.endswith("first divergent (forward) |"), row
    assert (tmp_path / "layer_errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((tmp_path / "parity.json").read_text())
    assert not doc["passed"]
    assert not next(c for c in doc["checks"] if c["name"] == "forward/train")["passed"]
    fwd = doc["localisation"]["forward"]
    assert (fwd["layer"], fwd["direction"], fwd["inside"]) == ("lstm", "forward", True)


def test_jaxmtl_parity_passes_the_unmutated_pair(tmp_path, capsys):
    status, err = _jaxmtl_parity("jaxmtl.parity.lstm_port:lstm_pair_spec", tmp_path, capsys)
    assert status == 0, err
    assert "FAIL" not in err
    assert json.loads((tmp_path / "parity.json").read_text())["passed"]
    # Its localisation (every layer agrees) is test_unmutated_pair_has_no_divergent_layer's.
