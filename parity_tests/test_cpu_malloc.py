"""The allocator setting the entry points apply (jaxmtl/cpu_malloc.py): applied once, opt-out honoured."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

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
