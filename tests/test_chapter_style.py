"""A chapter reads as a story: its code fits the page and its configuration stays out of the way.

* Every line of every code cell is at most :data:`MAX_LINE` characters (the cells' YAML front matter,
  ``mystnb`` captions and alt text, is metadata, not code), so no code cell needs horizontal scrolling.
* The cell that defines ``PROFILES`` is collapsed on the page (tag ``hide-cell`` or ``hide-input``; it still
  runs), and it does not print the chosen profile as its last expression.
* No cell prints a stray value: a cell does not end in a bare ``record(...)`` call (it returns the number, which
  Jupyter would show) unless a ``;`` suppresses it. ``record`` itself prints nothing unless ``show=True``.
"""
from __future__ import annotations

import ast
import io
import tokenize

import pytest

from companion.regression import chapters

MAX_LINE = 88
HIDDEN = {"hide-cell", "hide-input"}


def code_cells(name: str) -> list:
    import jupytext

    return [c for c in jupytext.read(chapters()[name]).cells if c.cell_type == "code"]


def _python(source: str) -> str:
    """The cell without IPython magics and shell escapes, which ``ast`` cannot parse."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _ends_with_semicolon(source: str) -> bool:
    """IPython's rule: the last token that is not a comment or a newline is ``;``."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for token in reversed(tokens):
        if token.type in (tokenize.ENDMARKER, tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            continue
        return token.type == tokenize.OP and token.string == ";"
    return False


def _shown_value(cell) -> str | None:
    """The last expression of the cell if Jupyter would display it, else None."""
    source = _python(cell.source)
    tree = ast.parse(source)
    if not tree.body or not isinstance(tree.body[-1], ast.Expr) or _ends_with_semicolon(source):
        return None
    return ast.unparse(tree.body[-1].value)


@pytest.mark.parametrize("name", sorted(chapters()))
def test_code_lines_fit_the_page(name: str) -> None:
    long = [f"code cell {i}, line {j + 1} ({len(line)} characters): {line.strip()[:60]}"
            for i, cell in enumerate(code_cells(name))
            for j, line in enumerate(cell.source.splitlines()) if len(line) > MAX_LINE]
    assert not long, f"{name}: code lines over {MAX_LINE} characters:\n  " + "\n  ".join(long)


@pytest.mark.parametrize("name", sorted(chapters()))
def test_the_profiles_cell_is_collapsed_and_prints_no_dictionary(name: str) -> None:
    cells = [c for c in code_cells(name) if "PROFILES = {" in c.source]
    assert len(cells) == 1, f"{name}: exactly one code cell must define PROFILES"
    tags = set(cells[0].metadata.get("tags", []))
    assert tags & HIDDEN, f"{name}: tag the PROFILES cell {' or '.join(sorted(HIDDEN))} (it still runs)"
    assert "parameters" not in tags, f"{name}: the PROFILES cell is not papermill's parameters cell"
    assert _shown_value(cells[0]) != "P", f"{name}: the PROFILES cell must not end by printing P"


@pytest.mark.parametrize("name", sorted(chapters()))
def test_no_cell_prints_a_stray_record(name: str) -> None:
    stray = []
    for i, cell in enumerate(code_cells(name)):
        shown = _shown_value(cell)
        if shown is not None and (shown.startswith("record(") or shown == "P"):
            stray.append(f"code cell {i}: {shown[:60]}")
    assert not stray, f"{name}: cells whose last expression prints a bare value (end them with ';'):\n  " \
                      + "\n  ".join(stray)


def test_the_style_checks_see_what_they_check() -> None:
    """The helpers on small cells: a comment after ';' still suppresses, magics are skipped."""
    class Cell:
        def __init__(self, source: str) -> None:
            self.source = source

    assert _shown_value(Cell('record("x", 1.0)')) == "record('x', 1.0)"
    assert _shown_value(Cell('record("x", 1.0);   # suppressed')) is None
    assert _shown_value(Cell("%matplotlib inline\nP")) == "P"
    assert _shown_value(Cell("x = 1")) is None


def test_profile_table_shows_only_what_differs() -> None:
    from companion.viz import profile_table

    profiles = {"ci": dict(n=100, seeds=[0], lr=0.2), "book": dict(n=1000, seeds=[0], lr=0.2),
                "full": dict(n=1000, seeds=[0], lr=0.2, extra=True)}
    table = profile_table(profiles, "book").data.splitlines()
    assert table[0] == "| setting | ci | book (this run) | full |"
    assert table[2:] == ["| `n` | `100` | `1000` | `1000` |", "| `extra` | – | – | `True` |"]
    assert profile_table({"ci": dict(a=1), "book": dict(a=1)}).data.count("\n") == 1   # headers only
