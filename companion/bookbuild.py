"""``make book`` and the book check of ``make test``: execute (cached), check the claims, stage, build, verify.

1. Every chapter runs with the one papermill runner (:func:`companion.regression.run_chapter`) in its own
   process. An executed notebook is reused while its key (:func:`companion.regression.source_key`: the
   chapter's code cells, the companion's sources, the profile, the parameters, the pinned constraints) is
   unchanged; the page shows today's prose (:func:`with_current_prose`).
2. Its records are checked against the claims' statuses (and, in the ``ci`` profile, the calibrated values);
   a broken "reproduced" claim fails the build.
3. The book is staged with the executed notebooks in place of the sources (each captioned image in a cell of
   its own, :func:`figures_on_their_images`), the reproducibility appendix is generated from this build's
   records, the API reference from the package's code (:func:`api_page`), and Jupyter Book renders it with
   execution off, warnings as errors and nitpicky (``-W -n``). The launch buttons open the chapters' reader
   notebooks (:func:`companion.notebooks.launch_config`).
4. :func:`check_html` verifies the pages: tables are HTML tables, the math script is local, no injected
   parameters cell or build path shows, every image has alt text. Each chapter's download button then gets
   its reader notebook (:func:`companion.notebooks.publish_downloads`), and
   :func:`companion.notebooks.check_published` verifies the Colab, Binder and download links.
5. The student edition (``--edition student``, ``make book-student``) is the same build from the same runs, staged
   without the solutions of the exercises (:func:`without_solutions`) and checked for leftovers
   (:func:`check_student_html`); every build fills in the course plan appendix (:func:`course_page`).
"""
from __future__ import annotations

import ast
import datetime
import hashlib
import html as _html
import importlib
import inspect
import json
import os
import pkgutil
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import yaml

from . import expected as _expected
from .notebooks import book_config, check_published, directive_options, launch_config, publish_downloads
from .regression import (CELL_TIMEOUT_S, CI_BUDGET_S, REFERENCE_WORKLOAD_S, available_cores, chapters, current_records,
                         environment_summary, on_reference_scale, repo_root, run_in_subprocess)

APPENDIX = "book/appendix/reproducibility"
API = "book/appendix/api"
BUDGET_S = {"ci": 90, "book": 300}


def _meta(runs: Path, name: str) -> dict:
    path = runs / f"{name}.meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def is_current(runs: Path, name: str, profile: str) -> bool:
    """Whether ``runs`` holds an executed notebook of ``name`` made from today's code.

    The chapter's code cells count, not its prose: :func:`stage` puts today's Markdown cells into the page.
    """
    return current_records(runs, name, profile) is not None


RUN_METADATA = ("execution", "papermill")   # what nbclient and papermill write into a cell's metadata when it runs


def with_current_prose(executed: dict, source: Path) -> dict:
    """The executed notebook with the Markdown cells and the code-cell metadata of today's ``source``.

    The code cells must be unchanged; each keeps its outputs and the metadata the run wrote
    (:data:`RUN_METADATA`), and takes everything else (tags, ``mystnb`` captions and alt text) from today's
    source, so that editing a caption does not need a new run.
    """
    import jupytext

    current = jupytext.read(source)
    ran = [c for c in executed["cells"] if c["cell_type"] == "code"]
    injected = [c for c in ran if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    ran = [c for c in ran if c not in injected]
    cells = []
    for cell in current.cells:
        if cell.cell_type != "code":
            prose = json.loads(json.dumps(cell))
            # jupytext draws a random id for each Markdown cell: derive it from the cell instead, so that an
            # unchanged chapter stages an unchanged notebook and Sphinx does not re-read the page
            prose["id"] = "md-" + hashlib.sha1(f"{len(cells)}:{cell.source}".encode()).hexdigest()[:12]
            cells.append(prose)
            continue
        done = ran.pop(0) if ran else None
        done_source = "".join(done["source"]) if done is not None and isinstance(done["source"], list) else (done or {}).get("source")
        if done_source != cell.source:
            raise ValueError(f"{source}: the executed notebook's code differs from the source; run the chapter again")
        ran_metadata = done.get("metadata", {})
        metadata = {**json.loads(json.dumps(cell.metadata)), **{k: ran_metadata[k] for k in RUN_METADATA if k in ran_metadata}}
        cells.append({**done, "metadata": metadata})
        if "parameters" in metadata.get("tags", []):
            cells += injected   # papermill's cell goes right after the parameters cell
    if ran:
        raise ValueError(f"{source}: the executed notebook has more code cells than the source; run the chapter again")
    return {**executed, "cells": cells}


def _is_image(output: dict) -> bool:
    return output.get("output_type") in ("display_data", "execute_result") and any(
        mime.startswith("image/") for mime in output.get("data", {}))


def _is_shown(output: dict) -> bool:
    """A display output MyST-NB renders (glue records with a MIME prefix are removed from the page)."""
    return (output.get("output_type") in ("display_data", "execute_result")
            and not output.get("metadata", {}).get("scrapbook", {}).get("mime_prefix"))


def figures_on_their_images(nb: dict) -> dict:
    """Put each image of a captioned code cell into a cell of its own, so that the caption belongs to the image.

    MyST-NB wraps *every* display output of a cell with ``mystnb.figure`` metadata in a figure with that caption
    and name: a progress bar or a results table of the same cell would become a captioned figure too, and two
    figures would share one name. A captioned cell whose only shown output is one image is left alone. Otherwise
    its images move, in order, into input-less cells right after it (tags ``remove-input``, the cell's tags and
    ``mystnb.image`` options); the last of them carries the caption and the name. The cell itself keeps its
    source and other outputs and loses the ``figure`` options. A captioned cell without any image loses them too,
    so that a reference to the missing figure fails the build instead of pointing at another output.
    """
    cells = []
    for cell in nb["cells"]:
        options = cell.get("metadata", {}).get("mystnb", {})
        outputs = cell.get("outputs", [])
        if cell.get("cell_type") != "code" or "figure" not in options:
            cells.append(cell)
            continue
        images = [o for o in outputs if _is_image(o)]
        if len(images) == 1 and all(_is_image(o) for o in outputs if _is_shown(o)):
            cells.append(cell)
            continue
        rest = {k: v for k, v in options.items() if k != "figure"}
        metadata = {k: v for k, v in cell["metadata"].items() if k != "mystnb"}
        cells.append({**cell, "metadata": {**metadata, **({"mystnb": rest} if rest else {})},
                      "outputs": [o for o in outputs if not _is_image(o)]})
        tags = [t for t in metadata.get("tags", []) if t not in ("parameters", "injected-parameters")]
        for k, image in enumerate(images):
            shown = {**rest, **({"figure": options["figure"]} if k == len(images) - 1 else {})}
            # MyST-NB skips a cell whose source is empty, outputs and all: give it a (hidden) comment
            new = {"cell_type": "code", "execution_count": None, "source": "# the figure of the cell above",
                   "outputs": [image],
                   "metadata": {"tags": [*tags, "remove-input"], "mystnb": shown}}
            if "id" in cell:   # nbformat 4.5: every cell has a unique id
                new["id"] = f"{cell['id'][:54]}-image-{k}"
            cells.append(new)
    return {**nb, "cells": cells}


def execute_all(profile: str, runs: Path, jobs: int = 1, log=print) -> None:
    """Run every chapter whose executed notebook is not current, ``jobs`` at a time."""
    names = list(chapters())
    todo = [n for n in names if not is_current(runs, n, profile)]
    for n in names:
        if n not in todo:
            log(f"{n}: cached ({_meta(runs, n).get('seconds', '?')} s when it ran)")
    threads = max(1, available_cores() // max(1, jobs))
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    failed = []
    while todo or running:
        while todo and len(running) < jobs:
            name = todo.pop(0)
            log(f"{name}: running ({profile}, {threads} thread(s), cell timeout {CELL_TIMEOUT_S[profile]} s)")
            running[name] = (run_in_subprocess(name, profile, runs, env={"COMPANION_THREADS": str(threads)},
                                               log=runs / f"{name}.log"), time.perf_counter())
        time.sleep(0.5)
        for name, (proc, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode:
                failed.append(name)
                tail = (runs / f"{name}.log").read_text().strip().splitlines()[-3:]
                log(f"{name}: FAILED after {time.perf_counter() - start:.0f} s\n    " + "\n    ".join(tail))
            else:
                log(f"{name}: done in {time.perf_counter() - start:.0f} s")
    if failed:
        raise RuntimeError(f"chapters failed to run: {', '.join(failed)} (logs in {runs})")


def check_all(profile: str, runs: Path) -> dict[str, list[str]]:
    """Problems per chapter: claims against their statuses (all profiles), calibrated values (``ci``)."""
    root = repo_root()
    return {n: _expected.check_records(n, json.loads((runs / f"{n}.json").read_text()), _expected.load(n, root),
                                       values=profile == "ci") for n in chapters()}


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write only when the bytes differ, so that Sphinx rebuilds only the pages that changed."""
    if not path.exists() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _hide_injected_parameters(notebook: bytes) -> bytes:
    """Hide papermill's injected cell on the page and drop the build machine's paths from the page and download.

    The records path of the injected cell becomes ``None``; warnings printed with a file name show it relative
    to the repository (``companion/gan.py:203: ...``).
    """
    root = str(repo_root()) + "/"
    nb = json.loads(notebook)
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                text = "".join(output["text"]) if isinstance(output["text"], list) else output["text"]
                output["text"] = text.replace(root, "")
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            if "remove-cell" not in tags:
                tags.append("remove-cell")
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = re.sub(r"(?m)^records_path = .*$", "records_path = None", source)
    return (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode()


def mathjax_dir() -> Path:
    """MathJax 3 shipped by the ``django-static-mathjax`` wheel (a book built offline reads offline)."""
    import importlib.util

    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("MathJax is not installed; `pip install django-static-mathjax` (book extra)")
    path = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    if not (path / "tex-chtml.js").exists():
        raise FileNotFoundError(f"no tex-chtml.js in {path}")
    return path


def stage(runs: Path, dest: Path, appendix: str | None = None, api: str | None = None, *,
          pages: dict[str, str] | None = None, solutions: bool = True) -> Path:
    """A copy of the book at ``dest`` with each chapter's executed notebook in place of its MyST source.

    Only changed files are written. The config turns execution off and points MathJax at a local copy;
    papermill's injected parameters cell is hidden; ``appendix`` and ``api`` (Markdown) replace the
    placeholders of the reproducibility appendix and of the API reference (:func:`api_page`); ``pages`` maps other
    pages (``book/appendix/course``) to the Markdown that replaces them. ``solutions=False`` stages the student
    edition: the chapters without the solutions of their exercises (:func:`without_solutions`).
    """
    root = repo_root()
    dest.mkdir(parents=True, exist_ok=True)
    generated = {**({APPENDIX: appendix} if appendix is not None else {}), **({API: api} if api is not None else {}),
                 **(pages or {})}
    wanted: set[Path] = set()
    executed = {src.relative_to(root).with_suffix(""): name for name, src in chapters(root).items()}
    for src in sorted((root / "book").rglob("*")):
        if not src.is_file() or "_build" in src.parts or src.suffix == ".ipynb":
            continue
        rel = src.relative_to(root)
        if rel.suffix == ".md" and rel.with_suffix("") in executed:
            name = executed[rel.with_suffix("")]
            notebook = runs / f"{name}.ipynb"
            if not notebook.exists():
                raise FileNotFoundError(f"chapter {name} has no executed notebook in {runs}")
            target = dest / rel.with_suffix(".ipynb")
            page = figures_on_their_images(with_current_prose(json.loads(notebook.read_text()), src))
            page = page if solutions else without_solutions(page)
            _write_if_changed(target, _hide_injected_parameters(json.dumps(page).encode()))
        else:
            target = dest / rel
            key = rel.with_suffix("").as_posix()
            _write_if_changed(target, generated[key].encode() if key in generated else src.read_bytes())
        wanted.add(target)
    config = launch_config(book_config(root))   # launch buttons: reader notebooks
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    sphinx = config.setdefault("sphinx", {}).setdefault("config", {})
    # outside _static: Jupyter Book would add every .js file of _static to every page
    sphinx["html_extra_path"] = ["_extra"]
    sphinx["mathjax_path"] = "../mathjax/tex-chtml.js"   # relative to _static
    if not solutions:
        config["title"] = f"{config.get('title', 'The book')} (student edition)"
    for name, text in (("_config.yml", yaml.safe_dump(config, sort_keys=False)), ("_toc.yml", (root / "_toc.yml").read_text())):
        _write_if_changed(dest / name, text.encode())
        wanted.add(dest / name)
    mathjax = mathjax_dir()
    for sub in ("tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions", "ui", "a11y", "adaptors", "sre"):
        src = mathjax / sub
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file()) if src.exists() else []
        for f in files:
            target = dest / "_extra" / "mathjax" / f.relative_to(mathjax)
            _write_if_changed(target, f.read_bytes())
            wanted.add(target)
    for stale in [p for p in (dest / "book").rglob("*") if p.is_file() and p not in wanted]:
        stale.unlink()
    return dest


def _filled(claim: str, records: dict[str, float]) -> str:
    """``claim`` with each record name replaced by its value (``"0.37 <= 0.54"``)."""
    for name in sorted(_expected.claim_names(claim), key=len, reverse=True):
        if name in records:
            claim = re.sub(rf"(?<![A-Za-z0-9_.@]){re.escape(name)}(?![A-Za-z0-9_.@])", f"{records[name]:.4g}", claim)
    return claim


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def appendix_page(profile: str, runs: dict[str, Path], env: dict[str, str], threads: int) -> str:
    """The reproducibility appendix: environment, run times, every claim with the paper's number and ours.

    ``runs`` maps a profile to the folder of its executed chapters; ``profile`` is the one this build shows.
    """
    root = repo_root()
    names = list(chapters(root))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Reproducibility: every claim, every run", "",
        f"This page is generated by `python -m companion book --profile {profile}` from the records of the build "
        f"that produced this book ({when}); it is never edited by hand. Each chapter's claims are checked against "
        "their status on every build, and a \"reproduced\" claim that breaks fails the build.", "",
        "A claim's **status** comes from calibration (`python -m companion calibrate`): the chapter's `ci` profile is "
        "run five times, with three seeds, with 1 and 2 threads and with the AVX2 instead of the AVX-512 CPU kernels, "
        "and its last `book` run counts as a sixth. "
        "*Reproduced*: the claim held in every run (it is asserted); *not reproduced*: it held in none (its failure "
        "is asserted, so that the text saying so cannot go stale); *mixed*: it held in some (reported, not asserted). "
        "The margin is the smallest slack seen over those runs, in the units of the records.", "",
        "## Environment", "",
        "| Python | torch | CPU | CPU kernels | cores | threads per chapter |", "| --- | --- | --- | --- | --- | --- |",
        f"| {env['python']} | {env['torch']} | {_cell(env['cpu'])} | {env['cpu_capability']} | {env['cores']} | {threads} |", "",
        "## Run times", "",
        f"Wall time of each chapter's papermill run, kernel start included. Budgets: `ci` ≤ {BUDGET_S['ci']} s, "
        f"`book` ≤ {BUDGET_S['book']} s. A dash: the profile was not run in this build.", "",
        "| chapter | `ci` (s) | `book` (s) |", "| --- | --- | --- |",
    ]
    for n in names:
        times = [_meta(runs[p], n).get("seconds", "–") if p in runs else "–" for p in ("ci", "book")]
        lines.append(f"| {n} | {times[0]} | {times[1]} |")
    lines += ["", "## Claims", "",
              f"*Ours* shows the claim with the values of this build's `{profile}` run filled in.", ""]
    for n in names:
        spec = _expected.load(n, root)
        records = json.loads((runs[profile] / f"{n}.json").read_text())
        counts = {s: sum(c["status"] == s for c in spec["claims"]) for s in _expected.STATUSES}
        lines += [f"### {n}", "", ", ".join(f"{k} {v}" for k, v in counts.items() if v) + ".", "",
                  "| claim | paper | ours | calibration | status |", "| --- | --- | --- | --- | --- |"]
        for c in spec["claims"]:
            holds = _expected.evaluate_claim(c["claim"], records)[0]
            lines.append(f"| `{_cell(c['claim'])}` | {_cell(c.get('paper', c['why']))} | {_cell(_filled(c['claim'], records))} "
                         f"({'holds' if holds else 'fails'}) | {c['runs']}, margin {c['margin']:.3g} | {c['status']} |")
        lines.append("")
    return "\n".join(lines)


def api_modules() -> dict[str, ModuleType]:
    """Every module of the package, imported, the package first and each subpackage before its modules.

    ``companion.__main__`` is left out: importing it runs the command line.
    """
    package = importlib.import_module(__package__)
    names = [__package__] + [m.name for m in pkgutil.walk_packages(package.__path__, f"{__package__}.")
                             if m.name.rsplit(".", 1)[-1] != "__main__"]
    return {name: importlib.import_module(name) for name in names}


def public_names(module: ModuleType) -> list[str]:
    """The module's public API: its ``__all__``; without one, the functions, classes and UPPER_CASE constants
    its source defines at top level whose names do not start with an underscore, in source order."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    names = []
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper()]
    return [n for n in dict.fromkeys(names) if not n.startswith("_")]


@dataclass
class ApiEntry:
    """One documented public name, at its home: the module that defines it (see :func:`api_entries`)."""

    module: str
    name: str
    kind: str                     # "class", "function" or "data"
    exported_by: list[str] = field(default_factory=list)   # the other modules that list it in their API
    used_in: list[str] = field(default_factory=list)       # chapter names

    @property
    def target(self) -> str:
        return f"{self.module}.{self.name}"


def api_entries(modules: dict[str, ModuleType] | None = None) -> dict[str, list[ApiEntry]]:
    """Module name -> the entries documented in its section, each public name once.

    A name is documented at its home: a class or function in the module that defines it (when that module
    lists it as public), a constant in the deepest module that lists the same object; a package that
    re-exports it (``companion.ct.FanBeam``) links to it.
    """
    modules = modules or api_modules()
    public = {m: public_names(mod) for m, mod in modules.items()}
    entries: dict[str, list[ApiEntry]] = {m: [] for m in modules}
    homes: dict[tuple[int, str], ApiEntry] = {}
    for m, mod in modules.items():
        for name in public[m]:
            obj = getattr(mod, name)
            if (id(obj), name) in homes:
                continue
            where = [m2 for m2, names in public.items() if name in names and getattr(modules[m2], name, None) is obj]
            defined = getattr(obj, "__module__", None) if inspect.isclass(obj) or inspect.isroutine(obj) else None
            home = defined if defined in where else max(where, key=lambda m2: m2.count("."))
            kind = "class" if inspect.isclass(obj) else "function" if inspect.isroutine(obj) else "data"
            entry = ApiEntry(home, name, kind, exported_by=[m2 for m2 in where if m2 != home])
            entries[home].append(entry)
            homes[(id(obj), name)] = entry
    # in the order of the home module's own list
    for m, es in entries.items():
        es.sort(key=lambda e: public[m].index(e.name))
    return entries


def _code_cells(source: Path) -> list[str]:
    """The code cells of a MyST notebook, IPython magics and shell lines turned into ``pass``."""
    import jupytext

    cells = []
    for cell in jupytext.read(source).cells:
        if cell.cell_type == "code":
            cells.append("\n".join(re.sub(r"^(\s*)[%!].*$", r"\1pass", line) for line in cell.source.splitlines()))
    return cells


def chapter_uses(source: Path, modules: dict[str, ModuleType] | None = None) -> set[tuple[int, str]]:
    """``(id(object), name)`` of every companion object a chapter's code imports or reaches as an attribute.

    ``from companion.ct import FanBeam`` and ``companion.ct.FanBeam(...)`` both count, as does
    ``pretrained.load(...)`` after ``from companion import pretrained``.
    """
    modules = modules or api_modules()
    package = modules[__package__]
    trees = [ast.parse(code, filename=str(source)) for code in _code_cells(source)]
    bound: dict[str, object] = {}
    used: set[tuple[int, str]] = set()

    def ours(module: str | None) -> bool:
        return module is not None and (module == __package__ or module.startswith(f"{__package__}."))

    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if ours(alias.name):
                        if alias.asname:
                            bound[alias.asname] = importlib.import_module(alias.name)
                        else:
                            bound[alias.name.split(".")[0]] = package
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and ours(node.module):
                mod = importlib.import_module(node.module)
                for alias in node.names:
                    obj = getattr(mod, alias.name, None)
                    if obj is None:
                        obj = importlib.import_module(f"{node.module}.{alias.name}")
                    bound[alias.asname or alias.name] = obj
                    used.add((id(obj), alias.name))
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            chain, base = [], node
            while isinstance(base, ast.Attribute):
                chain.insert(0, base.attr)
                base = base.value
            if not isinstance(base, ast.Name) or base.id not in bound:
                continue
            obj = bound[base.id]
            for attr in chain:
                obj = getattr(obj, attr, None)
            if obj is not None:
                used.add((id(obj), chain[-1]))
    return used


def api_usage(root: Path | None = None, modules: dict[str, ModuleType] | None = None) -> dict[str, list[ApiEntry]]:
    """:func:`api_entries` with each entry's ``used_in``: the chapters whose code imports or uses it."""
    modules = modules or api_modules()
    entries = api_entries(modules)
    by_object: dict[tuple[int, str], ApiEntry] = {}
    for m, es in entries.items():
        for e in es:
            by_object[(id(getattr(modules[e.module], e.name)), e.name)] = e   # the same object where re-exported
    for name, source in chapters(root).items():
        for key in chapter_uses(source, modules):
            if key in by_object and name not in by_object[key].used_in:
                by_object[key].used_in.append(name)
    return entries


def _comments(module: ModuleType) -> dict[str, str]:
    """UPPER_CASE constant -> the comment that explains it in the module's source: the comment lines right above
    its assignment, or the comment at the end of its first line."""
    import io
    import tokenize

    source = inspect.getsource(module)
    lines = source.splitlines()
    inline = {tok.start[0]: tok.string.lstrip("#").strip()
              for tok in tokenize.generate_tokens(io.StringIO(source).readline)
              if tok.type == tokenize.COMMENT and lines[tok.start[0] - 1][:tok.start[1]].strip()}
    out = {}
    for node in ast.parse(source).body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        above, n = [], node.lineno - 1
        while n >= 1 and lines[n - 1].lstrip().startswith("#"):
            above.insert(0, lines[n - 1].strip().lstrip("#").strip())
            n -= 1
        text = " ".join(above) or inline.get(node.lineno, "")
        for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
            if isinstance(t, ast.Name) and text:
                out[t.id] = text
    return out


def _rst_text(text: str) -> str:
    """Plain text (a source comment) as reST that shows it verbatim."""
    return re.sub(r"([\\`*|_<>\[\]])", r"\\\1", text)


def _summary(module: ModuleType) -> str:
    """The first paragraph of a module's docstring on one line, its cross-references shown as literals
    (the summary table has no current module to resolve them against)."""
    first = (inspect.getdoc(module) or "").split("\n\n")[0].replace("\n", " ").strip()
    return re.sub(r":(?:\w+:)?\w+:`~?([^`]+)`", lambda m: f"``{m.group(1)}``", first)


def api_page(root: Path | None = None) -> str:
    """The API reference appendix: every module of the package, its public names with their docstrings
    (Sphinx autodoc) and, for each name, links to the chapters that use it.

    Generated from the code when the book is built (:func:`build`), like the reproducibility appendix; the
    page in the repository is a placeholder. The Markdown holds reST (``eval-rst``) blocks of autodoc directives.
    A name a package re-exports gets a short entry there that points to its home, so that both
    ``companion.ct.FanBeam`` and ``companion.ct.fan.FanBeam`` are targets of cross-references.
    """
    root = root or repo_root()
    modules = api_modules()
    entries = api_usage(root, modules)
    docs = {name: "/" + source.relative_to(root).with_suffix("").as_posix() for name, source in chapters(root).items()}
    reexported = {m: [e for es in entries.values() for e in es if m in e.exported_by] for m in modules}

    def links(names) -> str:
        return ", ".join(f":doc:`{docs[n]}`" for n in sorted(set(names), key=list(docs).index))

    lines = [
        "# API reference", "",
        "This page is generated from the companion package's code and docstrings when the book is built "
        "(`make book`); it is never edited by hand. Each module's public API is the list in its `__all__` or, "
        "without one, the functions, classes and UPPER_CASE constants it defines. A name is documented once, in "
        "the module that defines it; a package that re-exports it points there. *Used in* names the chapters whose "
        "code imports or calls it.", "",
        "```{eval-rst}",
        ".. list-table::", "   :header-rows: 1", "   :widths: 25 50 25", "",
        "   * - module", "     - what it holds", "     - its names are used in",
    ]
    for m, mod in modules.items():
        used = [c for e in entries[m] + reexported[m] for c in e.used_in]
        lines += [f"   * - :py:mod:`{m}`", f"     - {_summary(mod)}", f"     - {links(used) or '--'}"]
    lines += ["```", ""]
    for m, mod in modules.items():
        comments = _comments(mod)
        lines += [f"## `{m}`", "", "```{eval-rst}", f".. automodule:: {m}", "   :no-members:", ""]
        for e in reexported[m]:
            note = f"Re-exported from :py:mod:`{e.module}`: see :py:obj:`{e.target}`."
            if f"{m}.{e.name}" in modules:   # companion.record, the function, hides the module of that name
                lines += [f"``{m}.{e.name}``: {note}", ""]
            else:
                lines += [f".. py:{e.kind}:: {e.name}", f"   :module: {m}", "   :no-index-entry:", "   :no-contents-entry:",
                          "", f"   {note}", ""]
        for e in entries[m]:
            used = f"*Used in:* {links(e.used_in)}." if e.used_in else "*Used in:* no chapter."
            if e.kind == "data":
                typ = type(getattr(mod, e.name))   # shown unless private (a typing alias's class)
                shown = typ.__name__ if typ.__module__ == "builtins" else f"{typ.__module__}.{typ.__qualname__}"
                lines += [f".. py:data:: {e.name}", f"   :module: {m}",
                          *([f"   :type: {shown}"] if not re.search(r"(^|\.)_", shown) else []), ""]
                if e.name in comments:
                    lines += [f"   {_rst_text(comments[e.name])}", ""]
            elif e.kind == "class":
                lines += [f".. autoclass:: {e.target}", "   :members:", "   :undoc-members:", "   :show-inheritance:", ""]
            else:
                lines += [f".. autofunction:: {e.target}", ""]
            lines += [f"   {used}", ""]
        lines += ["```", ""]
    return "\n".join(lines)


def sphinx_env(root: Path | None = None) -> dict[str, str]:
    """The environment of the ``jupyter-book build`` subprocess: autodoc must import the package of this
    checkout (the one :func:`api_page` read), not whichever one the virtual environment has installed."""
    root = root or repo_root()
    path = [str(root), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


class _Images(HTMLParser):
    """The ``(src, alt)`` of every ``<img>`` of a page (``alt`` is ``None`` when the attribute is missing)."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            attributes = dict(attrs)
            self.images.append((attributes.get("src") or "", attributes.get("alt")))


def missing_alt_text(page: str) -> list[str]:
    """The ``src`` of each image of ``page`` without alt text.

    Missing, blank, or only a file name: docutils writes the image's path into ``alt`` when none is given, so
    an ``alt`` that names an image file (or the ``src``'s file) counts as missing.
    """
    parser = _Images()
    parser.feed(page)
    missing = []
    for src, alt in parser.images:
        alt = (alt or "").strip()
        name = src.split("?")[0].rsplit("/", 1)[-1]
        if (not alt or (name and alt.rsplit("/", 1)[-1] == name)
                or re.fullmatch(r"\S+\.(png|jpe?g|gif|svg|webp|pdf|bmp|tiff?)", alt, flags=re.I)):
            missing.append(src)
    return missing


def check_html(html_dir: Path) -> list[str]:
    """Problems of a built book: Markdown tables left as text, math from a CDN, injected parameters or build paths
    shown, images without alt text."""
    problems = []
    loads_mathjax = False
    build_path = str(repo_root())
    pages = sorted(html_dir.rglob("*.html"))
    if not pages:
        return [f"no HTML pages in {html_dir}"]
    for page in pages:
        if "_static" in page.parts or page.name in ("search.html", "genindex.html"):
            continue
        text = page.read_text(errors="replace")
        rel = page.relative_to(html_dir)
        if re.search(r"<p>\|[^<]*\|\s*(---|:-)", text):
            problems.append(f"{rel}: a Markdown table is shown as a paragraph of pipes, not as a table")
        loads_mathjax = loads_mathjax or "mathjax" in text.lower()
        for src in re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', text, flags=re.I):
            if src.startswith(("http:", "https:", "//")):
                problems.append(f"{rel}: MathJax is loaded from {src}; the book must read offline")
            elif not (page.parent / src.split("?")[0]).exists():
                problems.append(f"{rel}: the MathJax script {src} is missing")
        if "injected-parameters" in text or "Parameters injected by papermill" in text:
            problems.append(f"{rel}: shows papermill's injected parameters cell")
        if build_path in _html.unescape(text):
            problems.append(f"{rel}: shows the build machine's path {build_path}")
        for src in missing_alt_text(text):
            problems.append(f"{rel}: the image {src} has no alt text (mystnb.image.alt of its cell)")
    if not loads_mathjax:
        problems.append("no page loads MathJax")
    return problems


def build(profile: str = "book", *, jobs: int = 1, out: Path | None = None, edition: str = "full", log=print) -> int:
    """Execute (cached), check, stage and build the book in ``profile``; 0 when everything holds.

    ``edition="student"``: the same build from the same runs (:func:`edition_paths`), without the solutions.
    """
    root = repo_root()
    out, runs = edition_paths(profile, edition, out)
    runs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    execute_all(profile, runs, jobs=jobs, log=log)
    problems = {n: p for n, p in check_all(profile, runs).items() if p}
    for n, ps in problems.items():
        log(f"{n}: {len(ps)} problem(s)\n    " + "\n    ".join(ps))
    other = "book" if profile == "ci" else "ci"
    all_runs = {profile: runs, **({other: root / "_build" / other / "runs"} if (root / "_build" / other / "runs").exists() else {})}
    threads = max(1, available_cores() // max(1, jobs))
    page = appendix_page(profile, all_runs, environment_summary(), threads)
    src = stage(runs, out / "src", appendix=page, api=api_page(root), pages={COURSE: course_page(all_runs, root)},
                solutions=edition != "student")
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(src), "--path-output", str(out), "-W", "-n", "--keep-going"]
    built = subprocess.run(cmd, cwd=root, env=sphinx_env(root))
    html_dir = out / "_build" / "html"
    html_problems = check_html(html_dir) if built.returncode == 0 else ["jupyter-book build failed (see above)"]
    html_problems += check_student_html(html_dir, root) if built.returncode == 0 and edition == "student" else []
    if built.returncode == 0 and edition != "student":   # each chapter's download button offers its reader
        # notebook (whose solutions are collapsed, not removed: the student edition keeps its staged notebooks)
        publish_downloads(html_dir, runs=runs, profile=profile)
        html_problems += check_published(html_dir)
    for p in html_problems:
        log(f"HTML: {p}")
    log(f"book ({profile}) built in {time.perf_counter() - start:.0f} s: {html_dir / 'index.html'}")
    return 1 if problems or html_problems else 0


README_START, README_END = "<!-- runtimes: generated by `python -m companion runtimes --write-readme` -->", "<!-- end runtimes -->"


def runtime_table(root: Path | None = None) -> str:
    """The README's runtime table, from the meta files of the last ``ci`` and ``book`` builds in ``_build``."""
    root = root or repo_root()
    env = environment_summary()
    rows = ["| chapter | `ci` | `ci` on the reference scale | `book` | `book` on the reference scale |",
            "| --- | --- | --- | --- | --- |"]
    for n in chapters(root):
        ci, book = (_meta(root / "_build" / profile / "runs", n) for profile in ("ci", "book"))
        ci_s, book_s = (("–" if m.get("seconds") is None else f"{m['seconds']:.0f} s") for m in (ci, book))
        ci_scaled, book_scaled = ((f"{on_reference_scale(m['seconds'], m['workload_s']):.0f} s"
                                   if m.get("seconds") and m.get("workload_s") else "–") for m in (ci, book))
        rows.append(f"| {n} | {ci_s} | {ci_scaled} | {book_s} | {book_scaled} |")
    return "\n".join([README_START, "", *rows, "",
                      f"Measured by the last `make test` (`ci`) and `make book` (`book`) on {env['cpu']}, "
                      f"{env['cores']} cores, torch {env['torch']}. On the reference scale: the time times "
                      f"{REFERENCE_WORKLOAD_S} s over the reference workload's time around the run "
                      f"(`companion.regression.ci_budget_s`; `book` runs only where they were timed with "
                      f"`python -m companion run CHAPTER --time-workload`); the `ci` budget is {CI_BUDGET_S:.0f} s "
                      f"on that scale.", README_END])


def write_readme_runtimes(root: Path | None = None) -> Path:
    root = root or repo_root()
    readme = root / "README.md"
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < 0:
        raise ValueError(f"README.md lacks the markers {README_START!r} ... {README_END!r}")
    readme.write_text(text[:start] + runtime_table(root) + text[end + len(README_END):])
    return readme


# ---------------------------------------------------------------------------------------------------------------------
# Editions and the course plan: the student edition (the same pages without the solutions of the exercises) and the
# appendix page for teachers (chapters, order, prerequisites, run times, exercises, a 6-8 session plan).

COURSE = "book/appendix/course"
EDITIONS = ("full", "student")
# Directives whose body is literal text, not Markdown: nothing inside them is a directive (MyST's code cells too).
LITERAL_DIRECTIVES = frozenset({"code", "code-block", "sourcecode", "code-cell", "literalinclude", "raw", "math",
                                "eval-rst", "eval-md", "bibliography", "glue:math"})
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}|:{3,})[ \t]*(.*?)\s*$")


@dataclass
class Directive:
    """A fenced block of MyST Markdown: ``name`` is the directive's (``None`` for a plain code block); ``start`` and
    ``end`` are the indices of its opening and closing fence lines (``end`` is the last line when it is unclosed)."""

    name: str | None
    argument: str
    start: int
    end: int
    options: dict[str, str] = field(default_factory=dict)
    body: list[str] = field(default_factory=list)   # the lines after the options, without the fences


def directives(text: str | list[str]) -> list[Directive]:
    """Every fenced block of ``text`` (MyST Markdown), in document order, nested directives included.

    CommonMark's rule: a fence of backticks, tildes or (MyST's ``colon_fence``) colons is closed by a line of the same
    character at least as long; directives inside a directive's body count, nothing inside a code block or a
    :data:`LITERAL_DIRECTIVES` body does. Options are read from ``:key: value`` lines or a ``---`` YAML block.
    """
    lines = text.splitlines() if isinstance(text, str) else text
    found: list[Directive] = []

    def scan(lo: int, hi: int) -> None:
        i = lo
        while i < hi:
            m = _FENCE.match(lines[i])
            if not m or (m.group(1)[0] == "`" and "`" in m.group(2)):
                i += 1
                continue
            fence, info = m.group(1), m.group(2)
            close = next((j for j in range(i + 1, hi)
                          if re.fullmatch(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*", lines[j])), None)
            end = hi - 1 if close is None else close   # unclosed: the block runs to the end of its container
            named = re.match(r"\{([^}\s]+)\}\s*(.*)$", info)
            name, argument = (named.group(1), named.group(2).strip()) if named else (None, info)
            inner = lines[i + 1:hi if close is None else close]
            options, k = directive_options(inner) if name is not None else ({}, 0)
            found.append(Directive(name, argument, i, end, options, inner[k:]))
            if name is not None and name not in LITERAL_DIRECTIVES:
                scan(i + 1, end)
            i = end + 1

    scan(0, len(lines))
    return found


def strip_solutions(text: str, gated: bool = False) -> tuple[str, bool]:
    """``text`` (MyST Markdown) without its ``{solution}`` blocks, and whether a gated solution is still open.

    A ``{solution}`` block goes with the blank lines after it; a ``{solution-start}`` ... ``{solution-end}`` pair
    (sphinx-exercise's gated solution, which may enclose code cells) goes with everything between. ``gated``: the
    text starts inside a gated solution opened by an earlier cell. Everything else is left as it was.
    """
    lines = text.splitlines(keepends=True)
    drop: list[tuple[int, int]] = []
    gate = 0 if gated else None
    covered = -1
    for d in directives([line.rstrip("\r\n") for line in lines]):
        if d.start <= covered:
            continue
        if gate is not None:
            if d.name == "solution-end":
                drop.append((gate, d.end))
                covered, gate = d.end, None
        elif d.name == "solution":
            drop.append((d.start, d.end))
            covered = d.end
        elif d.name == "solution-start":
            gate = d.start
    if gate is not None:
        drop.append((gate, len(lines) - 1))
    if not drop:
        return text, gate is not None
    keep = [True] * len(lines)
    for lo, hi in drop:
        for n in range(lo, hi + 1):
            keep[n] = False
        n = hi + 1
        while n < len(lines) and not lines[n].strip():
            keep[n] = False
            n += 1
    kept = [line for line, k in zip(lines, keep) if k]
    if not any(keep[drop[-1][0]:]):   # the text ended with a solution: no blank lines left dangling
        while kept and not kept[-1].strip():
            kept.pop()
        if kept and not text.endswith("\n"):
            kept[-1] = kept[-1].rstrip("\r\n")
    return "".join(kept), gate is not None


def without_solutions(nb: dict) -> dict:
    """The notebook of the student edition: every ``{solution}`` block removed from its Markdown cells; the cells
    inside a gated solution (``{solution-start}`` ... ``{solution-end}``, code cells included) removed; a Markdown
    cell left empty removed. Exercises and every other cell stay as they are."""
    cells, gated = [], False
    for cell in nb["cells"]:
        if cell.get("cell_type") != "markdown":
            if not gated:
                cells.append(cell)
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        text, gated = strip_solutions(source, gated)
        if text == source:
            cells.append(cell)
        elif text.strip():
            cells.append({**cell, "source": text})
    if gated:
        raise ValueError("a {solution-start} without its {solution-end}")
    return {**nb, "cells": cells}


@dataclass
class Exercise:
    """One ``{exercise}`` of a chapter: its label, its title (the directive's argument, often empty) and the opening
    of its text (its first sentences)."""

    label: str
    title: str
    summary: str


def _opening(body: list[str], chars: int = 80) -> str:
    """The first sentence of an exercise's first paragraph, and the next ones while it is shorter than ``chars``."""
    paragraph: list[str] = []
    for line in body:
        if not line.strip() or _FENCE.match(line):
            if paragraph:
                break
            continue
        paragraph.append(line)
    text = " ".join(" ".join(paragraph).split())
    text = re.sub(r"\s*\{cite(?::\w+)?\}`[^`]*`", "", text)   # a citation needs the chapter's bibliography
    opening = ""
    for sentence in re.split(r"(?<=[.?!])\s+(?=[A-Z(`])", text):
        if len(opening) >= chars:
            break
        opening = f"{opening} {sentence}".strip()
    return opening


def chapter_exercises(source: Path) -> list[Exercise]:
    """The ``{exercise}`` (and gated ``{exercise-start}``) directives of a chapter's MyST source, in order."""
    return [Exercise(d.options.get("label", ""), d.argument, _opening(d.body))
            for d in directives(source.read_text()) if d.name in ("exercise", "exercise-start")]


def prerequisites(source: Path, root: Path | None = None) -> str | None:
    """The chapter's ``**Prerequisites:**`` text (MyST, near its top), its ``{doc}`` links made absolute so that they
    resolve from any page; ``None`` when the chapter states none."""
    m = re.search(r"\*\*Prerequisites:?\*\*:?\s*(.+?)(?=\s*\*\*[^*\n]+:\*\*|\n\s*\n|\Z)", source.read_text(), re.S)
    if not m:
        return None
    folder = source.parent.resolve().relative_to((root or repo_root()).resolve())

    def absolute(d: re.Match) -> str:
        title, target = d.group(1), d.group(2)
        if not target.startswith("/"):
            target = "/" + os.path.normpath((folder / target).as_posix())
        return f"{{doc}}`{title} <{target}>`" if title else f"{{doc}}`{target}`"

    text = " ".join(m.group(1).split()).rstrip(".")
    return re.sub(r"\{doc\}`(?:([^`<]*?)\s*<)?([^`<>]+)>?`", absolute, text)


def prerequisite_chapters(text: str | None, root: Path | None = None) -> list[str]:
    """The chapters a prerequisites text links to with ``{doc}``."""
    root = root or repo_root()
    docs = {"/" + s.relative_to(root).with_suffix("").as_posix(): n for n, s in chapters(root).items()}
    return [docs[t] for t in re.findall(r"\{doc\}`(?:[^`<]*<)?(/[^`<>]+)>?`", text or "") if t in docs]


def _parts(root: Path) -> dict[str, str]:
    """``_toc.yml`` file -> the caption of its part."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    return {c["file"]: part.get("caption", "") for part in toc.get("parts", []) for c in part.get("chapters", [])}


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def course_sessions(names: list[str], parts: dict[str, str], needs: dict[str, list[str]], n: int) -> list[list[str]]:
    """A plan of ``n`` sessions: one chapter a session in the book's order. Fewer sessions than chapters: two
    consecutive sessions of the same part share one, first where the second needs the first (its prerequisites),
    the later pair first; more sessions than chapters: the extra ones (empty lists) are project sessions at the end."""
    sessions = [[name] for name in names]
    while len(sessions) > n:
        pairs = [k for k in range(len(sessions) - 1) if len({parts.get(c) for c in sessions[k] + sessions[k + 1]}) == 1]
        pairs = pairs or list(range(len(sessions) - 1))
        k = max(pairs, key=lambda k: (any(p in sessions[k] for c in sessions[k + 1] for p in needs.get(c, [])), k))
        sessions[k:k + 2] = [sessions[k] + sessions[k + 1]]
    return sessions + [[] for _ in range(n - len(sessions))]


COURSE_SESSIONS = (6, 7, 8)
_GENERATED = re.compile(r"<!-- generated: (\w+) -->\n.*?<!-- end generated -->", re.S)


def course_sections(runs: dict[str, Path], root: Path | None = None) -> dict[str, str]:
    """The generated parts of the course page: ``chapters`` (order, part, prerequisites, run times, number of
    exercises), ``sessions`` (plans of 6 to 8 sessions) and ``exercises`` (each chapter's, with a link and its first
    sentence). ``runs`` maps a profile to the folder of its executed chapters, as for :func:`appendix_page`."""
    root = root or repo_root()
    sources = chapters(root)
    files = {n: s.relative_to(root).with_suffix("").as_posix() for n, s in sources.items()}
    toc_parts = _parts(root)
    parts = {n: toc_parts.get(files[n], "") for n in sources}
    prereq = {n: prerequisites(s, root) for n, s in sources.items()}
    needs = {n: prerequisite_chapters(prereq[n], root) for n in sources}
    exercises = {n: chapter_exercises(s) for n, s in sources.items()}
    doc = {n: f"{{doc}}`/{files[n]}`" for n in sources}

    def seconds(profile: str, n: str) -> float | None:
        return _meta(runs[profile], n).get("seconds") if profile in runs else None

    table = ["| # | part | chapter | prerequisites | `ci` | `book` | exercises |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for k, n in enumerate(sources, 1):
        table.append(f"| {k} | {_cell(parts[n])} | {doc[n]} | {_cell(prereq[n] or '–')} | {_minutes(seconds('ci', n))} "
                     f"| {_minutes(seconds('book', n))} | {len(exercises[n])} |")
    total = {p: [seconds(p, n) for n in sources] for p in ("ci", "book")}
    table += ["", "Total: " + ", ".join(
        f"`{p}` {_minutes(sum(t))}" if None not in t else f"`{p}` –" for p, t in total.items()) + "."]

    plans = {m: course_sessions(list(sources), parts, needs, m) for m in COURSE_SESSIONS}
    sessions = ["| session | " + " | ".join(f"{m} sessions" for m in COURSE_SESSIONS) + " |",
                "| --- |" + " --- |" * len(COURSE_SESSIONS)]
    for k in range(max(COURSE_SESSIONS)):
        cells = []
        for m in COURSE_SESSIONS:
            s = plans[m][k] if k < len(plans[m]) else None
            cells.append("–" if s is None else " + ".join(doc[n] for n in s) if s else "project")
        sessions.append(f"| {k + 1} | " + " | ".join(cells) + " |")

    listing = []
    for n in sources:
        listing += [f"### {doc[n]}", ""]
        for e in exercises[n]:
            link = f"{{ref}}`{e.label} <{e.label}>`" if e.label else "(no label)"
            listing.append(f"- {link}{f' ({e.title})' if e.title else ''}: {e.summary}")
        listing += [] if exercises[n] else ["No exercises yet."]
        listing.append("")
    return {"chapters": "\n".join(table), "sessions": "\n".join(sessions), "exercises": "\n".join(listing).rstrip()}


def course_page(runs: dict[str, Path], root: Path | None = None) -> str:
    """The course plan appendix: the page ``book/appendix/course.md`` of the repository (its prose is written by hand)
    with each ``<!-- generated: NAME -->`` ... ``<!-- end generated -->`` region filled in by :func:`course_sections`
    when the book is built, like the reproducibility appendix."""
    root = root or repo_root()
    text = (root / f"{COURSE}.md").read_text()
    sections = course_sections(runs, root)
    wanted = set(_GENERATED.findall(text))
    if wanted != set(sections):
        raise ValueError(f"{COURSE}.md: generated regions {sorted(wanted)}, expected {sorted(sections)}")
    return _GENERATED.sub(lambda m: f"<!-- generated: {m.group(1)} -->\n{sections[m.group(1)]}\n<!-- end generated -->", text)


def _words(text: str) -> str:
    """Text as lower-case words separated by single spaces: markup, punctuation and typography do not count."""
    return " ".join(re.findall(r"\w+", text.lower()))


def solution_fingerprints(root: Path | None = None) -> dict[str, list[str]]:
    """``chapter:exercise label`` -> up to two lines of each of its solutions, as lower-case words, that appear nowhere
    else in the chapter: if one of them shows in the student edition, the solution does."""
    root = root or repo_root()
    out: dict[str, list[str]] = {}
    for name, source in chapters(root).items():
        text = source.read_text()
        rest = f" {_words(strip_solutions(text)[0])} "
        blocks = directives(text)
        for d in blocks:
            if d.name not in ("solution", "solution-start"):
                continue
            gate_end = next((e.start for e in blocks if e.name == "solution-end" and e.start > d.end), None)
            body = d.body if d.name == "solution" else text.splitlines()[d.end + 1:gate_end]
            # lines of prose first, then lines with inline code or math (whose words the HTML keeps); never an
            # indented code line (the chapter's code has the same lines), a role, a link or HTML (rendered otherwise)
            lines = [line for line in body[:40] if not line.startswith(("    ", "\t"))
                     and not re.search(r"\{[\w:-]+\}`|\{\{|[<\[\]]", line)]
            candidates = sorted({(bool(re.search(r"[$`]", line)), _words(line)) for line in lines},
                                key=lambda c: (c[0], -len(c[1].split()), c[1]))
            prints = [w for _, w in candidates if len(w.split()) >= 6 and f" {w} " not in rest][:2]
            out.setdefault(f"{name}:{d.argument or d.options.get('label', '')}", []).extend(prints)
    return out


def leftover_solutions(text: str, fingerprints: dict[str, list[str]], *, markdown: bool = False) -> list[str]:
    """What of the solutions ``text`` shows: on an HTML page a ``solution`` admonition, in a page's Markdown source
    (``markdown``) a ``{solution}`` directive, and in both a line of a solution (``fingerprints``, see
    :func:`solution_fingerprints`)."""
    found = []
    if not markdown and re.search(r"""class=["'](?:[^"']*\s)?solution[\s"'-]""", text):
        found.append("a solution admonition")
    if markdown and any(d.name in ("solution", "solution-start") for d in directives(text)):
        found.append("a {solution} directive")
    words = f" {_words(_html.unescape(re.sub(r'<[^>]+>', ' ', text)))} "
    for label, prints in fingerprints.items():
        if any(f" {w} " in words for w in prints):
            found.append(f"the text of the solution {label}")
    return found


def check_student_html(html_dir: Path, root: Path | None = None) -> list[str]:
    """Problems of a student edition: any page, page source or notebook download that shows a solution."""
    fingerprints = solution_fingerprints(root)
    problems = []
    for path in sorted(p for p in html_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(html_dir)
        is_source = "_sources" in rel.parts or path.suffix == ".ipynb"
        if not (path.suffix == ".html" or is_source) or "_static" in rel.parts or path.name in ("search.html", "genindex.html"):
            continue
        text = path.read_text(errors="replace")
        if is_source:
            try:   # a notebook: its Markdown
                text = "\n\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                                   for c in json.loads(text)["cells"] if c.get("cell_type") == "markdown")
            except (ValueError, KeyError, TypeError):
                pass
        problems += [f"{rel}: shows {what} (student edition)"
                     for what in leftover_solutions(text, fingerprints, markdown=is_source)]
    return problems


def edition_paths(profile: str, edition: str, out: Path | None = None) -> tuple[Path, Path]:
    """``(out, runs)`` of a build: the full edition builds into ``_build/<profile>`` and keeps its runs there; the
    student edition builds into ``_build/<profile>-student`` from the runs of the full edition of the same profile
    (``_build/<profile>/runs``: the same cache, so it runs nothing that ``make book`` would not)."""
    if edition not in EDITIONS:
        raise ValueError(f"unknown edition {edition!r}; one of {', '.join(EDITIONS)}")
    root = repo_root()
    if edition == "full":
        out = (out or root / "_build" / profile).resolve()
        return out, out / "runs"
    return (out or root / "_build" / f"{profile}-{edition}").resolve(), (root / "_build" / profile / "runs").resolve()
