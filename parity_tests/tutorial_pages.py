"""The check that docs/tutorials/ matches the code: regenerate a topic's page, compare it with the checked-in one.

Each tutorial test module calls it with the results it has already computed
(a cached run), so the check adds rendering only, not a second run.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from jaxmtl.tutorials.pages import write_docs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"


def assert_page_current(topic: str, run, tmp_path: Path) -> None:
    """docs/tutorials/<topic>.md equals the page generated now; run(name) -> (PyTorch's, JAX's results)."""
    write_docs(tmp_path, run, topics=(topic,), plots=False)
    name = f"{topic}.md"
    generated, checked_in = (tmp_path / name).read_text(), (DOCS / name).read_text()
    if generated != checked_in:
        diff = "".join(difflib.unified_diff(checked_in.splitlines(True), generated.splitlines(True),
                                            f"docs/tutorials/{name}", "generated now", n=1))
        pytest.fail(f"docs/tutorials/{name} is out of date; run `make tutorials-docs`.\n{diff[:6000]}")
