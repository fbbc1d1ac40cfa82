"""`jaxmtl convert`: torch checkpoint <-> JAX checkpoint through the conversion table, in-process."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from jaxmtl.cli import main
from jaxmtl.config import SMALL, TINY
from jaxmtl.functional import init_model
from jaxmtl.interchange import load_flat, save_flat
from jaxmtl.parity import multitask_port
from jaxmtl.trees import rel_err, unflatten_like
from torch_ref.model import build_model


def convert(*argv) -> int:
    return main(["convert", *map(str, argv)])


def trained_like_model():
    """tiny in float64 with non-trivial BatchNorm statistics and counters, as after training."""
    model = build_model(TINY, 3, torch.float64)
    g = torch.Generator().manual_seed(1)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=g, dtype=buf.dtype))
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=g, dtype=buf.dtype) + 0.5)
        elif name.endswith("num_batches_tracked"):
            buf.fill_(1234)
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A torch_ref training checkpoint of tiny (float64) and its conversion to safetensors."""
    from torch_ref.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("convert")
    model = trained_like_model()
    pt = save_checkpoint(d, 7, model, torch.optim.SGD(model.parameters(), lr=0.1), {"config": "tiny"})
    st = d / "tiny.safetensors"
    assert convert("--config", "tiny", pt, st) == 0
    return {"dir": d, "model": model, "pt": pt, "st": st}


def assert_identical(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def test_round_trip_is_bit_identical(files, tmp_path, capsys):
    back = tmp_path / "back.pt"
    assert convert("--config", "tiny", files["st"], back) == 0
    summary = capsys.readouterr().out.strip()
    assert summary.endswith("130 tensors: conv 20, matrix 5, vector 85, count 20"), summary
    restored = torch.load(back, weights_only=True)
    assert_identical(files["model"].state_dict(), restored)
    build_model(TINY).load_state_dict(restored, strict=True)


def test_jax_file_runs_the_same_forward(files):
    flat = load_flat(files["st"])
    assert all(k.startswith(("params/", "batch_stats/")) for k in flat)
    graphdef, p_template, s_template, rest = nnx.split(nnx.eval_shape(lambda: init_model(TINY)),
                                                       nnx.Param, nnx.BatchStat, ...)
    params = unflatten_like(p_template, {k[7:]: v for k, v in flat.items() if k.startswith("params/")})
    stats = unflatten_like(s_template, {k[12:]: v for k, v in flat.items() if k.startswith("batch_stats/")})
    batch, torch_batch = multitask_port.batches(TINY, "float64", [11])[0]

    @jax.jit
    def forward(p, s, images, dyn):
        return nnx.merge(graphdef, p, s, rest)(images, dyn, train=False)

    out = forward(params, stats, batch.images, batch.dyn)
    with torch.no_grad():
        ref = files["model"].eval()(torch.from_numpy(torch_batch.images), torch.from_numpy(torch_batch.dyn))
    assert set(out) == set(ref)
    for k in ref:
        assert out[k].dtype == np.float64
        assert rel_err(out[k], ref[k].numpy()) < 1e-10, k


def test_hand_table_writes_the_same_file(files, tmp_path):
    hand = tmp_path / "hand.safetensors"
    assert convert("--table", "hand", files["pt"], hand) == 0
    assert hand.read_bytes() == files["st"].read_bytes()


def test_npz_and_orbax_round_trips(files, tmp_path):
    for out, extra in ((tmp_path / "tiny.npz", ()), (tmp_path / "tiny_orbax", ("--format", "orbax"))):
        back = tmp_path / f"{out.name}.pt"
        assert convert(*extra, files["pt"], out) == 0
        assert convert(*extra, out, back) == 0
        assert_identical(files["model"].state_dict(), torch.load(back, weights_only=True))
    # an orbax directory is recognised as the input without --format
    assert convert(tmp_path / "tiny_orbax", tmp_path / "again.pt") == 0


def assert_fails(capsys, tmp_path, argv, *needles) -> str:
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert convert(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxmtl convert: error: "), err
    for n in needles:
        assert n in err, (n, err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, no temporary files
    return err


def test_other_config_is_refused_naming_the_mis_shaped_keys(tmp_path, capsys):
    small = tmp_path / "small.pt"
    torch.save(build_model(SMALL).state_dict(), small)
    assert_fails(capsys, tmp_path, ["--config", "tiny", small, tmp_path / "out.safetensors"],
                 "small.pt", "shape mismatches", "backbone.conv1.weight: expected (8, 3, 7, 7), got (16, 3, 7, 7)")


def test_files_that_are_not_torch_state_dicts(tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    (tmp_path / "text.pt").write_text("hello")
    assert_fails(capsys, tmp_path, [tmp_path / "text.pt", out], "text.pt: not a torch checkpoint")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    assert_fails(capsys, tmp_path, [tmp_path / "tensor.pt", out], "tensor.pt: not a state dict", "Tensor")
    torch.save({"epoch": 3, "weights": [1, 2]}, tmp_path / "dict.pt")
    assert_fails(capsys, tmp_path, [tmp_path / "dict.pt", out], "not a state dict", "'epoch'", "'model'")
    assert_fails(capsys, tmp_path, [tmp_path / "missing.pt", out], "missing.pt: no such file")
    assert_fails(capsys, tmp_path, [tmp_path / "missing.npz", tmp_path / "out.pt"], "missing.npz: no such file")


def test_bad_directions_and_jax_files(files, tmp_path, capsys):
    assert_fails(capsys, tmp_path, [files["pt"], tmp_path / "out.txt"], "cannot convert")
    assert_fails(capsys, tmp_path, [files["st"], tmp_path / "out.npz"], "cannot convert")
    assert_fails(capsys, tmp_path, [files["pt"], tmp_path / "out.pt"], "cannot convert")
    flat = load_flat(files["st"])
    del flat["params/gru/w_hh"]
    save_flat(tmp_path / "partial.safetensors", flat)
    assert_fails(capsys, tmp_path, [tmp_path / "partial.safetensors", tmp_path / "out.pt"],
                 "missing keys", "gru/w_hh")
    flat = load_flat(files["st"])
    flat["opt_state/mu"] = np.zeros(2)
    save_flat(tmp_path / "extra.safetensors", flat)
    assert_fails(capsys, tmp_path, [tmp_path / "extra.safetensors", tmp_path / "out.pt"], "opt_state/mu")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 5)
    assert_fails(capsys, tmp_path, [tmp_path / "junk.safetensors", tmp_path / "out.pt"], "cannot read")


# ---- --pair: any port's checkpoints ---------------------------------------------------------

def test_pair_converts_a_ports_checkpoint(tmp_path, capsys):
    from heads_pair import torch_heads

    heads = torch_heads(TINY, seed=5)
    pt, st, back = tmp_path / "heads.pt", tmp_path / "heads.safetensors", tmp_path / "back.pt"
    torch.save({"model_state_dict": heads.state_dict(), "epoch": 2}, pt)
    pair = "heads_pair:heads_spec"
    assert convert("--pair", pair, pt, st) == 0
    assert capsys.readouterr().out.strip().endswith("10 tensors: matrix 5, vector 5")
    assert "params/gru/w_ih" in load_flat(st)
    assert convert("--pair", pair, st, back) == 0
    assert_identical(heads.state_dict(), torch.load(back, weights_only=True))
    orbax_dir, back2 = tmp_path / "heads_orbax", tmp_path / "back2.pt"  # a port without batch_stats
    assert convert("--pair", pair, "--format", "orbax", pt, orbax_dir) == 0
    assert convert("--pair", pair, orbax_dir, back2) == 0
    assert_identical(heads.state_dict(), torch.load(back2, weights_only=True))
    assert_fails(capsys, tmp_path, ["--pair", f"{__name__}:no_such_function", pt, tmp_path / "x.safetensors"],
                 "no_such_function")
    assert_fails(capsys, tmp_path, ["--pair", pair, "--table", "hand", pt, tmp_path / "x.safetensors"], "--pair")
