"""The book build: cache keys, staging, the HTML checks, the README runtime table."""
from __future__ import annotations

import json
from pathlib import Path

from companion import bookbuild
from companion.regression import chapters, repo_root, source_key


def _page(tmp_path: Path, body: str, name: str = "chapter.html") -> Path:
    (tmp_path / "mathjax").mkdir(parents=True, exist_ok=True)
    (tmp_path / "_static").mkdir(exist_ok=True)
    (tmp_path / "mathjax" / "tex-chtml.js").write_text("//")
    (tmp_path / name).write_text(f"<html><body>{body}</body></html>")
    return tmp_path


def test_html_check_passes_a_clean_page(tmp_path) -> None:
    html = _page(tmp_path, '<table><tr><td>1</td></tr></table><script src="_static/../mathjax/tex-chtml.js?v=1"></script>')
    assert bookbuild.check_html(html) == []


def test_html_check_catches_each_rendering_defect(tmp_path) -> None:
    html = _page(tmp_path, "<p>| a | b |\n| --- | --- |\n| 1 | 2 |</p>"
                           '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>'
                           '<div class="cell tag_injected-parameters">records_path = "' + str(repo_root()) + '/x.json"</div>')
    problems = "\n".join(bookbuild.check_html(html))
    assert "paragraph of pipes" in problems
    assert "MathJax is loaded from https" in problems
    assert "injected parameters" in problems
    assert "build machine's path" in problems


def test_injected_parameters_cell_is_removed_from_the_page() -> None:
    warning = {"output_type": "stream", "name": "stderr", "text": [f"{repo_root()}/companion/gan.py:203: LinAlgWarning\n"]}
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "outputs": [warning],
                     "source": ["profile = \"ci\"\n", "records_path = \"/home/me/_build/x.json\"\n"]},
                    {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "x = 0"}]}
    out = json.loads(bookbuild._hide_injected_parameters(json.dumps(nb).encode()))
    assert out["cells"][0]["metadata"]["tags"] == ["injected-parameters", "remove-cell"]
    assert out["cells"][0]["source"] == 'profile = "ci"\nrecords_path = None\n'
    assert out["cells"][1]["metadata"]["tags"] == ["parameters"]
    assert out["cells"][0]["outputs"][0]["text"] == "companion/gan.py:203: LinAlgWarning\n"


def test_cache_key_follows_the_sources_but_not_the_harness(tmp_path, monkeypatch) -> None:
    name = next(iter(chapters()))
    key = source_key(name, "book")
    assert key == source_key(name, "book") != source_key(name, "ci")
    assert key != source_key(name, "book", {"seed": 1})
    runs = tmp_path / "runs"
    runs.mkdir()
    assert not bookbuild.is_current(runs, name, "book")
    for suffix in (".ipynb", ".json"):
        (runs / f"{name}{suffix}").write_text("{}")
    code_key = source_key(name, "book", code_only=True)
    (runs / f"{name}.meta.json").write_text(json.dumps({"profile": "book", "code_key": code_key, "params": {}}))
    assert bookbuild.is_current(runs, name, "book")
    assert not bookbuild.is_current(runs, name, "ci")
    (runs / f"{name}.meta.json").write_text(json.dumps({"profile": "book", "code_key": "0" * 16, "params": {}}))
    assert not bookbuild.is_current(runs, name, "book")


def test_mathjax_is_bundled() -> None:
    assert (bookbuild.mathjax_dir() / "tex-chtml.js").stat().st_size > 100_000


def test_editing_a_chapter_changes_only_its_key_and_companion_changes_all(tmp_path) -> None:
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/a\n  - file: book/b\n")
    (tmp_path / "book").mkdir()
    for name in ("a", "b"):
        (tmp_path / "book" / f"{name}.md").write_text(f"# {name}\n")
    (tmp_path / "companion").mkdir()
    (tmp_path / "companion" / "attacks.py").write_text("x = 1\n")
    (tmp_path / "companion" / "bookbuild.py").write_text("y = 1\n")
    (tmp_path / "constraints.txt").write_text("torch==2.14.1\n")

    def keys() -> tuple[str, str]:
        return source_key("a", "book", root=tmp_path), source_key("b", "book", root=tmp_path)

    a0, b0 = keys()
    (tmp_path / "book" / "a.md").write_text("# a, edited\n")
    a1, b1 = keys()
    assert a1 != a0 and b1 == b0
    (tmp_path / "companion" / "bookbuild.py").write_text("y = 2\n")   # the harness: no re-run
    assert keys() == (a1, b1)
    (tmp_path / "companion" / "attacks.py").write_text("x = 2\n")
    a2, b2 = keys()
    assert a2 != a1 and b2 != b1
    (tmp_path / "constraints.txt").write_text("torch==2.15\n")
    assert keys() != (a2, b2)
    code = source_key("a", "ci", root=tmp_path, code_only=True)   # calibration runs depend on code cells only
    (tmp_path / "book" / "a.md").write_text("# a, edited prose\n")
    assert source_key("a", "ci", root=tmp_path, code_only=True) == code


def test_the_page_shows_todays_prose_with_the_executed_outputs(tmp_path) -> None:
    import pytest

    import jupytext
    import nbformat

    def write(prose: str, code: str) -> None:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Old title"),
                                             nbformat.v4.new_code_cell("seed = 0", metadata={"tags": ["parameters"]}),
                                             *[nbformat.v4.new_markdown_cell(p) for p in prose.split("\n\n")],
                                             nbformat.v4.new_code_cell(code)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
        source.write_text(jupytext.writes(nb, fmt="md:myst"))

    source = tmp_path / "ch.md"
    executed = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# Old title"},
                          {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "seed = 0", "outputs": []},
                          {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "seed = 1", "outputs": []},
                          {"cell_type": "markdown", "metadata": {}, "source": "Old prose."},
                          {"cell_type": "code", "metadata": {}, "source": "print(seed)",
                           "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}]}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    write("New prose,\n\nin two cells.", "print(seed)")
    page = bookbuild.with_current_prose(executed, source)
    assert [c["cell_type"] for c in page["cells"]] == ["markdown", "code", "code", "markdown", "markdown", "code"]
    assert page["cells"][3]["source"] == "New prose," and page["cells"][5]["outputs"][0]["text"] == "1\n"
    write("New prose.", "print(seed + 1)")
    with pytest.raises(ValueError, match="code differs"):
        bookbuild.with_current_prose(executed, source)
