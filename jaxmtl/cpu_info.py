"""The CPU this process runs on, as benchmarks record it and the conv plan cache is keyed by."""

from __future__ import annotations

import platform
from pathlib import Path

SIMD_PREFIXES = ("avx", "fma", "amx", "sse4")


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The model name (Linux /proc/cpuinfo), else platform.processor()."""
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The SIMD feature flags (AVX*, FMA, AMX*, SSE4*), sorted; [] where /proc/cpuinfo is missing."""
    return sorted(f for f in (_cpuinfo_field("flags") or "").split() if f.startswith(SIMD_PREFIXES))
