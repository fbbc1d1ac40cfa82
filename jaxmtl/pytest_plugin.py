"""jaxmtl's pytest plugin (entry point `pytest11`): the `port_parity` fixture.

    def test_my_port(port_parity):
        port_parity(PairSpec(torch_model, nnx_model, torch_loss, jax_loss, batches))

Importing this module imports neither JAX nor torch.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def port_parity():
    """`jaxmtl.testing.assert_port_parity`: fails with the check, the worst tensor and the first divergent layer."""
    from jaxmtl.testing import assert_port_parity

    return assert_port_parity
