"""Same seed, same bits: JAX initialisation and jitted gradients are bit-identical run to run on CPU."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import mutants
from jaxmtl.config import TINY
from jaxmtl.functional import init_model, split_model
from jaxmtl.trees import flatten_state

@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with mutants.one_torch_thread():
        yield



def _assert_bit_identical(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k, strict=True)


def test_jax_init_is_bit_identical_for_the_same_seed():
    first = split_model(init_model(TINY, seed=3))
    second = split_model(init_model(TINY, seed=3))
    for i in (1, 2):  # params, batch_stats
        _assert_bit_identical(flatten_state(first[i]), flatten_state(second[i]))
    other = flatten_state(split_model(init_model(TINY, seed=4))[1])
    assert not np.array_equal(other["gru/w_hh"], flatten_state(first[1])["gru/w_hh"])  # the seed matters


def test_two_separately_compiled_gradients_are_bit_identical():
    """Two independent jit compilations of the same gradient computation, each run twice."""
    pair = mutants.correct_heads_pair()
    batch = mutants.heads_batches(TINY, [41])[0][0]
    (loss_a, _), grads_a = pair.grad_fn(pair.params, pair.batch_stats, pair.rest, batch)
    fresh = mutants.heads_pair()  # a new pair: new jitted functions, compiled from scratch
    assert fresh.grad_fn is not pair.grad_fn
    (loss_b, _), grads_b = fresh.grad_fn(fresh.params, fresh.batch_stats, fresh.rest, batch)
    (loss_c, _), grads_c = fresh.grad_fn(fresh.params, fresh.batch_stats, fresh.rest, batch)
    np.testing.assert_array_equal(np.asarray(loss_a), np.asarray(loss_b), strict=True)
    _assert_bit_identical(flatten_state(grads_a), flatten_state(grads_b))
    _assert_bit_identical(flatten_state(grads_b), flatten_state(grads_c))


def test_whole_model_gradient_is_bit_identical_across_calls():
    """The tiny model's jitted gradient, called twice on equal inputs (fresh device buffers)."""
    pair = mutants.multitask_pair64()
    batch = mutants.tiny_batches()[0][0]
    copy = jax.tree.map(np.array, batch)
    (_, (out_a, stats_a)), grads_a = pair.grad_fn(pair.params, pair.batch_stats, pair.rest, batch)
    (_, (out_b, stats_b)), grads_b = pair.grad_fn(pair.params, pair.batch_stats, pair.rest, copy)
    _assert_bit_identical(flatten_state(grads_a), flatten_state(grads_b))
    _assert_bit_identical(flatten_state(stats_a), flatten_state(stats_b))
    _assert_bit_identical({k: np.asarray(v) for k, v in out_a.items()}, {k: np.asarray(v) for k, v in out_b.items()})
