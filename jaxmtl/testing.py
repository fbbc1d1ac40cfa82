"""Port parity as a pytest assertion, for any (torch module, NNX port) pair.

    from jaxmtl.parity.harness import PairSpec
    from jaxmtl.testing import assert_port_parity

    def test_my_port():
        assert_port_parity(PairSpec(torch_model, nnx_model, torch_loss, jax_loss, batches))

The conversion table is derived from the two models unless the spec gives one.
On failure it raises `PortParityError` (an AssertionError) whose message names
every failing check, its worst tensor, and the first layer where the port
parts ways with the reference (forward or backward). With pytest, the
`port_parity` fixture (this package's pytest plugin) is this function.

float64 needs JAX's x64 mode, switched on by you before any JAX array exists
(`jaxmtl.parity.set_full_precision("float64")`, or
`jax.config.update("jax_enable_x64", True)` in conftest.py); it is never
switched on here.
"""

from __future__ import annotations

from jaxmtl.parity.checks import Check


class PortParityError(AssertionError):
    """A port that does not match its reference: the message says which check, tensor and layer."""


def assert_port_parity(spec, *, dtype: str = "float64", steps: int = 0, localise: bool = True) -> list[Check]:
    """Runs every check of `jaxmtl parity` on `spec` (a harness.PairSpec) and returns them if all pass.

    `steps` > 0 also trains each of spec.optimizers that many steps (spec.batches cycled).
    """
    from jaxmtl.parity import harness, localize
    from jaxmtl.parity.report import failure_lines

    pair = harness.pair_from_spec(spec, dtype)
    checks = harness.compare(pair, list(spec.batches), optimizers=spec.optimizers, steps=steps)
    failed = [c for c in checks if not c.passed]
    if failed:
        loc = localize.localize(pair, spec.batches[0]) if localise else None
        raise PortParityError(f"port {spec.name!r} ({dtype}) fails {len(failed)} of {len(checks)} checks:\n"
                              + "\n".join(failure_lines(checks, loc)))
    return checks
