"""The autodiff study's docs and display: docs/tutorials/ holds the pages the code generates (index, one
page per topic, the figures), every example shows both programs and its results, references stay in the
repository or the public PyTorch documentation; terminal layouts and the command's parts.

Each topic page is regenerated and compared in the module that already computes that topic's results
(test_tutorials_small, test_tutorials_models, test_tutorials_numerical), so no example runs twice; this
module runs one cheap example only.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from jaxmtl.cli import main
from jaxmtl.tutorials import EXAMPLES, TOPICS
from jaxmtl.tutorials.pages import INDEX, index_page, topic_examples
from jaxmtl.tutorials.plots import FIGURES
from jaxmtl.tutorials.render import programs, row, terminal_text, view

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "tutorials"
STUDY_DOCS = [REPO / "docs" / "autodiff.md", *sorted(DOCS.glob("*.md"))]
STUDY_CODE = [path for package in ("jaxmtl", "torch_ref") for path in sorted((REPO / package / "tutorials").glob("*.py"))]
# Citations of the private material the examples were first written from: its folder, its file
# numbers, its section signs, its (Chinese) headings.
PRIVATE_CITATION = re.compile(r"\/work\/|shared\/|seeds\/|\u00a7|\bseed\s00\d|[\u4e00-\u9fff]")


def test_index_and_file_set_are_current():
    assert (DOCS / INDEX).read_text() == index_page(), "docs/tutorials/README.md is out of date: make tutorials-docs"
    expected = {INDEX} | {f"{topic}.md" for topic in TOPICS} | {file for file, _ in FIGURES.values()}
    assert {p.name for p in DOCS.iterdir()} == expected


def test_every_example_has_a_section_with_both_programs_and_results():
    assert len(EXAMPLES) == 39
    for topic in TOPICS:
        page = (DOCS / f"{topic}.md").read_text()
        sections = re.split(r"^## ", page, flags=re.M)[1:]
        assert [s.split("\n", 1)[0] for s in sections] == topic_examples(topic)
        for name, section in zip(topic_examples(topic), sections):
            for heading in ("### PyTorch (", "### JAX (", "### Results", f"def {name}("):
                assert heading in section, (name, heading)
            assert section.count("```python") == 2, name
            assert "dtypes differ" not in section, name  # one dtype on both sides
            figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", section)
            assert figures == ([FIGURES[name][0]] if name in FIGURES else []), name


def _prose(markdown: str) -> str:
    """The text outside code blocks and code spans (where `f(x)[1](v)` is code, not a link)."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", markdown, flags=re.S))


def test_references_stay_in_the_repository_or_the_pytorch_documentation():
    for path in STUDY_DOCS:
        text = path.read_text()
        assert not PRIVATE_CITATION.search(text), (path.name, PRIVATE_CITATION.search(text))
        for link, url in re.findall(r"\]\(([^)\s]+)\)|(https?://[^\s)>]+)", _prose(text)):
            target = link or url
            if target.startswith(("http://", "https://")):
                assert target.startswith(("https://pytorch.org/", "https://docs.pytorch.org/")), (path.name, target)
            elif not target.startswith("#"):
                resolved = (path.parent / target.split("#")[0]).resolve()
                assert resolved.is_relative_to(REPO) and resolved.exists(), (path.name, target)
    for path in STUDY_CODE:
        assert not PRIVATE_CITATION.search(path.read_text()), (path.name, PRIVATE_CITATION.search(path.read_text()))


def test_registry_entries_are_complete():
    for name, ex in EXAMPLES.items():
        assert ex.topic in TOPICS and ex.shows.endswith(".") and ex.torch_idiom and ex.jax_idiom, name
        if ex.source is not None:
            link = re.fullmatch(r"https://pytorch\.org/tutorials/beginner/[\w/]+\.html#[a-z0-9-]+", ex.source.link)
            assert link, name


def test_every_example_shows_both_programs_with_the_definitions_they_use():
    for name in EXAMPLES:
        torch_program, jax_program = programs(name)
        assert torch_program.path.startswith("torch_ref/tutorials/")
        assert jax_program.path.startswith("jaxmtl/tutorials/")
        for p in (torch_program, jax_program):
            assert f"def {name}(" in p.source, (name, p.framework)
            compile(p.source, p.path, "exec")  # whole definitions, nothing cut off
    assert "class MyAdd(torch.autograd.Function)" in programs("custom_function")[0].source
    assert "def _mp_grads(" in programs("mixed_precision")[0].source
    multitask = programs("concat_split")[1].source
    assert "def _analysis(" in multitask and "_COMPILED: dict = {}" in multitask


def test_programs_side_by_side_when_wide_one_after_the_other_when_narrow():
    v = view("scalar_chain")
    wide = terminal_text(v, 200).splitlines()
    assert any(line.startswith("-- PyTorch  torch_ref/") and "│ -- JAX  jaxmtl/" in line for line in wide)
    assert max(len(line) for line in wide) <= 200
    assert any(line.startswith("↪ ") for line in wide)  # a line longer than its column continues below it
    narrow = terminal_text(v, 100).splitlines()
    assert not any("│" in line for line in narrow)
    torch_header = narrow.index("-- PyTorch  torch_ref/tutorials/chain_rule.py")
    assert torch_header < narrow.index("-- JAX  jaxmtl/tutorials/chain_rule.py")


def test_stable_rows_show_only_what_another_cpu_reproduces():
    r = row("w", np.array([1.23456789]), np.array([1.23456789 * (1 + 1e-14)]), 1e-12, stable=True)
    assert (r.torch, r.jax, r.agreement) == ("[1.235]  float64", "[1.235]  float64", "within 1e-12")
    r = row("min_err", np.array(3.622e-6), np.array(3.942e-6), 1e-4, stable=True)  # two libraries' rounding
    assert "3.6" not in r.torch and "3.9" not in r.jax and r.agreement == "above 1e-04"
    r = row("fd_seconds", np.array(0.9), np.array(1e-4), 1e-4, stable=True)
    assert (r.torch, r.jax, r.agreement) == ("(wall time)", "(wall time)", "")
    r = row("min_err", np.array(3.622e-6), np.array(3.942e-6), 1e-4, stable=False)  # the terminal shows it all
    assert (r.torch, r.jax, r.agreement) == ("3.622e-06  float64", "3.942e-06  float64", "rel_err 8.8e-02, above 1e-04")
    r = row("g", np.array(2.0), np.array(2.0, np.float32), 1e-12, stable=False)
    assert "dtypes differ: float64 vs float32" in r.agreement


def test_command_shows_one_part_or_refuses(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "90")
    assert main(["tutorials", "relu_at_zero", "--code"]) == 0
    out = capsys.readouterr().out
    assert "torch.relu(x).backward" in out and "jax.vjp(jax.nn.relu, x)" in out and "-- Results" not in out
    assert main(["tutorials", "relu_at_zero", "--results"]) == 0
    out = capsys.readouterr().out
    assert "-- Results" in out and "x_grad" in out and "within 1e-12" in out and "def relu_at_zero" not in out
    with pytest.raises(SystemExit) as e:
        main(["tutorials", "relu_at_zero", "--code", "--results"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main(["tutorials", "relu_at_zero", "--write-docs", str(tmp_path)]) == 2
    assert "takes no NAME" in capsys.readouterr().err and not any(tmp_path.iterdir())
    (tmp_path / "a_file").write_text("")
    assert main(["tutorials", "--write-docs", str(tmp_path / "a_file" / "docs")]) == 2  # before running anything
    assert "cannot create --write-docs directory" in capsys.readouterr().err
