"""Every figure of the book has a caption, a label and alt text (MyST-NB cell metadata).

A code cell *makes a figure* when its top-level code, that is outside function bodies and outside an
``if live_kernel():`` block, contains

* a figure call: ``plt.`` (anything of pyplot), ``.subplots(``, ``.add_subplot(``, ``.figure(``,
  ``show_images(`` (``companion.viz``), ``imshow(``, or the name ``fig``, ``ax`` or ``axes``; or
* a call of a function, defined at the top level of any code cell of the chapter, whose body contains a
  figure call or calls such a function (found to a fixpoint).

Excluded, on purpose and only these: the body of ``if live_kernel():`` (the interactive widgets draw only for
a reader at a live kernel; a batch run, hence the book, never shows them, and ``test_chapters`` checks that
every ``widgets.interact`` sits under that guard), and a cell whose last top-level statement is
``plt.close(...)`` (its figure is closed before the inline backend would show it). No chapter has the latter.

A figure cell needs ``mystnb.figure.caption``, ``mystnb.figure.name`` (``fig-<chapter>-<what>``, unique in
the book) and ``mystnb.image.alt``; a cell that makes no figure must not carry a caption. The prose refers to
figures by name (``{numref}`` or ``{ref}``), never as "the figure above/below", and every such reference
names a figure of the chapter. ``python -m companion book`` moves each captioned image into a cell of its own
on the staged page (``companion.bookbuild.figures_on_their_images``) so that MyST-NB wraps the image, not the
cell's other outputs, in the figure; ``check_html`` then checks that every image of the built book has alt text.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from companion.regression import chapters

FIGURE_CALL = re.compile(r"\bplt\.|\.subplots\(|\.add_subplot\(|\.figure\(|\bshow_images\(|\bimshow\(|\b(fig|ax|axes)\b")
LIVE_ONLY = "live_kernel"
FIGURE_REF = re.compile(r"\{(?:numref|ref)\}`(?:[^`<]*<)?(fig-[a-z0-9-]+)>?`")
VAGUE_REF = re.compile(r"\b(?:figure|plot|panel)s? (?:above|below)\b", re.I)


def _is_live_only(node: ast.stmt) -> bool:
    """``if live_kernel(): ...`` (the interactive widgets)."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Call) and isinstance(node.test.func, ast.Name)
            and node.test.func.id == LIVE_ONLY)


def plotting_functions(sources: list[str]) -> set[str]:
    """Names of the functions defined at the top level of ``sources`` that draw a figure (to a fixpoint)."""
    bodies = {}
    for source in sources:
        tree = ast.parse(source)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                bodies[node.name] = ast.unparse(node)   # the code without its comments
    found: set[str] = set()
    while True:
        more = {name for name, body in bodies.items() if name not in found and (
            FIGURE_CALL.search(body) or any(re.search(rf"\b{f}\(", body) for f in found))}
        if not more:
            return found
        found |= more


def makes_figure(source: str, plotters: set[str] = frozenset()) -> bool:
    """Whether a cell's top-level code (not function bodies, not ``if live_kernel():``) draws a figure."""
    tree = ast.parse(source)
    if tree.body and re.fullmatch(r"plt\.close\(.*\)", ast.unparse(tree.body[-1]), flags=re.S):
        return False   # built and closed: never shown
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or _is_live_only(node):
            continue
        code = ast.unparse(node)   # without comments
        if FIGURE_CALL.search(code) or any(re.search(rf"\b{f}\(", code) for f in plotters):
            return True
    return False


def figure_cells(path: Path) -> list[tuple[int, object, bool]]:
    """``(index, cell, makes_figure)`` for every code cell of the chapter at ``path``."""
    import jupytext

    nb = jupytext.read(path)
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    plotters = plotting_functions([c.source for _, c in code])
    return [(i, c, makes_figure(c.source, plotters)) for i, c in code]


def _slug(name: str) -> str:
    return name.replace("_", "-")


def test_the_heuristic_finds_figures_and_skips_live_widgets() -> None:
    assert makes_figure("fig, ax = plt.subplots()\nax.plot([1])")
    assert makes_figure("show_images(x, titles);")
    assert makes_figure("axes[0].imshow(img)")
    assert not makes_figure("x = 1  # no plt.plot here")
    assert not makes_figure("def f():\n    plt.plot([1])\n")
    assert makes_figure("def f():\n    plt.plot([1])\n\nf()", plotting_functions(["def f():\n    plt.plot([1])\n"]))
    assert makes_figure("g(2)", plotting_functions(["def f():\n    plt.plot([1])\n", "def g(x):\n    f()\n"]))
    widget = ("def explore(e=0.1):\n    show_images(x)\n    plt.show()\n\n\n"
              "if live_kernel():\n    widgets.interact(explore, e=widgets.FloatSlider())\n")
    assert not makes_figure(widget, plotting_functions([widget]))
    assert not makes_figure("fig, ax = plt.subplots()\nfig.savefig('x.png')\nplt.close(fig)")
    assert makes_figure("plt.close('all')\nfig, ax = plt.subplots()")


@pytest.mark.parametrize("name", sorted(chapters()))
def test_every_figure_has_a_caption_a_name_and_alt_text(name: str) -> None:
    problems = []
    figures = 0
    for i, cell, figure in figure_cells(chapters()[name]):
        options = cell.metadata.get("mystnb", {})
        caption = (options.get("figure") or {}).get("caption")
        label = (options.get("figure") or {}).get("name")
        alt = (options.get("image") or {}).get("alt")
        first = cell.source.strip().splitlines()[0][:60] if cell.source.strip() else ""
        where = f"{name}, cell {i} ({first!r})"
        if not figure:
            if caption or label:
                problems.append(f"{where}: carries a figure caption or name but makes no figure")
            continue
        figures += 1
        if not (isinstance(caption, str) and len(caption.split()) >= 5):
            problems.append(f"{where}: makes a figure without mystnb.figure.caption (a sentence or two)")
        if not (isinstance(label, str) and re.fullmatch(rf"fig-{_slug(name)}-[a-z0-9-]+", label)):
            problems.append(f"{where}: mystnb.figure.name must be fig-{_slug(name)}-<what>, got {label!r}")
        if not (isinstance(alt, str) and len(alt.split()) >= 5):
            problems.append(f"{where}: makes a figure without mystnb.image.alt (what a reader who cannot see it needs)")
        elif isinstance(caption, str) and alt.strip() == caption.strip():
            problems.append(f"{where}: the alt text repeats the caption; describe the image instead")
    assert figures, f"{name}: no figure found; is the heuristic broken?"
    assert not problems, "\n".join(problems)


def test_figure_names_are_unique_and_every_reference_resolves() -> None:
    import jupytext

    seen: dict[str, str] = {}
    problems = []
    for name, path in chapters().items():
        own = set()
        for i, cell, figure in figure_cells(path):
            label = ((cell.metadata.get("mystnb") or {}).get("figure") or {}).get("name")
            if not (figure and label):
                continue
            if label in seen:
                problems.append(f"{label} names a figure of {seen[label]} and of {name}")
            seen[label] = name
            own.add(label)
        text = path.read_text()
        for label in FIGURE_REF.findall(text):
            if label not in own:
                problems.append(f"{name}: refers to {label}, which is no figure of this chapter")
        for cell in jupytext.read(path).cells:
            if cell.cell_type == "markdown":
                for vague in VAGUE_REF.findall(cell.source):
                    problems.append(f"{name}: says {vague!r}; refer to the figure by name ({{numref}}`fig-...`)")
    assert not problems, "\n".join(problems)
