"""jaxmtl's XLA:CPU compiler options (jaxmtl/cpu_compiler.py): convolutions stay out of YNNPACK."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmtl import cpu_compiler
from jaxmtl.nn.conv import conv2d

cpu_only = pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU options")


def _ynn_conv_fusions(hlo_text: str) -> list[str]:
    """Lines of compiled HLO where a convolution was handed to YNNPACK."""
    return [line for line in hlo_text.splitlines()
            if '"__ynn_fusion"' in line and "conv_general_dilated" in line]


def _conv_grads_hlo(jit) -> str:
    # A shape YNNPACK takes by default (it leaves some, e.g. 16-channel convs, to XLA).
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 32)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(1).standard_normal((3, 3, 32, 32)), jnp.float32)
    f = jax.grad(lambda x, w: jnp.sum(conv2d(x, w, 1, 1) ** 2), argnums=(0, 1))
    return jit(f).lower(x, w).compile().as_text()


@cpu_only
def test_default_compile_hands_convolutions_to_ynnpack():
    """The control: without the options this jax version fuses convs into YNNPACK.

    If this fails after a jax upgrade, the option in cpu_compiler.py may no
    longer be needed: re-measure with `python -m benchmarks convshapes`.
    """
    assert _ynn_conv_fusions(_conv_grads_hlo(jax.jit))


@cpu_only
def test_jaxmtl_jit_keeps_convolutions_on_xla():
    hlo = _conv_grads_hlo(cpu_compiler.jit)
    assert "convolution(" in hlo
    assert _ynn_conv_fusions(hlo) == []


def test_no_xla_cpu_options_off_the_cpu():
    """The CPU's effect is checked on compiled HLO above; elsewhere nothing is passed."""
    assert cpu_compiler.compiler_options("gpu") == {}
    assert cpu_compiler.compiler_options("tpu") == {}
