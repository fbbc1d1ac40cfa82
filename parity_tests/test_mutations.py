"""Proof the harness has teeth: each classic porting mistake, introduced alone, fails the right check.

The mistakes live in parity_tests/mutants.py (patched functions, wrong model
variants, wrong conversions, wrong optimizers); library code has no bug switches.
"""

from __future__ import annotations

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
