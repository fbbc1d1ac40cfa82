"""Shared fixtures: paired models built once per session, per dtype.

x64 is switched on for the whole session before any array exists; float32
tests create float32 arrays explicitly, and the harness asserts every JAX
output has the requested dtype, so no silent promotion goes unnoticed.
"""

from __future__ import annotations

import os

import jax
import pytest

jax.config.update("jax_enable_x64", True)
# The hand-written conv plan for the whole suite and its subprocesses: no test compiles a
# measured plan it did not ask for (timing-dependent, and slow to measure). Every formulation
# has its own float64 test (test_fast_conv.py); measuring and the cache: test_conv_plan.py.
os.environ["JAXMTL_CONV_PLAN"] = "rule"

from jaxmtl.config import TINY  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """torch's CPU kernels on one thread for the session, restored after.

    Measured on this 2-core machine under load from parallel jobs: a tiny-model
    float64 forward+backward took 5 s with torch's 2 OpenMP threads (they spin
    against each other) and 0.04 s with 1. Results do not depend on it; speed
    comparisons live in benchmarks/, which sets its own thread counts.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def pairs():
    """pairs(dtype): the multi-task model on the tiny config as a harness pair, built once."""
    import mutants

    return mutants.multitask_pairs


@pytest.fixture(scope="session")
def model_check_results(pairs):
    """The single-point checks (`jaxmtl parity`'s, through harness.compare) per dtype, computed once."""
    from jaxmtl.parity import harness
    from jaxmtl.parity.multitask_port import batches

    cache = {}

    def get(dtype: str):
        if dtype not in cache:
            cache[dtype] = {c.name: c for c in harness.compare(pairs(dtype), batches(TINY, dtype, [1000]))}
        return cache[dtype]

    return get
