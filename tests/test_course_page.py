"""The course plan appendix for teachers: hand-written prose around parts generated from the chapters at build time
(order, prerequisites, run times from the build's records, exercises, plans of 6 to 8 sessions)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from companion import bookbuild
from companion.regression import NON_CHAPTERS, chapters, repo_root, toc_files

ROOT = repo_root()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Meta files of a ``book`` run of every chapter (no ``ci`` run), as a build leaves them."""
    folder = tmp_path_factory.mktemp("runs")
    for k, name in enumerate(chapters()):
        (folder / f"{name}.meta.json").write_text(json.dumps({"profile": "book", "seconds": 42.0 + 60 * k}))
    return {"book": folder}


@pytest.fixture(scope="module")
def page(runs) -> str:
    return bookbuild.course_page(runs)


def _section(page: str, name: str) -> str:
    return re.search(rf"<!-- generated: {name} -->\n(.*?)<!-- end generated -->", page, re.S).group(1)


def test_the_course_page_is_an_appendix_page_but_not_a_chapter() -> None:
    assert bookbuild.COURSE in toc_files() and bookbuild.COURSE in NON_CHAPTERS
    assert toc_files()[-1] == bookbuild.COURSE   # the Appendix part, after the API reference
    assert "course" not in chapters()
    placeholder = (ROOT / f"{bookbuild.COURSE}.md").read_text()
    assert re.findall(r"<!-- generated: (\w+) -->", placeholder) == ["chapters", "sessions", "exercises"]


def test_it_lists_every_chapter_of_the_toc_in_order(page: str) -> None:
    files = [f for f in toc_files() if f not in NON_CHAPTERS]
    rows = [r for r in _section(page, "chapters").splitlines() if re.match(r"\| \d+ \|", r)]
    assert [re.search(r"\{doc\}`/([^`]+)`", r).group(1) for r in rows] == files
    assert [int(r.split("|")[1]) for r in rows] == list(range(1, len(files) + 1))


def test_run_times_come_from_the_builds_records(page: str) -> None:
    rows = [r for r in _section(page, "chapters").splitlines() if re.match(r"\| \d+ \|", r)]
    cells = [[c.strip() for c in r.split("|")[5:7]] for r in rows]
    assert cells[0] == ["–", "42 s"] and cells[1] == ["–", "1.7 min"]   # no ci run in this build: a dash
    assert "Total: `ci` –, `book` " in page


def test_it_lists_every_exercise_of_every_chapter_under_its_chapter(page: str) -> None:
    listing = _section(page, "exercises")
    headings = re.findall(r"^### \{doc\}`/(.+)`$", listing, re.M)
    assert headings == [s.relative_to(ROOT).with_suffix("").as_posix() for s in chapters().values()]
    blocks = dict(zip(headings, re.split(r"^### .*$", listing, flags=re.M)[1:]))
    for name, source in chapters().items():
        text = source.read_text()
        # read here independently of the page's parser: each exercise directive and the label under it
        labels = re.findall(r"^(`{3,}|:{3,})\{exercise\}[^\n]*\n(?::[\w-]+:.*\n)*?:label: ([\w-]+)$", text, re.M)
        labels = [label for _, label in labels]
        assert labels, f"{name} has no exercise"
        listed = re.findall(r"^- \{ref\}`([\w-]+) <([\w-]+)>`", blocks[source.relative_to(ROOT).with_suffix("").as_posix()], re.M)
        assert [a for a, b in listed] == [b for a, b in listed] == labels, name
        row = next(r for r in _section(page, "chapters").splitlines() if f"{{doc}}`/{source.relative_to(ROOT).with_suffix('').as_posix()}`" in r)
        assert row.rstrip(" |").endswith(f"| {len(labels)}")


def test_every_chapter_states_its_prerequisites_and_comes_after_them(page: str) -> None:
    names = list(chapters())
    for name, source in chapters().items():
        text = bookbuild.prerequisites(source)
        assert text, f"{name}: no **Prerequisites:** line near its top"
        assert "`../" not in text and "{doc}`/book/" in text or "{doc}" not in text
        for needed in bookbuild.prerequisite_chapters(text):
            assert names.index(needed) < names.index(name), f"{name} needs {needed}, which comes later"
        assert f"| {bookbuild._cell(text)} |" in _section(page, "chapters")
    assert bookbuild.prerequisite_chapters(bookbuild.prerequisites(chapters()["pixel_deflection"])) == ["attacks"]


def test_the_session_plans_cover_every_chapter_once_in_order(page: str) -> None:
    names = list(chapters())
    files = {n: s.relative_to(ROOT).with_suffix("").as_posix() for n, s in chapters().items()}
    rows = [r.split("|")[2:-1] for r in _section(page, "sessions").splitlines() if re.match(r"\| \d+ \|", r)]
    assert len(rows) == max(bookbuild.COURSE_SESSIONS)
    for column, sessions in enumerate(bookbuild.COURSE_SESSIONS):
        cells = [r[column].strip() for r in rows]
        shown = [re.findall(r"\{doc\}`/([^`]+)`", c) for c in cells]
        assert [f for s in shown for f in s] == [files[n] for n in names]
        assert sum(1 for c in cells if c != "–") == sessions
    parts = {n: "a" if n in ("x", "y") else n for n in "wxyz"}
    assert bookbuild.course_sessions(list("wxyz"), parts, {}, 3) == [["w"], ["x", "y"], ["z"]]
    assert bookbuild.course_sessions(list("wxyz"), {n: "p" for n in "wxyz"}, {"y": ["x"]}, 3) == [["w"], ["x", "y"], ["z"]]
    assert bookbuild.course_sessions(list("wx"), {}, {}, 3) == [["w"], ["x"], []]


def test_the_prose_is_kept_and_a_missing_region_fails(tmp_path: Path, page: str) -> None:
    placeholder = (ROOT / f"{bookbuild.COURSE}.md").read_text()
    prose = re.sub(r"<!-- generated: (\w+) -->\n.*?<!-- end generated -->", "", placeholder, flags=re.S)
    assert re.sub(r"<!-- generated: (\w+) -->\n.*?<!-- end generated -->", "", page, flags=re.S) == prose
    assert "*Generated when the book is built" not in page
    root = tmp_path
    (root / "book" / "appendix").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/appendix/course\n")
    (root / f"{bookbuild.COURSE}.md").write_text("# Course\n\n<!-- generated: chapters -->\n<!-- end generated -->\n")
    with pytest.raises(ValueError, match="generated regions"):
        bookbuild.course_page({}, root)


def test_exercises_and_prerequisites_are_read_from_myst(tmp_path: Path) -> None:
    (tmp_path / "book" / "b").mkdir(parents=True)
    source = tmp_path / "book" / "b" / "ch.md"
    source.write_text("# Ch\n\n**Prerequisites:** {doc}`The first <../a/first>` and\n{doc}`second`. **Time to run:** 1 s.\n\n"
                      "````{exercise} Titled\n---\nlabel: ex-yaml\n---\nFirst sentence {cite}`key`. Second one.\n"
                      "```python\n```{exercise}\n```\n````\n\n"
                      "```{code-cell} ipython3\n```{exercise}\n```\n\n"
                      ":::{exercise}\n:class: x\n:label: ex-colon\nShort. Then a second sentence, long enough for the opening.\n:::\n")
    found = [(e.label, e.title, e.summary) for e in bookbuild.chapter_exercises(source)]
    assert found == [("ex-yaml", "Titled", "First sentence. Second one."),
                     ("ex-colon", "", "Short. Then a second sentence, long enough for the opening.")]
    assert bookbuild.prerequisites(source, tmp_path) == "{doc}`The first </book/a/first>` and {doc}`/book/b/second`"
