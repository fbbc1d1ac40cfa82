"""The allocator the entry points set up (jaxmtl/cpu_malloc.py): mimalloc preloaded or tuned glibc, opt-outs honoured."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from jaxmtl.cpu_malloc import _RESTARTED_ENV, mimalloc_library

PROBE = ("from jaxmtl.cpu_malloc import keep_freed_memory, malloc_tuned; "
         "print(malloc_tuned(), keep_freed_memory(), keep_freed_memory(), malloc_tuned())")
ALLOCATOR_PROBE = ("from jaxmtl.cpu_malloc import allocator, keep_freed_memory, restart_with_mimalloc; "
                   "restart_with_mimalloc(); import os; "
                   "print(allocator(), keep_freed_memory(), os.environ.get('MIMALLOC_PURGE_DELAY'))")


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    """`python -c code` in a fresh process on plain glibc (no preload or mimalloc setting inherited)."""
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MIMALLOC_PURGE_DELAY", _RESTARTED_ENV)}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True)


def _probe(**env: str) -> list[str]:
    out = _run(PROBE, **env)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc-only")
def test_keep_freed_memory_applies_once_on_glibc():
    assert _probe(JAXMTL_DEFAULT_MALLOC="0") == ["False", "True", "True", "True"]


def test_opt_out_leaves_malloc_alone():
    assert _probe(JAXMTL_DEFAULT_MALLOC="1") == ["False", "False", "False", "False"]


@pytest.mark.skipif(platform.system() != "Linux" or mimalloc_library() is None,
                    reason="mimalloc is preloaded on Linux, from the cmeel-mimalloc package")
def test_restart_preloads_mimalloc_and_skips_the_glibc_settings():
    out = _run(ALLOCATOR_PROBE, JAXMTL_DEFAULT_MALLOC="0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mimalloc", "False", "-1"]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc-only")
def test_allocator_opt_out_keeps_tuned_glibc():
    out = _run(ALLOCATOR_PROBE, JAXMTL_ALLOCATOR="glibc", JAXMTL_DEFAULT_MALLOC="0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["glibc", "True", "None"]


def test_unknown_allocator_is_one_clear_error():
    out = _run(ALLOCATOR_PROBE, JAXMTL_ALLOCATOR="jemalloc")
    assert out.returncode != 0
    assert "JAXMTL_ALLOCATOR='jemalloc'" in out.stderr and "mimalloc, glibc" in out.stderr
    assert out.stdout == ""
