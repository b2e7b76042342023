"""The reader notebooks (``make notebooks``, :mod:`companion.notebooks`): plain Jupyter Markdown around the
chapters' unchanged code cells, an install cell for Colab, launch buttons that open them, the reader
requirements. Fast: nothing is executed (``make notebooks-check`` runs them, see scripts/check_reader_notebooks.sh)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import jupytext
import nbformat
import pytest
import yaml

from companion import notebooks
from companion.regression import HARNESS, chapters, repo_root, source_key

ROOT = repo_root()
CONFIG = notebooks.book_config(ROOT)
MACROS = notebooks.mathjax_macros(CONFIG)
UNRESOLVED = re.compile(r"\{(?:glue[a-z:]*|cite[a-z:]*|numref|doc|ref|eq|prf:ref)\}`")
ANY_ROLE = re.compile(r"\{[A-Za-z][\w:+.-]*\}`")
DIRECTIVE = re.compile(r"(?m)^\s*(?:`{3,}|~{3,}|:{3,})\s*\{")


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else source


def _without_code(markdown: str) -> str:
    """Markdown without fenced code blocks and code spans (where a macro name may be shown on purpose)."""
    markdown = re.sub(r"(?ms)^\s*(`{3,}|~{3,}).*?^\s*\1\s*$", "", markdown)
    return re.sub(r"(`+).+?\1", "", markdown, flags=re.S)


@pytest.fixture(scope="module")
def generated() -> dict[str, dict]:
    return {name: notebooks.reader_notebook(name) for name in chapters()}


@pytest.mark.parametrize("name", list(chapters()))
def test_reader_notebook_is_plain_jupyter_markdown(name: str, generated: dict) -> None:
    nb = generated[name]
    nbformat.validate(nbformat.from_dict(nb))
    markdown = "\n\n".join(_text(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert not UNRESOLVED.findall(markdown), UNRESOLVED.findall(markdown)[:5]
    assert not ANY_ROLE.findall(_without_code(markdown))
    assert not DIRECTIVE.findall(markdown), "a MyST directive fence is left"
    assert not re.search(r"(?m)^\s*\([^()\s]+\)=\s*$", markdown), "a MyST target is left"
    left = [m for m in MACROS if re.search(rf"\\{re.escape(m)}(?![A-Za-z])", _without_code(markdown))]
    assert not left, f"macros of _config.yml left unexpanded: {left}"
    source = chapters()[name].read_text()
    solutions = len(re.findall(r"(?m)^(`{3,}|:{3,})\{solution\}", source))
    assert markdown.count("<details>\n<summary>Solution</summary>\n") == solutions == markdown.count("</details>")
    if "{cite" in source:
        assert "## References" in markdown and "\n- " in markdown.split("## References")[-1]


@pytest.mark.parametrize("name", list(chapters()))
def test_code_cells_are_the_chapters_plus_a_guarded_install_cell_first(name: str, generated: dict) -> None:
    nb = generated[name]
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    install = _text(code[0]["source"])
    assert install.startswith(notebooks.INSTALL_MARKER)
    assert "try:\n    import companion\nexcept ImportError:\n" in install
    pip = [line for line in install.splitlines() if "%pip" in line]
    assert len(pip) == 1 and pip[0].startswith("    %pip install ")   # only in the except branch
    assert notebooks.install_requirement(CONFIG) in pip[0]
    assert CONFIG["repository"]["url"] in pip[0] and f"[{notebooks.READER_EXTRA}]" in pip[0]
    source = [c for c in jupytext.read(chapters()[name]).cells if c.cell_type == "code"]
    assert [_text(c["source"]) for c in code[1:]] == [c.source for c in source]   # byte-identical
    assert [c["metadata"] for c in code[1:]] == [json.loads(json.dumps(c.metadata)) for c in source]
    tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1 and "records_path" in _text(tagged[0]["source"])
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert "jupytext" not in nb["metadata"] and nb["metadata"]["kernelspec"]["name"] == "python3"


def test_generation_is_deterministic() -> None:
    name = next(iter(chapters()))
    assert notebooks.notebook_bytes(notebooks.reader_notebook(name)) == notebooks.notebook_bytes(notebooks.reader_notebook(name))


def test_macros_are_expanded_with_their_arguments() -> None:
    macros = {"norm": (r"\left\lVert #1 \right\rVert", 1), "R": (r"\mathbb{R}", 0), "pair": (r"(#1, #2)", 2),
              "xadv": (r"x_{\mathrm{adv}}", 0), "nn": (r"\norm{#1}_2", 1)}
    assert notebooks.expand_macros(r"$\norm{x - \xadv}$", macros) == r"$\left\lVert x - x_{\mathrm{adv}} \right\rVert$"
    assert notebooks.expand_macros(r"$\norm{f(\{a\}) + {b}}^2$", macros) == r"$\left\lVert f(\{a\}) + {b} \right\rVert^2$"
    assert notebooks.expand_macros(r"$x \in \R^n \Rightarrow \Re z$", macros) == r"$x \in \mathbb{R}^n \Rightarrow \Re z$"
    assert notebooks.expand_macros(r"$\pair{a}b$ $\norm x$", macros) == r"$(a, b)$ $\left\lVert x \right\rVert$"
    assert notebooks.expand_macros(r"$\nn{v}$", macros) == r"$\left\lVert v \right\rVert_2$"   # macros in macros
    assert set(MACROS) >= {"norm", "xadv"} and MACROS["norm"][1] == 1


def _chapter(tmp_path: Path, glue: dict[str, str] | None = None) -> notebooks.MarkdownContext:
    source = tmp_path / "book" / "part" / "ch.md"
    source.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "book" / "other").mkdir(exist_ok=True)
    (tmp_path / "book" / "other" / "page.md").write_text("---\nx: 1\n---\n# The other chapter\n")
    bib = {"solo2020": {"type": "article", "author": "M{\\\"u}ller, Anna", "title": "One", "journal": "J", "year": "2020"},
           "duo2019": {"type": "inproceedings", "author": "Carlini, Nicholas and Wagner, David", "title": "Two",
                       "booktitle": "S&P", "year": "2019", "pages": "39--57"},
           "trio2018": {"type": "misc", "author": "A B and C D and E F", "title": "Three", "year": "2018"}}
    return notebooks.MarkdownContext(source=source, root=tmp_path, macros={"norm": (r"\lVert #1 \rVert", 1)},
                              bibliography=bib, glue=glue or {}, keyprefix="att-")


def test_roles_become_plain_text(tmp_path: Path) -> None:
    ch = _chapter(tmp_path, glue={"acc@0.1": "0.8765", "n": "12"})
    ch.labels["fig-x"] = notebooks.Target("figure", 2, "A caption")
    ch.labels["ex-a"] = notebooks.Target("exercise", 1)
    text = ("Accuracy {glue:text}`acc@0.1:.2f` on {glue:text}`n:.0f` images, {glue:text}`missing:.3f`; "
            "see {cite}`att-duo2019` and {cite}`solo2020,trio2018`, {cite:t}`duo2019`, {numref}`fig-x`, "
            "{numref}`Figure %s <fig-x>`, {ref}`ex-a`, {doc}`../other/page`, {doc}`that page <../other/page>`, "
            "``a {cite}`x` b`` stays and $\\norm{v}$ and {math}`\\norm{w}`.")
    out = notebooks.convert_markdown(text, ch)
    assert out.startswith("Accuracy 0.88 on 12 images, " + notebooks.PLACEHOLDER + ";")
    assert "see (Carlini and Wagner, 2019) and (Müller, 2020; B et al., 2018), Carlini and Wagner (2019)" in out
    assert "Fig. 2, Figure 2, Exercise 1, *The other chapter*, *that page*" in out
    assert "``a {cite}`x` b`` stays" in out and r"$\lVert v \rVert$" in out and r"$\lVert w \rVert$" in out
    assert ch.cited == ["duo2019", "solo2020", "trio2018"] and ch.unresolved_glue == 1
    assert notebooks.format_glue("0.25", ".0%") == "25%" and notebooks.format_glue("-0.0123", "+.3f") == "-0.012"
    ch.baseurl = "https://example.org/book/"
    assert notebooks.convert_markdown("{doc}`../other/page`", ch) == "[The other chapter](https://example.org/book/book/other/page.html)"


def test_directives_become_markdown(tmp_path: Path) -> None:
    ch = _chapter(tmp_path)
    text = "\n".join([
        "(sec-intro)=", "## Intro", "", "Before {ref}`sec-intro`.", "% a comment", "",
        "```{note}", "A note with $\\norm{x}$", "over $$a", "+ b$$ lines.", "```", "",
        "```{admonition} Careful", ":class: dropdown", "", "Hidden.", "```", "",
        "```{exercise}", ":label: ex-one", "", "Do it.", "```", "",
        "````{solution} ex-one", ":class: dropdown", "", "Like this:", "", "```python", "print({1: 2})", "```", "````", "",
        "```{prf:theorem} Big", ":label: thm-big", "", "True.", "```", "",
        "```{prf:proof}", "Obvious.", "```", "",
        ":::{tip}", "Colon fence.", ":::", "",
        "```{bibliography}", ":filter: docname in docnames", "```",
        "```python", "x = {cite}`not-a-role`", "```",
    ])
    ch.cited.append("solo2020")
    out = notebooks.convert_markdown(text, ch)
    assert "(sec-intro)=" not in out and "Before Intro." in out and "a comment" not in out
    assert "> **Note**\n>\n> A note with $\\lVert x \\rVert$\n> over $$a + b$$ lines." in out
    assert "<details>\n<summary>Careful</summary>\n\nHidden.\n\n</details>" in out
    assert "**Exercise 1**\n\nDo it." in out
    assert "<details>\n<summary>Solution</summary>\n\nLike this:\n\n```python\nprint({1: 2})\n```\n\n</details>" in out
    assert "> **Theorem 1 (Big).**\n>\n> True." in out and "> **Proof.**\n>\n> Obvious.\n>\n> ∎" in out
    assert "> **Tip**\n>\n> Colon fence." in out
    assert "- Anna Müller. One. *J*, 2020." in out
    assert "```python\nx = {cite}`not-a-role`\n```" in out   # code blocks are left alone
    assert not DIRECTIVE.search(out.replace("```python", ""))


def test_bibliography_reads_the_books_bib_file() -> None:
    bib = notebooks.read_bibliography(ROOT / "book" / "references.bib")
    assert len(bib) == len(re.findall(r"(?m)^@\w+\{", (ROOT / "book" / "references.bib").read_text()))
    assert notebooks.cite_label(bib["goodfellow2015explaining"]) == "Goodfellow et al., 2015"
    assert notebooks.cite_label(bib["carlini2017towards"]) == "Carlini and Wagner, 2017"
    assert "39–57" in notebooks.reference_text(bib["carlini2017towards"])
    assert not any("\\" in notebooks.reference_text(e) or "{" in notebooks.reference_text(e) for e in bib.values())


def _fake_current_run(runs: Path, name: str, records: dict[str, float], glued: dict[str, str]) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    (runs / f"{name}.json").write_text(json.dumps(records))
    outputs = [{"output_type": "display_data", "metadata": {"scrapbook": {"name": k, "mime_prefix": "application/papermill.record/"}},
                "data": {"application/papermill.record/text/plain": v}} for k, v in glued.items()]
    (runs / f"{name}.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": outputs}]}))
    (runs / f"{name}.meta.json").write_text(json.dumps({"profile": "book", "params": {},
                                                        "code_key": source_key(name, "book", code_only=True)}))


def test_glue_comes_from_the_current_book_run_else_a_placeholder(tmp_path: Path) -> None:
    name = "pahc"
    source = chapters()[name].read_text()
    keys = sorted({k.rsplit(":", 1)[0] for k in re.findall(r"\{glue:text\}`([^`]+)`", source)})
    records = {k: 0.5 for k in keys if k.startswith("f.")}
    glued = {k: "3" for k in keys if k not in records}       # names glued with glue(), not recorded
    runs = tmp_path / "runs"
    _fake_current_run(runs, name, records, glued)
    assert notebooks.glue_values(runs, name) == {**{k: "0.5" for k in records}, **glued}
    md = "\n".join(_text(c["source"]) for c in notebooks.reader_notebook(name, runs=runs)["cells"] if c["cell_type"] == "markdown")
    assert notebooks.PLACEHOLDER not in md and "0.500" in md and "profile `book`" in md
    meta = json.loads((runs / f"{name}.meta.json").read_text())
    (runs / f"{name}.meta.json").write_text(json.dumps({**meta, "code_key": "stale"}))   # a run of older code
    assert notebooks.glue_values(runs, name) == {}
    md = "\n".join(_text(c["source"]) for c in notebooks.reader_notebook(name, runs=runs)["cells"] if c["cell_type"] == "markdown")
    assert md.count(notebooks.PLACEHOLDER) >= len(keys)


def test_figure_captions_follow_their_cells_and_number_the_references(generated: dict) -> None:
    nb = generated["attacks"]
    cells = nb["cells"]
    for i, cell in enumerate(cells):
        caption = cell["metadata"].get("mystnb", {}).get("figure", {}).get("caption") if cell["cell_type"] == "code" else None
        if caption:
            assert cells[i + 1]["cell_type"] == "markdown" and re.match(r"\*\*Fig\. \d+\.\*\* ", _text(cells[i + 1]["source"]))
    md = "\n".join(_text(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "Fig. 8 shows one digit" in md   # fig-attacks-explore, the eighth figure


def test_the_module_is_harness_and_listed() -> None:
    """Editing the reader notebooks' code does not change any chapter's cache key."""
    assert "notebooks.py" in HARNESS
    assert notebooks.DISTRIBUTION == re.search(r'(?m)^name = "([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)


class _Config(dict):
    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(key) from err


def test_launch_and_download_buttons_open_the_reader_notebook(tmp_path: Path) -> None:
    """sphinx-book-theme's own URL code, fed the staged config (as Jupyter Book converts it), for each chapter."""
    pytest.importorskip("sphinx_book_theme")
    from jupyter_book.config import yaml_to_sphinx
    from sphinx_book_theme.header_buttons import add_header_buttons, update_context_with_repository_info
    from sphinx_book_theme.header_buttons.launch import add_launch_buttons

    staged = notebooks.launch_config(CONFIG)
    assert staged["repository"]["branch"] == notebooks.notebooks_branch(CONFIG) != CONFIG["repository"]["branch"]
    assert "notebooks_branch" not in staged["repository"]
    options = yaml_to_sphinx(staged)[0]["html_theme_options"]
    config = _Config(html_theme_options=options, html_context={}, overrides={}, _raw_config={})
    for name, source in chapters().items():
        pagename = source.relative_to(ROOT).with_suffix("").as_posix()
        app = SimpleNamespace(config=config, builder=None, outdir=str(tmp_path / "html"),
                              env=SimpleNamespace(metadata={pagename: {"kernelspec": {"name": "python3"}}},
                                                  doc2path=lambda p: str(tmp_path / "src" / f"{p}.ipynb")))
        update_context_with_repository_info(app)
        context = {**config.html_context, "pagename": pagename, "sourcename": f"{pagename}.ipynb",
                   "page_source_suffix": ".ipynb", "header_buttons": [], "pathto": lambda *a: "../../_sources"}
        add_header_buttons(app, pagename, "page.html", context, None)
        add_launch_buttons(app, pagename, "page.html", context, None)
        links = {b["text"]: b.get("url") for group in context["header_buttons"] for b in group.get("buttons", [])}
        path = notebooks.published_path(source)
        assert path == f"{pagename}.ipynb"
        expected = notebooks.launch_urls(CONFIG, path)
        assert links["Colab"] == expected["colab"] == (
            f"https://colab.research.google.com/github/robust-imaging-book/robust-imaging-book/blob/notebooks/{path}")
        assert links["Binder"] == expected["binder"] == (
            f"https://mybinder.org/v2/gh/robust-imaging-book/robust-imaging-book/notebooks?urlpath=lab/tree/{path}")
        assert links[".ipynb"] == f"../../_sources/{path}"   # the download, which publish_downloads fills


def test_downloads_are_published_and_checked(tmp_path: Path) -> None:
    html = tmp_path / "html"
    config = notebooks.launch_config(CONFIG)
    for source in chapters().values():
        path = notebooks.published_path(source)
        page = html / Path(path).with_suffix(".html")
        page.parent.mkdir(parents=True, exist_ok=True)
        urls = notebooks.launch_urls(config, path)
        page.write_text(f'<a href="{urls["colab"]}"></a><a href="{urls["binder"]}"></a>'
                        f'<a href="{"../" * (path.count("/"))}_sources/{path}"></a>')
        (html / "_sources" / path).parent.mkdir(parents=True, exist_ok=True)
        (html / "_sources" / path).write_text(json.dumps({"cells": [{"cell_type": "code", "source": "x"}]}))
    problems = notebooks.check_published(html)
    assert len(problems) == len(chapters()) and all("is not the reader notebook" in p for p in problems)
    written = notebooks.publish_downloads(html)
    assert len(written) == len(chapters()) and notebooks.check_published(html) == []
    page = html / Path(notebooks.published_path(chapters()["attacks"])).with_suffix(".html")
    page.write_text(page.read_text().replace("/notebooks/", "/main/"))
    assert any("colab button" in p for p in notebooks.check_published(html))


def test_stage_points_the_launch_buttons_at_the_notebooks_branch(tmp_path: Path, monkeypatch) -> None:
    from companion import bookbuild

    root, mathjax = tmp_path / "repo", tmp_path / "mathjax"
    (root / "book").mkdir(parents=True)
    mathjax.mkdir()
    (mathjax / "tex-chtml.js").write_text("//")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\n")
    (root / "_config.yml").write_text(yaml.safe_dump({"title": "tiny", "repository": CONFIG["repository"]}))
    (root / "book" / "intro.md").write_text("# Intro\n")
    monkeypatch.setattr(bookbuild, "repo_root", lambda: root)
    monkeypatch.setattr(bookbuild, "mathjax_dir", lambda: mathjax)
    monkeypatch.setattr(bookbuild, "chapters", lambda root=None: {})
    bookbuild.stage(tmp_path / "runs", tmp_path / "staged")
    repository = yaml.safe_load((tmp_path / "staged" / "_config.yml").read_text())["repository"]
    assert repository == {"url": CONFIG["repository"]["url"], "path_to_book": "", "branch": "notebooks"}


def test_commit_to_branch_adds_the_notebooks_to_heads_tree(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "ch.md").write_text("# ch\n")
    git("add", ".")
    git("commit", "-qm", "sources")
    first = notebooks.commit_to_branch({"book/ch.ipynb": b"{}\n"}, "notebooks", tmp_path)
    assert git("show", "notebooks:book/ch.ipynb") == "{}" and git("show", "notebooks:book/ch.md") == "# ch"
    assert git("status", "--porcelain") == ""                    # neither the index nor the working tree changed
    assert notebooks.commit_to_branch({"book/ch.ipynb": b"{}\n"}, "notebooks", tmp_path) == first   # nothing new
    (tmp_path / "book" / "ch.md").write_text("# ch, edited\n")
    git("commit", "-qam", "edit")
    second = notebooks.commit_to_branch({"book/ch.ipynb": b"[]\n"}, "notebooks", tmp_path)
    assert git("rev-list", "--parents", "-n", "1", second).split()[1:] == [first, git("rev-parse", "HEAD")]
    assert git("show", "notebooks:book/ch.md") == "# ch, edited"


def test_reader_requirements_binder_and_the_check_agree() -> None:
    lines = [line.split("#")[0].strip() for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines()]
    lines = [line for line in lines if line]
    assert lines == ["--extra-index-url https://download.pytorch.org/whl/cpu", "-c ../constraints.txt", "torch",
                     "torchvision", f".[{notebooks.READER_EXTRA}]"]
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    pyproject = (ROOT / "pyproject.toml").read_text()
    extra = re.search(rf"(?ms)^{notebooks.READER_EXTRA} = \[(.*?)\]", pyproject).group(1)
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in (ROOT / "constraints.txt").read_text().splitlines()
              if "==" in line}
    for requirement in re.findall(r'"([^"]+)"', extra):
        assert re.split(r"[<>=!\[ ]", requirement)[0].lower() in pinned, requirement   # versions of constraints.txt
    script = (ROOT / "scripts" / "check_reader_notebooks.sh").read_text()
    assert "torch torchvision" in script and f'".[{notebooks.READER_EXTRA}]"' in script and "-e ." not in script
    assert "-p profile ci" in script and "COMPANION_BATCH=1" in script and "CELL_TIMEOUT_S['ci']" in script
    assert "notebooks-check:" in (ROOT / "Makefile").read_text()
