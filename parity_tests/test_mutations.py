"""Proof the harness has teeth: each classic porting mistake, introduced alone, fails the right check.

The mistakes live in parity_tests/mutants.py (patched functions, wrong model
variants, wrong conversions, wrong optimizers); library code has no bug switches.
"""

from __future__ import annotations

from unittest import mock

import pytest

import mutants

@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with mutants.one_torch_thread():
        yield



@pytest.mark.parametrize("mutation", mutants.MUTATIONS, ids=lambda m: m.name)
def test_mutation_is_caught_by_the_right_check(mutation):
    checks = {c.name: c for c in mutation.run()}
    caught = checks[mutation.caught_by]
    assert not caught.passed, f"{mutation.name} went unnoticed: {caught.line()}"
    assert caught.max_rel_err > 100 * caught.tolerance, f"{mutation.name} fails only marginally: {caught.line()}"
    assert caught.worst in caught.errors  # the report can point at a tensor / output
    for name in mutation.still_pass:  # the mistake hides from these, as it would in real life
        assert checks[name].passed, checks[name].line()


def test_unmutated_pairs_pass():
    """The control: the same runs without a mistake pass every check (else a failure above proves nothing)."""
    from jaxmtl.parity.harness import forward_checks, gradient_checks

    pair = mutants.correct_heads_pair()
    b = mutants.heads_batches(mutants.TINY, [21, 22, 23])
    checks = forward_checks(pair, b[0]) + gradient_checks(pair, b[0]) + mutants._forward()
    for opt in [mutants.optimizer_pair("sgd", momentum=0.9, lr=0.05),
                mutants.optimizer_pair("adamw", weight_decay=0.01),
                mutants.optimizer_pair("sgd", lr=0.05, nesterov=True), mutants.optimizer_pair("adam")]:
        checks += mutants._train(opt)
    for c in checks:
        assert c.passed, c.line()


# ---- the same teeth on the command users run: `jaxmtl parity` (jaxmtl.cli.main, in-process) -----

def _with(**kw):
    """multitask_port.multitask_pair with a mutant's keyword arguments fixed."""
    import functools

    from jaxmtl.parity import multitask_port

    return mock.patch.object(multitask_port, "multitask_pair", functools.partial(multitask_port.multitask_pair, **kw))


# One mistake through the whole command (~25 s of eager work each on 2 cores): the command's
# plumbing is the same for every mistake. Which check catches each mistake is
# test_mutation_is_caught_by_the_right_check's subject, which layer is named test_localize.py's.
CLI_MUTATIONS = [
    ("GRU gate order r/z swapped in the conversion", lambda: _with(table=mutants.gru_rz_swapped(mutants.TINY)),
     "forward/train", "gru"),
]


@pytest.mark.parametrize("case", CLI_MUTATIONS, ids=[c[0] for c in CLI_MUTATIONS])
def test_jaxmtl_parity_command_catches_and_localises(case, tmp_path, capsys):
    """Exit status 1, the right check failing, and the mutated layer named on stderr. Run eagerly
    (jax.disable_jit) like the other mutants: the primitives compile once for all of them."""
    import json

    import jax

    from jaxmtl.cli import main

    _, patch, check, layer = case
    with patch(), jax.disable_jit():
        status = main(["parity", "--config", "tiny", "--dtype", "float64", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 1
    assert f"FAIL {check}: worst tensor" in err
    assert f"FAIL {check}: first divergent layer {layer} (forward)" in err
    doc = json.loads((tmp_path / "parity.json").read_text())
    assert not next(c for c in doc["checks"] if c["name"] == check)["passed"]
    assert doc["localisation"]["forward"]["layer"] == layer
