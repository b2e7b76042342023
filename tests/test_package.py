"""The package as a whole: every module imports, the modules import each other without a cycle, and the
command line and the book staging work on their own (no chapter is executed here)."""
from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import companion
from companion import bookbuild, cli

PACKAGE = Path(companion.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_module_name(p) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The companion modules that ``from ... import ...`` in ``module`` names (a package's submodules included)."""
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
    return [c for c in candidates if c in MODULES]


def import_graph() -> dict[str, set[str]]:
    """Module -> the companion modules it imports at module level (``if TYPE_CHECKING:`` blocks included).

    Imports inside functions and methods are left out: they run only when called, after every module has
    loaded, so they cannot form an import-time cycle (the harness uses them to load heavy modules lazily).
    ``__main__`` is left out: it runs the command line and nothing imports it.
    """
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if "__pycache__" in path.parts or path.name == "__main__.py":
            continue
        name, is_package = _module_name(path), path.name == "__init__.py"
        edges: set[str] = set()
        todo = list(ast.parse(path.read_text()).body)
        while todo:
            node = todo.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.ImportFrom):
                edges.update(_resolve(name, is_package, node))
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in MODULES)
            todo.extend(ast.iter_child_nodes(node))
        # A package's own submodules are loaded through it; edges from a module to its parent package are
        # loads of an already initialising package, not dependencies.
        graph[name] = {e for e in edges if e != name and not name.startswith(e + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("name", [m for m in MODULES if m != "companion.__main__"])
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_the_modules_import_each_other_without_a_cycle() -> None:
    graph = import_graph()
    assert set(graph) == set(MODULES) - {"companion.__main__"}
    assert graph["companion.recon"] >= {"companion.attacks", "companion.inverse"}   # the parser sees the edges
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_cli_help_lists_the_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "companion", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in ("run", "check", "calibrate", "bless", "list", "book", "stage-book", "check-html", "runtimes",
                    "notebooks"):
        assert command in out.stdout


@pytest.mark.parametrize("argv", [["run", "no_such_chapter"], ["check", "no_such_chapter", "records.json"],
                                  ["bless", "no_such_chapter"], ["calibrate", "no_such_chapter"]])
def test_cli_rejects_an_unknown_chapter_clearly(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown chapter 'no_such_chapter'" in err and "attacks" in err   # names the chapters that exist


def test_stage_puts_executed_notebooks_in_place_of_the_sources(tmp_path, monkeypatch) -> None:
    """:func:`companion.bookbuild.stage` on a tiny book: one chapter, one plain page, a stale file; MathJax is faked."""
    import jupytext
    import nbformat

    root, runs, mathjax, dest = tmp_path / "repo", tmp_path / "runs", tmp_path / "mathjax", tmp_path / "staged"
    (root / "book" / "part").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/part/ch\n")
    (root / "_config.yml").write_text("title: tiny\nexecute:\n  execute_notebooks: force\n")
    (root / "book" / "intro.md").write_text("# Intro\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Chapter"), nbformat.v4.new_code_cell("print(1)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    (root / "book" / "part" / "ch.md").write_text(jupytext.writes(nb, fmt="md:myst"))
    runs.mkdir()
    executed = json.loads(nbformat.writes(nb))
    executed["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "1\n"}]
    (runs / "ch.ipynb").write_text(json.dumps(executed))
    (mathjax / "ui").mkdir(parents=True)
    (mathjax / "tex-chtml.js").write_text("//")
    (mathjax / "ui" / "menu.js").write_text("//")
    monkeypatch.setattr(bookbuild, "repo_root", lambda: root)
    monkeypatch.setattr(bookbuild, "mathjax_dir", lambda: mathjax)
    (dest / "book").mkdir(parents=True)
    (dest / "book" / "removed.md").write_text("stale")

    assert bookbuild.stage(runs, dest) == dest
    page = json.loads((dest / "book" / "part" / "ch.ipynb").read_text())
    assert [c["cell_type"] for c in page["cells"]] == ["markdown", "code"]
    assert page["cells"][1]["outputs"][0]["text"] == "1\n"
    assert not (dest / "book" / "part" / "ch.md").exists() and not (dest / "book" / "removed.md").exists()
    assert (dest / "book" / "intro.md").read_text() == "# Intro\n"
    assert (dest / "_extra" / "mathjax" / "ui" / "menu.js").exists()
    config = (dest / "_config.yml").read_text()
    assert "execute_notebooks: 'off'" in config and "mathjax_path" in config
    (runs / "ch.ipynb").unlink()
    with pytest.raises(FileNotFoundError, match="chapter ch has no executed notebook"):
        bookbuild.stage(runs, dest)
