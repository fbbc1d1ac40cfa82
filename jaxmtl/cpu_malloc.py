"""The process's heap allocator on CPU runs: mimalloc if installed, else tuned glibc malloc.

Why: XLA:CPU allocates every temporary buffer of a compiled step afresh on
each call and frees it afterwards, and the libraries it calls allocate too
(oneDNN's sgemm under Eigen's convolutions mallocs a buffer per block,
YNNPACK's runtime per fusion). Both frameworks share the allocator when they
run in one process (the benchmarks), so the comparison stays like for like.

1. mimalloc (`restart_with_mimalloc`). A replacement malloc must be loaded
   before libc, so the benchmark CLI and the `jaxmtl` command re-execute
   themselves once with LD_PRELOAD set to the libmimalloc of the
   `cmeel-mimalloc` package, and MIMALLOC_PURGE_DELAY=-1 (keep freed
   memory; unless set already). With the glibc settings below, `perf` put
   ~5% of the `small` step's CPU samples in glibc's `_int_malloc` (bin
   bookkeeping in the one arena), and on this project's 2-core machine
   mimalloc made the step 15% faster. Two runs back to back, each timing
   the modes interleaved: JAX jit 104.7 -> 88.4 ms, torch.compile
   94.5 -> 88.4 ms, torch eager 112.7 -> 105.3 ms (benchmarks/README.md).
   JAXMTL_ALLOCATOR=glibc opts out.
2. glibc (`keep_freed_memory`), when mimalloc is not in use. glibc serves
   allocations above its mmap threshold (at most 32 MiB) with a fresh mmap
   and unmaps them on free, and in the per-thread arenas XLA's worker
   threads use, any request above the 64 MiB arena size is mmapped
   regardless. So every step page-faults its large temporaries in again:
   writing a fresh 77 MiB float32 array cost 0.43-0.46 ms/MiB against
   0.065 ms/MiB for 8-16 MiB, and the `small` training step went from
   ~380 ms to ~200 ms with these settings, applied with mallopt(3) (the same
   as MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647):
     M_ARENA_MAX=1         one arena, so worker threads allocate from the main heap
     M_MMAP_MAX=0          never serve an allocation with its own mmap
     M_TRIM_THRESHOLD=2^31-1  do not hand freed heap top back to the OS
   The cost: the process keeps its peak heap mapped until it exits.
   Call `keep_freed_memory()` before jax creates its CPU client (its
   threads); the entry points do so first thing. JAXMTL_DEFAULT_MALLOC=1
   leaves glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import os
import platform
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_INT_MAX = 2**31 - 1  # mallopt takes a C int; a larger Python int would wrap around

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Applies the settings above once per process; True if they are in effect.

    False (and nothing changed) off Linux/glibc, under mimalloc (the settings
    would not reach it), or when JAXMTL_DEFAULT_MALLOC=1.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("JAXMTL_DEFAULT_MALLOC") == "1" or platform.system() != "Linux" or allocator() == "mimalloc":
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


ALLOCATOR_ENV = "JAXMTL_ALLOCATOR"
ALLOCATORS = ("mimalloc", "glibc")
# Set in the environment of the re-executed process, so a preload that did not
# take effect raises instead of re-executing forever.
_RESTARTED_ENV = "_JAXMTL_MIMALLOC_RESTARTED"


def mimalloc_library() -> str | None:
    """Path of libmimalloc from the installed `cmeel-mimalloc` package, or None."""
    try:
        dist = importlib.metadata.distribution("cmeel-mimalloc")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name.startswith("libmimalloc.so."):
            path = str(dist.locate_file(f))
            if os.path.exists(path):
                return path
    return None


def allocator() -> str:
    """"mimalloc" if a libmimalloc is mapped into this process (LD_PRELOAD), else "glibc"."""
    try:
        with open("/proc/self/maps") as maps:
            return "mimalloc" if "libmimalloc" in maps.read() else "glibc"
    except OSError:
        return "glibc"


def restart_with_mimalloc() -> None:
    """Re-execute this Python process with libmimalloc preloaded, unless it already is.

    For entry points only (`python -m benchmarks`, the `jaxmtl` command):
    execve replaces the process, so call it before any work. Nothing happens
    off Linux, with JAXMTL_ALLOCATOR=glibc, or when cmeel-mimalloc is not
    installed (glibc, tuned by `keep_freed_memory`, is used then).
    """
    choice = os.environ.get(ALLOCATOR_ENV, "mimalloc")
    if choice not in ALLOCATORS:
        raise SystemExit(f"{ALLOCATOR_ENV}={choice!r}: expected one of {', '.join(ALLOCATORS)}")
    if choice == "glibc" or platform.system() != "Linux" or allocator() == "mimalloc":
        return
    lib = mimalloc_library()
    if lib is None:
        return
    if os.environ.get(_RESTARTED_ENV):
        raise RuntimeError(f"LD_PRELOAD={os.environ.get('LD_PRELOAD')!r} did not load {lib}; "
                           f"set {ALLOCATOR_ENV}=glibc to run without mimalloc")
    preload = ":".join(p for p in (lib, os.environ.get("LD_PRELOAD")) if p)
    # Keep freed memory for reuse instead of returning it to the OS after
    # 10 ms (mimalloc's default), which would page-fault the step's large
    # temporaries in again; the same idea as the glibc settings.
    env = {"MIMALLOC_PURGE_DELAY": "-1", **os.environ, "LD_PRELOAD": preload, _RESTARTED_ENV: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
