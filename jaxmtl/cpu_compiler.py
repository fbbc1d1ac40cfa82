"""XLA:CPU compiler options jaxmtl compiles its steps with, and `jit`, which applies them.

Why: jax 0.10.2's XLA:CPU hands every convolution it can to YNNPACK
("ynn_fusion" ops in the compiled HLO). YNNPACK's convolution is slow where
this model spends its time: on this project's 2-core machine the stem's
kernel gradient (7x7/2, 3->16, 128 frames of 64x64) took ~110-145 ms there
and ~14 ms on XLA's own (Eigen) convolution, and the `small` training step
went from ~199 ms to ~171 ms (torch eager: ~170 ms in the same run) with
YNNPACK's convolutions left out and the conv plan (jaxmtl/nn/conv.py)
re-derived for Eigen (benchmarks/README.md). YNNPACK keeps the dots and
reductions, where it is the faster library (with the reductions also handed
back to XLA the step took ~191 ms).

The option is per compilation (`jax.jit(..., compiler_options=...)`), not a
process-wide XLA_FLAGS, so it touches only what jaxmtl compiles. When you jit
the model yourself on the CPU, pass `compiler_options=compiler_options()`
for the same speed; without it the numbers are the same, only slower.
On other backends the options are empty: they name XLA:CPU libraries only.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

# The YNNPACK fusion kinds kept: jax 0.10.2's default set without
# LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION (the compiled `small` step has
# the same YNNPACK fusions as with XLA_FLAGS=
# --xla_cpu_experimental_ynn_fusion_type=-individual_convolution;
# compiler_options takes the full list of enum names, not the +/- form).
YNN_FUSION_TYPES = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


def compiler_options(backend: str | None = None) -> dict[str, str]:
    """Compiler options for `backend` (default: jax's default backend); {} off the CPU."""
    if (backend or jax.default_backend()) != "cpu":
        return {}
    return {"xla_cpu_experimental_ynn_fusion_type": YNN_FUSION_TYPES}


def jit(fn: Callable, **jit_kwargs: Any) -> Callable:
    """`jax.jit(fn, **jit_kwargs)` with `compiler_options()` added."""
    return jax.jit(fn, compiler_options=compiler_options(), **jit_kwargs)
