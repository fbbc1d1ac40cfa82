"""The allocator the entry points set up (jaxmtl/cpu_malloc.py): mimalloc preloaded or tuned glibc, opt-outs honoured."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from jaxmtl.cpu_malloc import mimalloc_library

PROBE = ("from jaxmtl.cpu_malloc import keep_freed_memory, malloc_tuned; "
         "print(malloc_tuned(), keep_freed_memory(), keep_freed_memory(), malloc_tuned())")


def _probe(**env: str) -> str:
    return subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env},
                          capture_output=True, text=True, check=True).stdout.split()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc-only")
def test_keep_freed_memory_applies_once_on_glibc():
    assert _probe(JAXMTL_DEFAULT_MALLOC="0") == ["False", "True", "True", "True"]


def test_opt_out_leaves_malloc_alone():
    assert _probe(JAXMTL_DEFAULT_MALLOC="1") == ["False", "False", "False", "False"]


ALLOCATOR_PROBE = ("from jaxmtl.cpu_malloc import allocator, keep_freed_memory, restart_with_mimalloc; "
                   "restart_with_mimalloc(); import os; "
                   "print(allocator(), keep_freed_memory(), os.environ.get('MIMALLOC_PURGE_DELAY'))")


def _allocator_probe(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "_JAXMTL_MIMALLOC_RESTARTED")}
    return subprocess.run([sys.executable, "-c", ALLOCATOR_PROBE], env={**base, **env},
                          capture_output=True, text=True)


@pytest.mark.skipif(platform.system() != "Linux" or mimalloc_library() is None,
                    reason="mimalloc is preloaded on Linux, from the cmeel-mimalloc package")
def test_restart_preloads_mimalloc_and_skips_the_glibc_settings():
    out = _allocator_probe(JAXMTL_DEFAULT_MALLOC="0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mimalloc", "False", "-1"]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc-only")
def test_allocator_opt_out_keeps_tuned_glibc():
    out = _allocator_probe(JAXMTL_ALLOCATOR="glibc", JAXMTL_DEFAULT_MALLOC="0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["glibc", "True", "None"]


def test_unknown_allocator_is_one_clear_error():
    out = _allocator_probe(JAXMTL_ALLOCATOR="jemalloc")
    assert out.returncode != 0
    assert "JAXMTL_ALLOCATOR='jemalloc'" in out.stderr and "mimalloc, glibc" in out.stderr
    assert out.stdout == ""
