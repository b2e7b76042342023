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


def test_the_page_takes_todays_code_cell_metadata_and_keeps_what_the_run_wrote(tmp_path) -> None:
    import jupytext
    import nbformat

    caption = {"figure": {"caption": "New caption.", "name": "fig-ch-x"}, "image": {"alt": "New alt text."}}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("seed = 0", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("plot()", metadata={"tags": ["hide-input"], "mystnb": caption})])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    source = tmp_path / "ch.md"
    source.write_text(jupytext.writes(nb, fmt="md:myst"))
    ran = {"execution": {"iopub.status.idle": "2026-01-01T00:00:00Z"}, "papermill": {"duration": 1.5, "status": "completed"}}
    old = {"figure": {"caption": "Old caption.", "name": "fig-ch-old"}}
    image = {"output_type": "display_data", "data": {"image/png": "iVBOR"}, "metadata": {}}

    def code(source: str, outputs: list, **metadata) -> dict:
        return {"cell_type": "code", "metadata": {**metadata, **ran}, "source": source, "outputs": outputs}

    executed = {"cells": [code("seed = 0", [], tags=["parameters"]), code("seed = 1", [], tags=["injected-parameters"]),
                          code("plot()", [image], tags=["remove-output"], mystnb=old, scrolled=True)],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    page = bookbuild.with_current_prose(executed, source)
    assert [c["metadata"].get("tags") for c in page["cells"]] == [["parameters"], ["injected-parameters"], ["hide-input"]]
    plot = page["cells"][2]
    assert plot["metadata"] == {"tags": ["hide-input"], "mystnb": caption, **ran}   # no old caption, tag or front-end key
    assert plot["outputs"] == executed["cells"][2]["outputs"]
    assert page["cells"][1]["metadata"] == executed["cells"][1]["metadata"]          # papermill's cell is untouched


def test_each_captioned_image_gets_a_cell_of_its_own() -> None:
    figure = {"figure": {"caption": "What it shows.", "name": "fig-ch-a"}, "image": {"alt": "What it looks like."}}
    image = {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Figure>"}, "metadata": {}}
    bar = {"output_type": "display_data", "data": {"application/vnd.jupyter.widget-view+json": {}, "text/plain": "0%"}, "metadata": {}}
    glue = {"output_type": "display_data", "data": {"application/papermill.record/text/plain": "0.5"},
            "metadata": {"scrapbook": {"name": "x", "mime_prefix": "application/papermill.record/"}}}
    table = {"output_type": "execute_result", "data": {"text/markdown": "| a |", "text/plain": "<Markdown>"}, "metadata": {},
             "execution_count": 3}
    stream = {"output_type": "stream", "name": "stdout", "text": "x = 0.5\n"}

    def cell(outputs: list, tags: tuple = (), options: dict = figure, cid: str = "c1") -> dict:
        return {"cell_type": "code", "id": cid, "source": "plot()", "execution_count": 3, "outputs": outputs,
                "metadata": {"tags": list(tags), "mystnb": options, "papermill": {"duration": 1.0}}}

    alone = cell([stream, glue, image])          # one image and nothing else shown: MyST-NB does it right
    mixed = cell([bar, stream, glue, table, image], tags=("hide-input",), cid="c2")
    two = cell([image, {**image, "data": {"image/png": "iVBOQ"}}], cid="c3")
    none = cell([bar], cid="c4")
    plain = cell([bar, image], options={"image": {"alt": "Alt only."}}, cid="c5")
    out = bookbuild.figures_on_their_images({"cells": [alone, mixed, two, none, plain], "metadata": {}})["cells"]
    assert out[0] == alone and out[-1] == plain
    code, moved = out[1], out[2]
    assert code["source"] == "plot()" and code["outputs"] == [bar, stream, glue, table]
    assert code["metadata"] == {"tags": ["hide-input"], "mystnb": {"image": figure["image"]}, "papermill": {"duration": 1.0}}
    assert moved["outputs"] == [image] and moved["source"].strip() and moved["id"] == "c2-image-0"
    assert moved["metadata"] == {"tags": ["hide-input", "remove-input"], "mystnb": figure}
    first, last = out[4], out[5]                 # two images: the caption and the name go to the last
    assert out[3]["outputs"] == [] and "figure" not in out[3]["metadata"]["mystnb"]
    assert first["metadata"]["mystnb"] == {"image": figure["image"]} and last["metadata"]["mystnb"] == figure
    assert [first["outputs"], last["outputs"]] == [two["outputs"][:1], two["outputs"][1:]]
    assert out[6]["outputs"] == [bar] and out[6]["metadata"]["mystnb"] == {"image": figure["image"]}   # no image: no figure
    assert len(out) == 8


def test_html_check_wants_alt_text_on_every_image(tmp_path) -> None:
    mathjax = '<script src="mathjax/tex-chtml.js"></script>'
    good = '<figure><img alt="Two line plots of accuracy against the budget." src="../_images/ab12.png" /></figure>'
    assert bookbuild.check_html(_page(tmp_path, mathjax + good)) == []
    bad = ('<img src="../_images/c0ffee.png">'                                  # no alt at all
           '<img alt="  " src="../_images/d1.png" />'                             # blank
           '<img alt="../_images/e2.png" src="../_images/e2.png" />'              # docutils' default: the path
           '<img alt="plot.png" src="data:image/png;base64,AAAA" />')             # a file name is no description
    problems = bookbuild.check_html(_page(tmp_path, mathjax + good + bad))
    assert len(problems) == 4 and all("has no alt text" in p for p in problems), problems
    assert bookbuild.missing_alt_text('<img alt="Binder logo" src="_static/binder.svg">') == []


def test_runtime_table_scales_timed_runs_to_the_reference_machine(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bookbuild, "chapters", lambda root=None: {"timed": Path("a.md"), "untimed": Path("b.md")})
    for profile, seconds in (("ci", 60.0), ("book", 400.0)):
        runs = tmp_path / "_build" / profile / "runs"
        runs.mkdir(parents=True)
        workload = 2 * bookbuild.REFERENCE_WORKLOAD_S          # a machine twice as slow as the reference
        (runs / "timed.meta.json").write_text(json.dumps({"seconds": seconds, "workload_s": workload}))
        (runs / "untimed.meta.json").write_text(json.dumps({"seconds": seconds}))
    table = bookbuild.runtime_table(tmp_path)
    assert "| timed | 60 s | 30 s | 400 s | 200 s |" in table
    assert "| untimed | 60 s | – | 400 s | – |" in table
    assert table.startswith(bookbuild.README_START) and table.endswith(bookbuild.README_END)
