"""One example rendered: its two programs, its results with their agreement, and the idiom note.

`view` builds these parts once; `terminal_text` lays them out for a terminal
and `markdown` for a docs page. The programs are the source of the functions
that run (inspect), never a copy. With stable=True (the docs pages) every
number is what another CPU reproduces: agreement is stated as the example's
tolerance bound instead of the measured rel_err; a float result is shown only
when the two frameworks agree within that tolerance, with significant digits
two fewer than the tolerance guarantees (at most 4); results on which they
differ (the rounding of two libraries) and wall-clock times (result keys
ending in `_seconds`) are described, not shown.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
from pathlib import Path

import numpy as np

from jaxmtl.trees import rel_err, tree_rel_errs
from jaxmtl.tutorials import Example, get, load

REPO = Path(__file__).resolve().parents[2]
MIN_COLUMN = 72    # side by side only when each program gets at least this many columns
MAX_ELEMENTS = 12  # larger arrays are summarised (shape, norm, first values)


@dataclasses.dataclass(frozen=True)
class Program:
    framework: str  # "PyTorch" or "JAX"
    path: str       # file, relative to the repository
    source: str


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    torch: str      # "-" when that framework has no such result
    jax: str
    agreement: str  # "" when there is nothing to compare


@dataclasses.dataclass(frozen=True)
class View:
    example: Example
    programs: tuple[Program, Program]        # PyTorch, JAX
    rows: tuple[Row, ...] = ()
    blocks: tuple[tuple[str, str], ...] = ()  # (title, text) of multi-line results (jaxprs, file lists)


def program_source(fn) -> str:
    """`fn`'s source, preceded by every module-level definition of its module it uses (transitively), in file order."""
    text = inspect.getsource(sys.modules[fn.__module__])
    lines = text.splitlines()
    defs = {}
    for node in ast.parse(text).body:
        targets = getattr(node, "targets", [getattr(node, "target", None)])
        names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
            [t.id for t in targets if isinstance(t, ast.Name)]
        defs.update({name: node for name in names})
    used, todo = {}, [fn.__name__]
    while todo:
        name = todo.pop()
        if name in defs and name not in used:
            used[name] = defs[name]
            todo.extend(n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name))

    def start(node):
        return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])

    out, end = [], None
    for node in sorted({id(n): n for n in used.values()}.values(), key=start):
        if end is not None:  # the file's blank lines between two shown definitions, at most 2
            out += [""] * min(2, start(node) - end - 1)
        out += lines[start(node) - 1:node.end_lineno]
        end = node.end_lineno
    return "\n".join(out)


def programs(name: str) -> tuple[Program, Program]:
    out = []
    for framework, side in (("PyTorch", "torch"), ("JAX", "jax")):
        fn = load(name, side)
        path = Path(inspect.getsourcefile(fn)).resolve().relative_to(REPO)
        out.append(Program(framework, path.as_posix(), program_source(fn)))
    return tuple(out)


def _number(x, digits: int) -> str:
    return f"{x:.{digits}g}"


def format_value(v, digits: int) -> str:
    """One result as one line, floats to `digits` significant digits; the dtype follows the numbers."""
    if isinstance(v, dict):  # {name: array}: a parameter tree
        total = np.sqrt(sum(float(np.sum(np.asarray(a, np.float64) ** 2)) for a in v.values()))
        return f"{len(v)} arrays, norm {_number(total, digits)}"
    if isinstance(v, (str, tuple, list)):
        return str(v)
    a = np.asarray(v)
    fmt = {"float_kind": lambda x: _number(x, digits)}
    if a.size > MAX_ELEMENTS:
        head = np.array2string(a.ravel()[:4], formatter=fmt, max_line_width=10**6)[:-1]
        norm = np.linalg.norm(a.astype(np.float64)) if a.dtype.kind in "fiu" else float("nan")
        return f"shape {a.shape}, norm {_number(norm, digits)}, first {head} ...]  {a.dtype}"
    text = np.array2string(a, formatter=fmt, max_line_width=10**6, separator=", ").replace("\n", "")
    return f"{text}  {a.dtype}"


def compare(a, b) -> tuple[float | None, str]:
    """(rel_err of the JAX result `a` against the PyTorch result `b`, or None when not numeric; a remark)."""
    if isinstance(a, dict) and isinstance(b, dict):
        errs = tree_rel_errs(a, b)
        worst = max(errs, key=errs.get)
        return errs[worst], f" (worst tensor: {worst})"
    x, y = np.asarray(a), np.asarray(b)
    if x.dtype.kind not in "fiu" or y.dtype.kind not in "fiu" or x.shape != y.shape:
        return None, "equal" if str(a) == str(b) else "differ"
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        return None, "equal" if np.array_equal(x, y) else "differ"
    return rel_err(x, y), f" (dtypes differ: {y.dtype} vs {x.dtype})" if x.dtype != y.dtype else ""


def stable_digits(tolerance: float) -> int:
    """Significant digits that a difference of `tolerance` (relative) cannot flip: two fewer than it fixes, 1 to 4."""
    return int(min(4, max(1, np.floor(-np.log10(tolerance)) - 2)))


def row(key: str, torch_value, jax_value, tolerance: float, stable: bool) -> Row:
    """One result of both frameworks; see the module docstring for what stable=True leaves out."""
    digits = stable_digits(tolerance) if stable else 6
    err, remark = (None, "") if torch_value is None or jax_value is None else compare(jax_value, torch_value)
    t, j = ("-" if v is None else format_value(v, digits) for v in (torch_value, jax_value))
    if err is None:
        return Row(key, t, j, remark)
    bound = f"within {tolerance:.0e}" if err <= tolerance else f"above {tolerance:.0e}"
    if not stable:
        return Row(key, t, j, f"rel_err {0 if err == 0 else f'{err:.1e}'}, {bound}{remark}")
    if key.endswith("_seconds"):
        return Row(key, "(wall time)", "(wall time)", "")
    if isinstance(jax_value, dict):  # which tensor is worst is decided by rounding noise
        remark = ""
    if err > tolerance:
        return Row(key, "(library rounding, not shown)", "(library rounding, not shown)", bound + remark)
    return Row(key, t, j, bound + remark)


def view(name: str, results=None, stable: bool = False) -> View:
    """The example's programs and, given `results` (PyTorch's, JAX's dicts), its result rows."""
    ex = get(name)
    if results is None:
        return View(ex, programs(name))
    torch_res, jax_res = results
    rows, blocks = [], []
    for key in list(torch_res) + [k for k in jax_res if k not in torch_res]:
        values = {"PyTorch": torch_res.get(key), "JAX": jax_res.get(key)}
        if any(isinstance(v, str) and "\n" in v for v in values.values()):
            blocks += [(f"{key} ({fw})", v) for fw, v in values.items() if v is not None]
            continue
        rows.append(row(key, values["PyTorch"], values["JAX"], ex.tolerance, stable))
    return View(ex, programs(name), tuple(rows), tuple(blocks))


# ---- layouts ---------------------------------------------------------------------------

def _header(ex: Example) -> list[str]:
    lines = [f"== {ex.name}  ({ex.topic}): {ex.shows}"]
    if ex.source:
        lines.append(f"   from the {ex.source}: {ex.source.link}")
    return lines


def _wrap(line: str, width: int) -> list[str]:
    if len(line) <= width:
        return [line]
    return [line[:width]] + ["↪ " + line[i:i + width - 2] for i in range(width, len(line), width - 2)]


def side_by_side(left: Program, right: Program, width: int) -> list[str] | None:
    """The two programs in two columns, long lines wrapped; None when a column would be narrower than MIN_COLUMN."""
    col = (width - 3) // 2
    if col < MIN_COLUMN:
        return None
    columns = []
    for p in (left, right):
        lines = [f"-- {p.framework}  {p.path}", ""] + p.source.splitlines()
        columns.append([[chunk for chunk in _wrap(line, col)] for line in lines])
    out = []
    for i in range(max(len(c) for c in columns)):
        l, r = (c[i] if i < len(c) else [""] for c in columns)
        for k in range(max(len(l), len(r))):
            a = l[k] if k < len(l) else ""
            b = r[k] if k < len(r) else ""
            out.append(f"{a:<{col}} │ {b}".rstrip())
    return out


def terminal_text(v: View, width: int, code: bool = True, results: bool = True) -> str:
    """The example for a terminal `width` columns wide: programs side by side when the columns are wide enough,
    else one after the other."""
    lines = _header(v.example)
    if code:
        pair = side_by_side(*v.programs, width)
        if pair is None:
            pair = []
            for p in v.programs:
                pair += ["", f"-- {p.framework}  {p.path}", ""] + p.source.splitlines()
        else:
            pair = [""] + pair
        lines += pair
    if results and (v.rows or v.blocks):
        lines += ["", "-- Results (agreement: rel_err of JAX against PyTorch)"]
        for r in v.rows:
            lines += [f"  {r.key}", f"    PyTorch : {r.torch}", f"    JAX     : {r.jax}"]
            lines += [f"    agree   : {r.agreement}"] if r.agreement else []
        for title, text in v.blocks:
            lines += [f"  {title}:"] + ["    " + line for line in text.splitlines()]
    lines += ["", "-- Idiom", f"   PyTorch: {v.example.torch_idiom}", f"   JAX:     {v.example.jax_idiom}"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return f"`{text}`".replace("|", "\\|") if text not in ("", "-") else text


def markdown(v: View, images: tuple[tuple[str, str], ...] = ()) -> str:
    """The example as a section of a docs page; `images` are (file, caption) pairs shown after the results."""
    ex = v.example
    lines = [f"## {ex.name}", "", ex.shows, ""]
    if ex.source:
        src = ex.source
        lines += [f'From the PyTorch tutorial "{src.tutorial}", section [{src.title}]({src.link}).', ""]
    for p in v.programs:
        lines += [f"### {p.framework} ([{p.path}](../../{p.path}))", "", "```python", p.source, "```", ""]
    lines += ["### Results", "", "| result | PyTorch | JAX | agreement |", "| --- | --- | --- | --- |"]
    lines += [f"| {_cell(r.key)} | {_cell(r.torch)} | {_cell(r.jax)} | {r.agreement} |" for r in v.rows]
    for title, text in v.blocks:
        lines += ["", f"{title}:", "", "```", text, "```"]
    for file, caption in images:
        lines += ["", f"![{caption}]({file})"]
    lines += ["", "Idiom:", "", f"- PyTorch: `{ex.torch_idiom}`", f"- JAX: `{ex.jax_idiom}`", ""]
    return "\n".join(lines)
