"""Bad input is refused with one clear error naming what was wrong, before any compilation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import mutants
from jaxmtl.batch import random_batch, validate_batch
from jaxmtl.config import SMALL, TINY
from jaxmtl.interchange import InterchangeError, load_flat, save_flat

@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with mutants.one_torch_thread():
        yield



def _batch(**changes):
    return random_batch(TINY, 0, np.float64)._replace(**changes)


BAD_BATCHES = {
    "images rank": (lambda b: _batch(images=b.images[0]), "batch.images has shape"),
    "image size": (lambda b: _batch(images=np.zeros((2, 4, 64, 64, 3))), "image_size=32"),
    "channels": (lambda b: _batch(images=b.images[..., :1]), "batch.images has shape"),
    "NCHW given as NHWC": (lambda b: _batch(images=b.images_nchw()), "batch.images has shape"),
    "sequence length": (lambda b: random_batch(dataclasses.replace(TINY, seq_len=5), 0, np.float64),
                        "sequence length T=5"),
    "dyn width": (lambda b: _batch(dyn=b.dyn[..., :5]), "batch.dyn has shape"),
    "int images": (lambda b: _batch(images=b.images.astype(np.int32)), "batch.images has dtype int32"),
    "NaN image": (lambda b: _batch(images=np.where(np.arange(3) == 1, np.nan, b.images)), "batch.images holds a non-finite"),
    "inf pose": (lambda b: _batch(pose=np.full_like(b.pose, np.inf)), "batch.pose holds a non-finite"),
    "NaN velocity": (lambda b: _batch(vel=np.full_like(b.vel, np.nan)), "batch.vel holds a non-finite"),
    "label too large": (lambda b: _batch(label=np.array([0, 4], np.int32)), "batch.label holds 4"),
    "negative label": (lambda b: _batch(label=np.array([-1, 0], np.int32)), "batch.label holds -1"),
    "float label": (lambda b: _batch(label=np.array([0.0, 1.0])), "batch.label has dtype float64"),
    "label shape": (lambda b: _batch(label=np.zeros((2, 1), np.int32)), "batch.label has shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_validate_batch_names_the_problem(case):
    make, message = BAD_BATCHES[case]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate_batch(make(random_batch(TINY, 0, np.float64)), TINY)


def test_harness_refuses_bad_input_before_compiling(monkeypatch):
    """The pair's jitted functions are never called: the refusal costs no compilation."""
    import mutants  # noqa: F401  (puts parity_tests helpers in reach)
    from jaxmtl.parity import harness
    from jaxmtl.parity.multitask_port import batches, multitask_pair
    from jaxmtl.parity.precision import set_full_precision

    set_full_precision("float64")
    pair = multitask_pair(TINY, "float64")
    pair.forward_fn = pair.grad_fn = lambda *a, **k: pytest.fail("compiled despite bad input")
    good = batches(TINY, "float64", [1])[0]
    nan_images = good[0].images.copy()
    nan_images[1, 2, 3, 4, 0] = np.nan
    cases = {
        "non-finite": ((good[0]._replace(images=nan_images), good[1]), "batch.images holds a non-finite"),
        "dtype": ((good[0]._replace(dyn=good[0].dyn.astype(np.float32)), good[1]),
                  r"\(JAX\).*dyn.* has dtype float32, the pair runs in float64"),
        "torch side": ((good[0], good[1]._replace(vel=np.full_like(good[1].vel, np.inf))), r"\(torch\).*vel"),
        "label": ((good[0]._replace(label=np.array([7, 0], np.int32)), good[1]), "batch.label holds 7"),
    }
    for name, (inputs, message) in cases.items():
        for run in (lambda: harness.forward_checks(pair, inputs), lambda: harness.gradient_checks(pair, inputs),
                    lambda: harness.compare(pair, [good, inputs])):
            with pytest.raises(ValueError, match=message):
                run()


# ---- state dicts: a clear error naming the keys, and nothing half-loaded ------------------

@pytest.fixture(scope="module")
def torch_models():
    import torch

    from torch_ref.model import build_model

    return build_model(TINY, 0, torch.float64), build_model(SMALL, 0, torch.float64)


def test_state_dict_from_another_config(torch_models):
    from torch_ref.convert import ConversionError, state_dict_numpy, torch_to_jax

    _, small = torch_models
    with pytest.raises(ConversionError, match=r"backbone\.conv1\.weight: expected \(8, 3, 7, 7\), got \(16, 3, 7, 7\)"):
        torch_to_jax(state_dict_numpy(small), TINY)


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_bad_state_dict_leaves_torch_module_untouched(torch_models, change):
    import torch

    from torch_ref.convert import ConversionError, load_into_torch, state_dict_numpy

    tiny, _ = torch_models
    before = state_dict_numpy(tiny)
    sd = {k: v + 1.0 if v.dtype.kind == "f" else v for k, v in before.items()}  # would change every weight
    key = {"missing": "gru.bias_hh_l0", "extra": "fc.weight", "shape": "classifier.weight"}[change]
    if change == "missing":
        del sd[key]
    elif change == "extra":
        sd[key] = np.zeros((4, 16))
    else:
        sd[key] = np.zeros((16, 4))
    with pytest.raises(ConversionError, match=key.replace(".", r"\.")):
        load_into_torch(tiny, sd)
    after = state_dict_numpy(tiny)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=f"{k} was half-loaded")
    assert all(isinstance(v, torch.Tensor) for v in tiny.state_dict().values())


# ---- interchange files: safetensors / npz, never pickles ----------------------------------

@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_interchange_round_trip_is_bit_exact(tmp_path, suffix):
    from torch_ref.convert import torch_to_jax

    flat = {"a/kernel": np.random.default_rng(0).standard_normal((3, 4)), "a/count": np.array(7, np.int64),
            "b": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = save_flat(tmp_path / f"state{suffix}", flat)
    back = load_flat(path, expected={k: v.shape for k, v in flat.items()})
    assert set(back) == set(flat)
    for k in flat:
        assert back[k].dtype == flat[k].dtype
        np.testing.assert_array_equal(back[k], flat[k])
    assert callable(torch_to_jax)  # the state a torch side writes is what torch_to_jax reads


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_interchange_errors_name_the_file(tmp_path, suffix):
    flat = {"w": np.ones((64, 64))}
    good = save_flat(tmp_path / f"good{suffix}", flat)
    with pytest.raises(InterchangeError, match=r"absent.*no such file"):
        load_flat(tmp_path / f"absent{suffix}")
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InterchangeError, match="truncated"):
        load_flat(truncated)
    corrupt = tmp_path / f"corrupt{suffix}"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(InterchangeError, match="corrupt"):
        load_flat(corrupt)
    with pytest.raises(InterchangeError, match=r"good.*missing keys: \['v'\].*unexpected keys: \['w'\]"):
        load_flat(good, expected={"v": (64, 64)})
    with pytest.raises(InterchangeError, match=r"w: expected \(64, 32\), got \(64, 64\)"):
        load_flat(good, expected={"w": (64, 32)})


def test_interchange_refuses_pickles(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, obj=np.array([{"code": "anything"}], dtype=object))  # an object array is a pickle
    with pytest.raises(InterchangeError, match="pickled.npz"):
        load_flat(path)
    with pytest.raises(InterchangeError, match="object array"):
        save_flat(tmp_path / "x.npz", {"obj": np.array([None], dtype=object)})
    with pytest.raises(InterchangeError, match="unknown interchange format '.pt'"):
        save_flat(tmp_path / "x.pt", {"w": np.ones(2)})
