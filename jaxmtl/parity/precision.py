"""Dtype set-up and tolerances for parity runs, for both frameworks at once."""

from __future__ import annotations

import jax

# Relative error per tensor, ||jax - torch|| / max(||torch||, tiny).
# float64: both sides compute the same formulas; 1e-10 leaves ~5 decades above
# the ~1e-15 rounding of a ResNet forward/backward.
# float32: 1e-4 on CPU; a different summation order in convolutions and
# matmuls gives ~1e-6 relative, amplified by BatchNorm's division by the
# batch standard deviation in the deepest (2x2 and 1x1) maps of `tiny`.
TOLERANCES: dict[str, float] = {"float64": 1e-10, "float32": 1e-4}


def set_full_precision(dtype: str) -> None:
    """Make both frameworks compute in true `dtype` on any device.

    - float64 needs JAX's x64 mode (off by default: JAX silently makes float32).
    - On a GPU, JAX's default matmul/conv precision and torch's TF32 switches
      round float32 inputs to ~10-bit mantissas, which makes a 1e-4 comparison
      meaningless; parity forces 'highest' in JAX and turns TF32 off in torch.
      Speed runs (benchmarks/) leave the defaults alone.
    """
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype must be one of {sorted(TOLERANCES)}, got {dtype!r}")
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_default_matmul_precision", "highest")
    import torch  # the harness is the one place allowed to import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
