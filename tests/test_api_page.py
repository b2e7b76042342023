"""The API reference appendix: generated from the package at build time, complete, linked to real chapters,
and built clean by Sphinx under ``-W -n`` (warnings are errors, every cross-reference must resolve)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from companion import bookbuild
from companion.regression import NON_CHAPTERS, chapters, repo_root, toc_files

ROOT = repo_root()


@pytest.fixture(scope="module")
def page() -> str:
    return bookbuild.api_page()


def test_the_api_page_is_a_toc_page_but_not_a_chapter() -> None:
    assert bookbuild.API in toc_files() and bookbuild.API in NON_CHAPTERS
    assert toc_files().index(bookbuild.API) == toc_files().index(bookbuild.APPENDIX) + 1
    assert "api" not in chapters()
    assert (ROOT / f"{bookbuild.API}.md").exists()   # the placeholder the build replaces


def _documented(page: str) -> tuple[list[str], dict[str, str]]:
    """The names documented at their home, and each re-export's name -> the home it points to."""
    homes = re.findall(r"^\.\. auto(?:function|class):: ([\w.]+)$", page, re.M)
    homes += [f"{m}.{n}" for n, m in re.findall(r"^\.\. py:data:: (\w+)\n   :module: ([\w.]+)\n(?!   :no-index-entry:)", page, re.M)]
    aliases = {f"{m}.{n}": home for n, m, home in re.findall(
        r"^\.\. py:\w+:: (\w+)\n   :module: ([\w.]+)\n   :no-index-entry:\n.*\n\n   Re-exported from .*:py:obj:`([\w.]+)`", page, re.M)}
    aliases.update(re.findall(r"^``([\w.]+)``: Re-exported from .*:py:obj:`([\w.]+)`", page, re.M))
    return homes, aliases


def test_the_page_documents_every_module_and_public_name(page: str) -> None:
    modules = bookbuild.api_modules()
    assert "companion.ct.dudonet" in modules and "companion._validate" in modules and "companion.__main__" not in modules
    homes, aliases = _documented(page)
    assert len(homes) == len(set(homes)), "a name is documented twice"
    assert set(aliases.values()) <= set(homes)
    for name, module in modules.items():
        assert f"## `{name}`\n\n```{{eval-rst}}\n.. automodule:: {name}\n" in page
        for public in bookbuild.public_names(module):
            assert f"{name}.{public}" in set(homes) | set(aliases), (name, public)
    # a package's re-export points at the home of the very same object
    assert aliases["companion.ct.FanBeam"] == "companion.ct.fan.FanBeam"
    assert aliases["companion.record"] == "companion.record.record"


def test_public_names_follow_all_or_the_source() -> None:
    modules = bookbuild.api_modules()
    assert bookbuild.public_names(modules["companion.ct"]) == list(modules["companion.ct"].__all__)
    viz = bookbuild.public_names(modules["companion.viz"])   # no __all__: functions, classes, constants
    assert "PALETTE" in viz and "live_kernel" in viz and not any(n.startswith("_") for n in viz)


def test_used_in_links_point_at_chapters_of_the_toc(page: str) -> None:
    toc = {f"/{f}" for f in toc_files()}
    chapter_docs = {f"/{f}" for f in toc_files() if f not in NON_CHAPTERS}
    links = re.findall(r":doc:`([^`]+)`", page)
    assert links and set(links) <= chapter_docs <= toc
    assert set(links) == chapter_docs, "every chapter uses some of the companion"


def test_usage_is_read_from_the_chapters_code(tmp_path: Path) -> None:
    import jupytext
    import nbformat

    source = tmp_path / "ch.md"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A chapter\n\n`companion.gan.sample` in prose does not count."),
        nbformat.v4.new_code_cell("%matplotlib inline\nimport companion\nfrom companion import ct\n"
                                  "from companion.metrics import psnr as p"),
        nbformat.v4.new_code_cell("op = ct.ParallelBeam(8, companion.ct.uniform_angles(4))\ncompanion.seed_everything(0)")])
    source.write_text(jupytext.writes(nb, fmt="md:myst"))
    entries = {e.target: e for es in bookbuild.api_entries().values() for e in es}
    used = bookbuild.chapter_uses(source)
    modules = bookbuild.api_modules()
    found = {t for t, e in entries.items() if (id(getattr(modules[e.module], e.name)), e.name) in used}
    assert found == {"companion.ct.parallel.ParallelBeam", "companion.ct.parallel.uniform_angles",
                     "companion.metrics.psnr", "companion.utils.seed_everything"}

    # the real chapters: every name a chapter imports with `from companion... import` lists that chapter
    usage = {}
    for es in bookbuild.api_usage().values():
        for e in es:
            for where in [e.module, *e.exported_by]:
                usage[f"{where}.{e.name}"] = e.used_in
    for name, path in chapters().items():
        for module, within, line in re.findall(r"^from (companion[\w.]*) import (?:\(([^)]*)\)|(.*))$", path.read_text(), re.M):
            for n in [part.split()[0] for part in (within or line.split("#")[0]).split(",") if part.strip()]:
                # a module (from companion import ct) is no entry, nor is a private helper a chapter shows
                if f"{module}.{n}" not in bookbuild.api_modules() and not n.startswith("_"):
                    assert name in usage[f"{module}.{n}"], (name, module, n)


def stage_api_book(dest: Path, page: str) -> Path:
    """The book's config and table of contents with the generated API page, the intro and the appendix
    placeholder; every chapter is a stub with its title (the targets of the API page's links). Execution off."""
    for f in toc_files():
        target = dest / f"{f}.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        if f == bookbuild.API:
            target.write_text(page)
        elif f in NON_CHAPTERS:
            target.write_text((ROOT / f"{f}.md").read_text())
        else:
            title = next(l for l in (ROOT / f"{f}.md").read_text().splitlines() if l.startswith("# "))
            target.write_text(f"{title}\n\nA stub of the chapter.\n")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    for bib in config.get("bibtex_bibfiles", []):
        (dest / bib).write_bytes((ROOT / bib).read_bytes())
    (dest / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (dest / "_toc.yml").write_text((ROOT / "_toc.yml").read_text())
    return dest


def test_the_api_page_builds_clean_under_sphinx_nitpicky_warnings_as_errors(tmp_path: Path, page: str) -> None:
    """``jupyter-book build -W -n`` of the API page (chapters stubbed): every docstring parses and every
    cross-reference resolves, offline. About 15 s."""
    src = stage_api_book(tmp_path / "src", page)
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(src), "--path-output", str(tmp_path / "out"),
           "--builder", "html", "--warningiserror", "--nitpick", "--keep-going"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=bookbuild.sphinx_env(), timeout=600)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-6000:]
    html = (tmp_path / "out" / "_build" / "html" / "book" / "appendix" / "api.html").read_text()
    homes, aliases = _documented(page)
    missing = [t for t in homes + list(aliases) if f'id="{t}"' not in html and t not in bookbuild.api_modules()]
    assert not missing, f"no anchor on the page for {missing}"


def test_stage_puts_the_generated_api_page_in_place_of_the_placeholder(tmp_path: Path, monkeypatch) -> None:
    root, mathjax, dest = tmp_path / "repo", tmp_path / "mathjax", tmp_path / "staged"
    (root / "book" / "appendix").mkdir(parents=True)
    mathjax.mkdir()
    (mathjax / "tex-chtml.js").write_text("//")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/appendix/api\n")
    (root / "_config.yml").write_text("title: tiny\n")
    (root / "book" / "intro.md").write_text("# Intro\n")
    (root / "book" / "appendix" / "api.md").write_text("# API reference\n\nA placeholder.\n")
    monkeypatch.setattr(bookbuild, "repo_root", lambda: root)
    monkeypatch.setattr(bookbuild, "mathjax_dir", lambda: mathjax)
    monkeypatch.setattr(bookbuild, "chapters", lambda root=None: {})
    bookbuild.stage(tmp_path / "runs", dest)
    assert (dest / "book" / "appendix" / "api.md").read_text().endswith("A placeholder.\n")
    bookbuild.stage(tmp_path / "runs", dest, api="# API reference\n\ngenerated\n")
    assert (dest / "book" / "appendix" / "api.md").read_text() == "# API reference\n\ngenerated\n"
