"""glibc malloc settings that keep large freed buffers for reuse (CPU runs; process-wide).

Why: XLA:CPU allocates every temporary buffer of a compiled step afresh on
each call and frees it afterwards. glibc serves allocations above its mmap
threshold (at most 32 MiB) with a fresh mmap and unmaps them on free, and
in the per-thread arenas XLA's worker threads use, any request above the
64 MiB arena size is mmapped regardless. So every step page-faults its large
temporaries in again: on this project's 2-core machine, writing a fresh
77 MiB float32 array cost 0.43-0.46 ms/MiB against 0.065 ms/MiB for 8-16 MiB
(benchmarks/README.md), and the `small` training step went from ~380 ms to
~200 ms with the settings below. torch's CPU allocator is the same glibc
malloc, so in a process that runs both (the benchmarks) both get the
setting.

The settings, applied with mallopt(3) (the same as the environment variables
MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647):
  M_ARENA_MAX=1         one arena, so worker threads allocate from the main heap
  M_MMAP_MAX=0          never serve an allocation with its own mmap
  M_TRIM_THRESHOLD=2^31-1  do not hand freed heap top back to the OS
The cost: the process keeps its peak heap mapped until it exits.

Call `keep_freed_memory()` before jax creates its CPU client (its threads):
the entry points (`jaxmtl ...`, `python -m benchmarks ...`) do so first
thing. Set JAXMTL_DEFAULT_MALLOC=1 to leave glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_INT_MAX = 2**31 - 1  # mallopt takes a C int; a larger Python int would wrap around

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Applies the settings above once per process; True if they are in effect.

    False (and nothing changed) off Linux/glibc, or when JAXMTL_DEFAULT_MALLOC=1.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("JAXMTL_DEFAULT_MALLOC") == "1" or platform.system() != "Linux":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = all(libc.mallopt(opt, value) == 1 for opt, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _INT_MAX)))
    _applied = ok
    return ok


def malloc_tuned() -> bool:
    """Whether `keep_freed_memory` has put the settings in effect in this process."""
    return bool(_applied)
