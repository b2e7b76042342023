"""The student edition (``make book-student``): the same book from the same runs, the exercises' solutions removed
from the staged notebooks, and a check of the built HTML that catches any solution left over."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from companion import bookbuild, cli
from companion.regression import NON_CHAPTERS, chapters, repo_root, toc_files

ROOT = repo_root()

MYST = '''# A chapter

Some prose with `{solution}` in inline code.

```{exercise}
:label: ex-one

Compute something.
```

```{solution} ex-one
:class: dropdown

The answer is forty-two, for reasons explained here at length.

    print(42)
```

````{exercise} A titled exercise
:label: ex-two

Explain it.
````

````{solution} ex-two
:class: dropdown

```python
print("nested fence")
```
````

:::{solution} ex-two
A colon fence.
:::

`````markdown
```{solution} ex-one
shown as syntax, inside a code block: stays
```
`````

```{solution-start} ex-one
```
Gated solution text.
```{solution-end}
```
Last words.'''

EXPECTED = '''# A chapter

Some prose with `{solution}` in inline code.

```{exercise}
:label: ex-one

Compute something.
```

````{exercise} A titled exercise
:label: ex-two

Explain it.
````

`````markdown
```{solution} ex-one
shown as syntax, inside a code block: stays
```
`````

Last words.'''


def test_solutions_are_removed_and_nothing_else_changes() -> None:
    text, gated = bookbuild.strip_solutions(MYST)
    assert text == EXPECTED and not gated
    assert bookbuild.strip_solutions(EXPECTED) == (EXPECTED, False)   # no solution: the very same text
    assert bookbuild.strip_solutions(MYST + "\n") == (EXPECTED + "\n", False)
    # a solution at the end of the text leaves no blank line behind
    assert bookbuild.strip_solutions("Intro.\n\n```{solution} ex-one\nx\n```") == ("Intro.", False)
    # the exercises are found, the solutions are not
    exercises = [(d.name, d.options.get("label"), d.argument) for d in bookbuild.directives(MYST) if d.name == "exercise"]
    assert exercises == [("exercise", "ex-one", ""), ("exercise", "ex-two", "A titled exercise")]


def _nb(*cells: dict) -> dict:
    return {"cells": list(cells), "metadata": {"kernelspec": {"name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}


def _md(source: str, **metadata) -> dict:
    return {"cell_type": "markdown", "metadata": metadata, "source": source}


def _code(source: str) -> dict:
    return {"cell_type": "code", "metadata": {"tags": ["hide-input"]}, "source": source, "execution_count": 1,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}]}


def test_the_student_notebook_keeps_every_cell_but_the_solutions() -> None:
    nb = _nb(_md("# Title\n\nProse."), _code("x = 1"),
             _md("```{exercise}\n:label: ex-a\n\nDo it.\n```\n\n```{solution} ex-a\n:class: dropdown\n\nDone.\n```"),
             _md("```{solution} ex-a\nA cell with only a solution.\n```", slide="x"),
             _md("```{exercise}\n:label: ex-b\n\nAnd this.\n```\n\n```{solution-start} ex-b\n:class: dropdown\n```\n\nIn code:"),
             _code("solution = 2"),
             _md("That was it.\n\n```{solution-end}\n```\n\n## References"), _code("y = 2"))
    out = bookbuild.without_solutions(json.loads(json.dumps(nb)))
    assert [c["source"] for c in out["cells"]] == [
        "# Title\n\nProse.", "x = 1", "```{exercise}\n:label: ex-a\n\nDo it.\n```",
        "```{exercise}\n:label: ex-b\n\nAnd this.\n```", "## References", "y = 2"]
    assert out["cells"][1] == nb["cells"][1] and out["cells"][5] == nb["cells"][7]   # code cells untouched
    assert out["cells"][0] == nb["cells"][0] and out["metadata"] == nb["metadata"]
    assert nb["cells"][2]["source"].endswith("Done.\n```")   # the input is not modified
    with pytest.raises(ValueError, match="solution-start"):
        bookbuild.without_solutions(_nb(_md("```{solution-start} ex-a\n```\nNo end.")))


def test_no_solution_of_the_book_is_a_code_cell() -> None:
    """Solutions are Markdown (their code is an indented block): removing the directives removes all of them. A gated
    solution (``solution-start``) could enclose code cells; :func:`without_solutions` removes those too."""
    for name, source in chapters().items():
        blocks = bookbuild.directives(source.read_text())
        for d in blocks:
            if d.name == "solution":
                assert not any(e.name == "code-cell" and d.start < e.start < d.end for e in blocks), name
        assert not any(d.name in ("solution-start", "solution-end") for d in blocks), name


SOLUTION_HTML = ('<div class="solution dropdown admonition" id="ex-one-solution">\n<p class="admonition-title">'
                 '<a class="reference internal" href="#ex-one">Solution to Exercise 1</a></p>\n<section id="solution-content">'
                 '<p>The answer is forty-two, for reasons explained here at length.</p></section></div>')


def test_the_student_check_catches_a_leftover_solution_on_an_html_page() -> None:
    prints = {"ch:ex-one": [bookbuild._words("The answer is forty-two, for reasons explained here at length.")]}
    exercise = '<div class="exercise admonition" id="ex-one"><p>Compute something.</p></div>'
    assert bookbuild.leftover_solutions(f"<html><body>{exercise}</body></html>", prints) == []
    found = bookbuild.leftover_solutions(f"<html><body>{exercise}{SOLUTION_HTML}</body></html>", prints)
    assert found == ["a solution admonition", "the text of the solution ch:ex-one"]
    # the text alone, wrapped and marked up otherwise, is caught too; so is a directive left in a page's source
    text = "<p>The <em>answer</em> is forty&#8209;two,\nfor reasons explained here at length!</p>"
    assert bookbuild.leftover_solutions(text, prints) == ["the text of the solution ch:ex-one"]
    assert bookbuild.leftover_solutions("```{solution} ex-one\n```", prints, markdown=True) == ["a {solution} directive"]
    assert bookbuild.leftover_solutions(EXPECTED, prints, markdown=True) == []   # its syntax shown in a code block


def test_every_solution_of_the_book_can_be_recognised() -> None:
    prints = bookbuild.solution_fingerprints()
    labels = {label for source in chapters().values() for label in
              re.findall(r"^`{3,}\{solution\} ([\w-]+)", source.read_text(), re.M)}
    assert {k.split(":", 1)[1] for k in prints} == labels
    assert all(prints.values()), [k for k, v in prints.items() if not v]
    assert all(len(w.split()) >= 6 for ws in prints.values() for w in ws)


def test_the_student_html_check_reads_pages_sources_and_downloads(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "book").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/ch\n")
    (root / "book" / "ch.md").write_text(MYST)
    html = tmp_path / "html"
    (html / "_sources" / "book").mkdir(parents=True)
    (html / "book").mkdir()
    (html / "book" / "ch.html").write_text(f"<html><body><p>{EXPECTED}</p></body></html>")
    (html / "_sources" / "book" / "ch.ipynb").write_text(json.dumps(_nb(_md(EXPECTED))))
    assert bookbuild.check_student_html(html, root) == []
    (html / "_sources" / "book" / "ch.ipynb").write_text(json.dumps(_nb(_md(MYST))))
    problems = bookbuild.check_student_html(html, root)
    assert problems and all(p.startswith("_sources/book/ch.ipynb: shows ") for p in problems)
    assert "_sources/book/ch.ipynb: shows the text of the solution ch:ex-one (student edition)" in problems


def test_the_student_edition_reuses_the_runs_of_the_full_edition() -> None:
    out, runs = bookbuild.edition_paths("book", "full")
    assert (out, runs) == (ROOT / "_build" / "book", ROOT / "_build" / "book" / "runs")
    out, runs = bookbuild.edition_paths("book", "student")
    assert (out, runs) == (ROOT / "_build" / "book-student", ROOT / "_build" / "book" / "runs")
    assert bookbuild.edition_paths("ci", "student", ROOT / "x")[1] == ROOT / "_build" / "ci" / "runs"
    with pytest.raises(ValueError, match="edition"):
        bookbuild.edition_paths("book", "teacher")


def test_the_command_line_and_make_book_student(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(bookbuild, "build", lambda profile, **kw: calls.append((profile, kw)) or 0)
    assert cli.main(["book", "--profile", "book", "--edition", "student"]) == 0
    assert calls == [("book", {"jobs": 1, "out": None, "edition": "student"})]
    make = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^book-student: .*\n\t(.*)$", make, re.M)
    assert recipe and "-m companion book --profile book --edition student" in recipe.group(1)
    assert "book-student" in re.search(r"^\.PHONY: (.*)$", make, re.M).group(1).split()


def _stub_repo(root: Path) -> Path:
    """A copy of the book's config and table of contents whose chapters are stubs: each chapter's title, its
    prerequisites line, one code cell, and its sections from *Exercises* to the end (exercises, solutions, references)."""
    for name in ("_config.yml", "_toc.yml", "book/references.bib"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    for f in toc_files():
        target = root / f"{f}.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (ROOT / f"{f}.md").read_text()
        if f in NON_CHAPTERS:
            target.write_text(text)
            continue
        head = text[:text.index("\n# ")]   # jupytext's front matter
        title = re.search(r"^# .*$", text, re.M).group(0)
        prereq = re.search(r"^\*\*Prerequisites:\*\*.*?(?=\n\n)", text, re.M | re.S).group(0)
        target.write_text(f"{head}\n{title}\n\n{prereq}\n\n```{{code-cell}} ipython3\nprint(1)\n```\n\n"
                          + text[text.index("## Exercises"):])
    return root


def _runs(root: Path, runs: Path) -> Path:
    """'Executed' notebooks of the stub chapters (no outputs) and their meta files (the run times)."""
    import jupytext

    runs.mkdir(parents=True)
    for k, (name, source) in enumerate(chapters(root).items()):
        jupytext.write(jupytext.read(source), runs / f"{name}.ipynb")
        (runs / f"{name}.meta.json").write_text(json.dumps({"seconds": 30.0 + k}))
    return runs


def _jupyter_book(src: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    cmd = ["nice", "-n", "19", str(Path(sys.executable).parent / "jupyter-book"), "build", str(src),
           "--path-output", str(out), "--builder", "html", *flags]
    return subprocess.run(cmd, capture_output=True, text=True, env=bookbuild.sphinx_env(), timeout=600)


def test_a_tiny_student_edition_builds_clean_and_shows_no_solution(tmp_path: Path, monkeypatch) -> None:
    """Staged (``stage(..., solutions=False)``) and built with execution off under ``-W -n`` like ``make book``:
    the stub chapters' exercises and the generated course page, whose links to every chapter and every exercise
    resolve; no solution shows. The same stubs staged with their solutions fail the student check, each solution
    found. Two small builds, about 30 s."""
    root = _stub_repo(tmp_path / "repo")
    runs = _runs(root, tmp_path / "runs")
    monkeypatch.setattr(bookbuild, "repo_root", lambda: root)
    start = time.perf_counter()
    pages = {bookbuild.COURSE: bookbuild.course_page({"book": runs}, root)}
    student = bookbuild.stage(runs, tmp_path / "student" / "src", appendix="# Reproducibility\n", pages=pages,
                              solutions=False)
    assert yaml.safe_load((student / "_config.yml").read_text())["title"].endswith("(student edition)")
    built = _jupyter_book(student, tmp_path / "student", "-W", "-n", "--keep-going")
    assert built.returncode == 0, built.stdout[-6000:] + built.stderr[-6000:]
    html = tmp_path / "student" / "_build" / "html"
    assert bookbuild.check_html(html) == []
    assert bookbuild.check_student_html(html, root) == []
    course = (html / "book" / "appendix" / "course.html").read_text()
    for source in chapters(root).values():
        for label in re.findall(r"^:label: (ex-[\w-]+)$", source.read_text(), re.M):
            page = os.path.relpath(f"book/{source.parent.name}/{source.stem}.html", Path(bookbuild.COURSE).parent)
            assert f'href="{page}#{label}"' in course, label
            assert f'id="{label}"' in (html / "book" / source.parent.name / f"{source.stem}.html").read_text()

    full = bookbuild.stage(runs, tmp_path / "full" / "src", appendix="# Reproducibility\n", pages=pages)
    built = _jupyter_book(full, tmp_path / "full", "--keep-going")   # the solutions' {numref}s have no figures here
    assert built.returncode == 0, built.stdout[-6000:] + built.stderr[-6000:]
    problems = bookbuild.check_student_html(tmp_path / "full" / "_build" / "html", root)
    for label in bookbuild.solution_fingerprints(root):
        name = label.split(":")[0]
        page = f"{chapters(root)[name].relative_to(root).with_suffix('.html')}"
        assert f"{page}: shows the text of the solution {label} (student edition)" in problems, label
    assert any(p.endswith("shows a solution admonition (student edition)") for p in problems)
    assert time.perf_counter() - start < 120


def test_staging_the_real_chapters_for_students_removes_exactly_their_solutions(tmp_path: Path) -> None:
    """Both editions staged from the same runs (here the sources themselves, without outputs): the student notebooks
    differ only in the Markdown cells that held solutions, which lose those blocks and nothing else."""
    runs = _runs(ROOT, tmp_path / "runs")
    full = bookbuild.stage(runs, tmp_path / "full")
    student = bookbuild.stage(runs, tmp_path / "student", solutions=False)
    for name, source in chapters().items():
        rel = source.relative_to(ROOT).with_suffix(".ipynb")
        a, b = (json.loads((folder / rel).read_text())["cells"] for folder in (full, student))
        assert len(a) == len(b), name
        changed = 0
        for x, y in zip(a, b):
            x, y = ({k: v for k, v in c.items() if k != "id"} for c in (x, y))   # jupytext draws new cell ids
            if x != y:
                changed += 1
                assert x["cell_type"] == "markdown" and y == {**x, "source": bookbuild.strip_solutions(x["source"])[0]}
        markdown = "\n".join(c["source"] for c in b if c["cell_type"] == "markdown")
        assert changed >= 1 and "{solution}" not in markdown and "{solution" not in markdown, name
        assert [e.label for e in bookbuild.chapter_exercises(source)] == re.findall(r"^:label: (ex-[\w-]+)$", markdown, re.M)
