"""Reader notebooks: each chapter as a plain Jupyter notebook that runs where it opens (Colab, Binder, a laptop).

A chapter's MyST source reads well only in the built book: elsewhere its glue roles, citations,
cross-references, directives and the MathJax macros of ``_config.yml`` show as raw text or as math errors.
:func:`reader_notebook` turns a chapter into a notebook of plain Jupyter Markdown around the chapter's code
cells, which stay byte-identical:

* the first code cell installs the companion with ``%pip`` (from the repository, at the branch of the reader
  notebooks) only where ``import companion`` fails, as in Colab; in a clone or on Binder it does nothing;
* a glued value (``{glue:text}``) is the text of the chapter's last run in the ``book`` profile when that run
  is current (:func:`glue_values`), else a placeholder (:data:`PLACEHOLDER`);
* citations become "(Author, Year)" and the bibliography a list of the cited references; cross-references
  become plain text (the notebook's own figure, exercise and theorem numbers, another chapter's title), or
  links to the online page when ``html.baseurl`` is set in ``_config.yml``;
* admonitions become blockquotes with a bold title, an exercise a bold "Exercise" heading, a solution an HTML
  ``<details>`` block (collapsed), theorems and proofs blockquotes with a bold title;
* the macros of ``sphinx.config.mathjax3_config`` are expanded (:func:`expand_macros`), which works in
  Jupyter, Colab and VS Code alike;
* the ``parameters`` cell keeps its tag, so papermill can run the notebook; code cells keep their MyST-NB
  metadata, and each figure's caption follows its cell as a Markdown cell.

Launch buttons (:func:`launch_config`, :func:`launch_urls`): the book's Colab and Binder buttons open the
reader notebook of the page, published next to its source (``book/<part>/<chapter>.ipynb``) on the branch
``repository.notebooks_branch`` of ``_config.yml``; :func:`commit_to_branch` makes that branch's commit
(the current commit's tree plus the notebooks) for CI to push. The download button of a chapter's page offers
its reader notebook (:func:`publish_downloads`); :func:`check_published` verifies both on a built book.
"""
from __future__ import annotations

import ast
import copy
import html as _html
import json
import os
import re
import subprocess
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .regression import chapters, current_records, repo_root

# The distribution name of the companion (pyproject.toml), the one pip installs.
DISTRIBUTION = "robust-imaging-companion"
# The extra of pyproject.toml with what the chapters import besides the companion's own dependencies.
READER_EXTRA = "reader"
# The branch that holds the reader notebooks when _config.yml names none (repository.notebooks_branch).
DEFAULT_BRANCH = "notebooks"
# What a glued value reads as when no current run of the chapter recorded it.
PLACEHOLDER = "*(value computed when you run the notebook)*"
# The first line of the install cell, by which tests and checks recognise it.
INSTALL_MARKER = "# Installs the book's companion package only where it is missing (Colab, a fresh environment)."
# Admonition directives and the title each shows without an argument.
ADMONITIONS = {"note": "Note", "tip": "Tip", "hint": "Hint", "important": "Important", "warning": "Warning",
               "caution": "Caution", "attention": "Attention", "danger": "Danger", "error": "Error",
               "seealso": "See also", "admonition": "Note", "margin": "Note", "sidebar": "Note", "topic": "Topic",
               "epigraph": "", "dropdown": "Details", "toggle": "Details"}


# --------------------------------------------------------------------------------------------------- config

def book_config(root: Path | None = None) -> dict:
    """The book's ``_config.yml``."""
    return yaml.safe_load(((root or repo_root()) / "_config.yml").read_text()) or {}


def notebooks_branch(config: dict) -> str:
    """The branch on which the reader notebooks are published (``repository.notebooks_branch``)."""
    return (config.get("repository") or {}).get("notebooks_branch") or DEFAULT_BRANCH


def _github(config: dict) -> tuple[str, str, str]:
    """``(url, owner, name)`` of the book's repository (``repository.url``, a GitHub URL)."""
    url = str((config.get("repository") or {}).get("url") or "").rstrip("/")
    if url.endswith(".git"):
        url = url[:-4]
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", url)
    if not match:
        raise ValueError(f"repository.url of _config.yml must be a GitHub repository URL, not {url!r}")
    return url, match.group(1), match.group(2)


def install_requirement(config: dict) -> str:
    """What the install cell gives to pip: the companion with the reader extra, from the repository's git URL at
    the branch of the reader notebooks (so that the package matches the notebook)."""
    url = _github(config)[0]
    return f"{DISTRIBUTION}[{READER_EXTRA}] @ git+{url}@{notebooks_branch(config)}"


def published_path(source: Path, root: Path | None = None) -> str:
    """Where a chapter's reader notebook lies on the notebooks branch: next to its source, relative to the
    repository's root (``book/foundations/attacks.ipynb``)."""
    return Path(source).resolve().relative_to((root or repo_root()).resolve()).with_suffix(".ipynb").as_posix()


def launch_config(config: dict) -> dict:
    """``config`` for the staged book: the launch buttons open the reader notebooks.

    sphinx-book-theme builds a Colab or Binder URL from ``repository.url``, ``repository.branch``,
    ``repository.path_to_book`` and the page's name with the suffix ``.ipynb`` (the staged chapter pages are
    notebooks). The branch becomes the notebooks branch, and a ``path_to_book`` of ``.`` becomes empty (the
    theme would put ``./`` into the URLs). Nothing else uses the branch: the book shows no edit or source button.
    """
    config = copy.deepcopy(config)
    repo = config.get("repository")
    if not repo:
        return config
    repo["branch"] = notebooks_branch(config)
    path = str(repo.get("path_to_book") or "").strip().strip("/")
    repo["path_to_book"] = "" if path in ("", ".") else path
    repo.pop("notebooks_branch", None)   # not a Jupyter Book key
    return config


def launch_urls(config: dict, path: str) -> dict[str, str]:
    """The Colab and Binder URLs that open the reader notebook at ``path`` (:func:`published_path`), as
    sphinx-book-theme writes them for the staged config (:func:`launch_config`)."""
    _, owner, name = _github(config)
    branch = notebooks_branch(config)
    buttons = config.get("launch_buttons") or {}
    ui = {"classic": "tree", "jupyterlab": "lab/tree"}[buttons.get("notebook_interface", "classic")]
    urls = {}
    if buttons.get("colab_url"):
        urls["colab"] = f"{buttons['colab_url'].strip('/')}/github/{owner}/{name}/blob/{branch}/{path}"
    if buttons.get("binderhub_url"):
        urls["binder"] = f"{buttons['binderhub_url'].strip('/')}/v2/gh/{owner}/{name}/{branch}?urlpath={ui}/{path}"
    return urls


def mathjax_macros(config: dict) -> dict[str, tuple[str, int]]:
    """Name -> ``(body, number of arguments)`` of the MathJax macros of ``_config.yml`` (MathJax 3, or 2)."""
    sphinx = (config.get("sphinx") or {}).get("config") or {}
    macros = (((sphinx.get("mathjax3_config") or {}).get("tex") or {}).get("macros")
              or ((sphinx.get("mathjax_config") or {}).get("TeX") or {}).get("Macros") or {})
    out = {}
    for name, value in macros.items():
        if isinstance(value, (list, tuple)):
            out[name] = (str(value[0]), int(value[1]) if len(value) > 1 else 0)
        else:
            out[name] = (str(value), 0)
    return out


# --------------------------------------------------------------------------------------------------- math

def _group(text: str, i: int) -> tuple[str, int] | None:
    """The TeX argument at ``text[i:]`` (spaces skipped): a braced group's content or one token; and the end."""
    while i < len(text) and text[i] in " \t\n":
        i += 1
    if i >= len(text):
        return None
    if text[i] == "{":
        try:
            return _braced(text, i)
        except ValueError:
            return None
    if text[i] == "\\":
        match = re.compile(r"\\(?:[A-Za-z]+|.)").match(text, i)
        return match.group(0), match.end()
    return text[i], i + 1


def expand_macros(text: str, macros: dict[str, tuple[str, int]]) -> str:
    """``text`` with every use of a macro replaced by its body, arguments substituted (``\\norm{x}``).

    A macro name matches as a whole control word (``\\R`` but not ``\\Rightarrow``); an argument is a braced
    group (nested braces allowed) or a single token. Bodies that use other macros are expanded too.
    """
    if not macros:
        return text
    names = "|".join(re.escape(n) for n in sorted(macros, key=len, reverse=True))
    pattern = re.compile(rf"\\({names})(?![A-Za-z])")
    for _ in range(10):   # macros in bodies of macros
        out, pos, changed = [], 0, False
        for match in pattern.finditer(text):
            if match.start() < pos:
                continue
            body, nargs = macros[match.group(1)]
            end, args = match.end(), []
            for _ in range(nargs):
                arg = _group(text, end)
                if arg is None:
                    break
                args.append(arg[0])
                end = arg[1]
            if len(args) < nargs:
                continue
            for k, arg in enumerate(args, start=1):
                body = body.replace(f"#{k}", arg)
            out += [text[pos:match.start()], body]
            pos, changed = end, True
        text = "".join(out) + text[pos:]
        if not changed:
            break
    return text


def _collapse_math(text: str) -> str:
    """Display math on one line, so that it survives a blockquote's ``>`` prefixes."""
    def join(match: re.Match) -> str:
        inner = match.group(0)
        return inner if re.search(r"(?<!\\)%", inner) else re.sub(r"\s*\n\s*", " ", inner)

    text = re.sub(r"\$\$.+?\$\$", join, text, flags=re.S)
    return re.sub(r"\\begin\{([A-Za-z*]+)\}.+?\\end\{\1\}", join, text, flags=re.S)


# --------------------------------------------------------------------------------------------------- glue

def glue_values(runs: Path | None, name: str, profile: str = "book") -> dict[str, str]:
    """The ``text/plain`` of every value the chapter's last run in ``runs`` glued, if that run is current.

    Current: it ran today's code (:func:`companion.regression.current_records`). The records file holds the
    values of ``record``; the executed notebook's outputs hold every glued value (MyST-NB's ``glue`` stores it
    as a display output with ``scrapbook`` metadata and MIME types under its prefix). Empty otherwise.
    """
    if runs is None:
        return {}
    runs = Path(runs)
    try:
        records = current_records(runs, name, profile)
    except (OSError, ValueError, KeyError):
        return {}
    if records is None:
        return {}
    values = {k: repr(float(v)) for k, v in records.items()}
    try:
        executed = json.loads((runs / f"{name}.ipynb").read_text())
    except (OSError, ValueError):
        return values
    for cell in executed.get("cells", []):
        for output in cell.get("outputs", []):
            meta = (output.get("metadata") or {}).get("scrapbook")
            if not meta or "name" not in meta:
                continue
            text = (output.get("data") or {}).get(meta.get("mime_prefix", "") + "text/plain")
            if text is not None:
                values[meta["name"]] = "".join(text) if isinstance(text, list) else text
    return values


def format_glue(text: str, spec: str) -> str:
    """A glued ``text/plain`` formatted as MyST-NB's ``glue:text`` role does (``key:.3f``)."""
    try:
        value: Any = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if spec == "":
        return str(value)
    kind = spec[-1]
    if kind == "s":
        value = str(value)
    elif kind in "bcdoxX":
        value = int(value)
    elif kind in "eEfFgGn%":
        value = float(value)
    return format(value, spec)


# --------------------------------------------------------------------------------------------------- bibtex

_ACCENTS = {'"': "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303", "=": "\u0304",
            ".": "\u0307", "c": "\u0327", "v": "\u030c", "u": "\u0306", "H": "\u030b", "k": "\u0328"}
_LETTERS = {"ss": "ß", "o": "ø", "O": "Ø", "ae": "æ", "AE": "Æ", "aa": "å", "AA": "Å", "l": "ł", "L": "Ł",
            "i": "ı", "oe": "œ", "OE": "Œ"}


def latex_text(text: str) -> str:
    """Plain Unicode text of a BibTeX field: accents, special letters, dashes and braces."""
    text = re.sub(r"\\([\"'`^~=.])\s*\{?\s*\\?([A-Za-z])\s*\}?", lambda m: m.group(2) + _ACCENTS[m.group(1)], text)
    text = re.sub(r"\\([cvuHk])\s*\{\s*([A-Za-z])\s*\}", lambda m: m.group(2) + _ACCENTS[m.group(1)], text)
    text = re.sub(r"\\(ss|ae|AE|aa|AA|oe|OE|o|O|l|L|i)(?![A-Za-z])\s*", lambda m: _LETTERS[m.group(1)], text)
    text = re.sub(r"\\([&%$#_{}])", r"\1", text)
    text = text.replace("---", "—").replace("--", "–").replace("~", " ")
    text = re.sub(r"\\[A-Za-z]+\s*", "", text).replace("{", "").replace("}", "")
    return unicodedata.normalize("NFC", re.sub(r"\s+", " ", text).strip())


def _braced(text: str, i: int) -> tuple[str, int]:
    """The content of the braced group opening at ``text[i]`` and the index after it (``\\{`` is no brace)."""
    depth = 0
    for j in range(i, len(text)):
        escaped = j > 0 and text[j - 1] == "\\"
        if text[j] == "{" and not escaped:
            depth += 1
        elif text[j] == "}" and not escaped:
            depth -= 1
            if depth == 0:
                return text[i + 1:j], j + 1
    raise ValueError(f"unbalanced braces: {text[i:i + 60]!r}")


def read_bibliography(path: Path) -> dict[str, dict[str, str]]:
    """Key -> fields (raw BibTeX values, braces kept) of every entry of a BibTeX file; ``type`` is the entry type."""
    text = Path(path).read_text()
    entries: dict[str, dict[str, str]] = {}
    for match in re.finditer(r"@([A-Za-z]+)\s*\{\s*([^,\s]+)\s*,", text):
        kind = match.group(1).lower()
        if kind in ("comment", "string", "preamble"):
            continue
        body, _ = _braced(text, text.index("{", match.start()))
        fields: dict[str, str] = {"type": kind}
        pos = body.index(",") + 1   # after the key
        field_re = re.compile(r"\s*,?\s*([A-Za-z][\w-]*)\s*=\s*")
        while True:
            m = field_re.match(body, pos)
            if not m:
                break
            name, pos = m.group(1).lower(), m.end()
            if pos < len(body) and body[pos] == "{":
                value, pos = _braced(body, pos)
            elif pos < len(body) and body[pos] == '"':
                end = body.index('"', pos + 1)
                value, pos = body[pos + 1:end], end + 1
            else:
                m2 = re.compile(r"[^,}\s]+").match(body, pos)
                if not m2:
                    break
                value, pos = m2.group(0), m2.end()
            fields[name] = value
        entries[match.group(2)] = fields
    return entries


def _names(field: str) -> list[tuple[str, str]]:
    """``(first, last)`` of each name of a BibTeX author field (``others`` kept as the last name)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(field):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0 and field[i:i + 5].lower() == " and " and i >= start:
            parts.append(field[start:i])
            start = i + 5
    parts.append(field[start:])
    names = []
    for part in (p.strip() for p in parts if p.strip()):
        if "," in part:
            last, first = part.split(",", 1)
        elif part.startswith("{") and part.endswith("}"):
            last, first = part, ""
        else:
            words = part.split()
            last, first = words[-1], " ".join(words[:-1])
        names.append((latex_text(first), latex_text(last)))
    return names


def cite_label(entry: dict[str, str]) -> str:
    """"Goodfellow et al., 2015", "Carlini and Wagner, 2017" (author and year, as the book's citations)."""
    names = _names(entry.get("author") or entry.get("editor") or "")
    lasts = [last for _, last in names]
    if not lasts:
        who = latex_text(entry.get("title", "?"))
    elif len(lasts) == 1:
        who = lasts[0]
    elif len(lasts) == 2 and lasts[1] != "others":
        who = f"{lasts[0]} and {lasts[1]}"
    else:
        who = f"{lasts[0]} et al."
    return f"{who}, {latex_text(entry.get('year', 'n.d.'))}"


def reference_text(entry: dict[str, str]) -> str:
    """One entry of a references list in Markdown: authors, title, venue, year and a link when there is one."""
    names = [" ".join(p for p in (first, last) if p) for first, last in _names(entry.get("author") or entry.get("editor") or "")]
    names = ["others" if n == "others" else n for n in names]
    if names and names[-1] == "others":
        authors = ", ".join(names[:-1]) + " et al."
    elif len(names) > 2:
        authors = ", ".join(names[:-1]) + ", and " + names[-1]
    else:
        authors = " and ".join(names)
    parts = [f"{authors}." if authors else "", f"{latex_text(entry.get('title', ''))}."]
    venue = latex_text(entry.get("journal") or entry.get("booktitle") or entry.get("howpublished") or "")
    details = []
    if venue:
        details.append(("In " if entry.get("booktitle") and not entry.get("journal") else "") + f"*{venue}*")
    if entry.get("volume"):
        details.append(latex_text(entry["volume"]) + (f"({latex_text(entry['number'])})" if entry.get("number") else ""))
    if entry.get("pages"):
        details.append(latex_text(entry["pages"]))
    for key in ("publisher", "school", "institution"):
        if entry.get(key):
            details.append(latex_text(entry[key]))
    if entry.get("eprint"):
        details.append(f"arXiv:{latex_text(entry['eprint'])}")
    details.append(latex_text(entry.get("year", "n.d.")))
    parts.append(", ".join(details) + ".")
    if entry.get("doi"):
        doi = latex_text(entry["doi"])
        parts.append(f"[doi:{doi}](https://doi.org/{doi})")
    elif entry.get("url"):
        parts.append(f"<{latex_text(entry['url'])}>")
    return " ".join(p for p in parts if p)


# --------------------------------------------------------------------------------------------------- MyST

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>.*)$")
_ROLE = r"\{(?P<role>[A-Za-z][\w:+.-]*)\}(?P<ticks>`+)(?P<content>.+?)(?P=ticks)"
_CODE = r"(?P<cticks>`+)(?P<code>.+?)(?P=cticks)"
_INLINE = re.compile(f"{_ROLE}|{_CODE}", re.S)
_TARGET = re.compile(r"^\s*\((?P<label>[^()\s]+)\)=\s*$")
_PRF_NUMBERED_APART = ("proof",)


@dataclass
class Target:
    """A target of cross-references in a reader notebook: a figure, exercise, theorem, equation or section."""

    kind: str           # "figure", "exercise", "theorem", ..., "section"
    number: int | None  # its number in the notebook (None: a section)
    title: str = ""

    @property
    def text(self) -> str:
        """How a reference without a text of its own shows it: "Fig. 2", "Exercise 1", a section's title."""
        if self.kind == "section" or self.number is None:
            return self.title or self.kind.capitalize()
        name = "Fig." if self.kind == "figure" else self.kind.capitalize()
        return f"{name} {self.number}"


@dataclass
class MarkdownContext:
    """What converting one chapter's Markdown needs (macros, bibliography, glued values) and collects (targets,
    counters, the cited keys in order, the number of glued values left as placeholders)."""

    source: Path
    root: Path
    macros: dict[str, tuple[str, int]]
    bibliography: dict[str, dict[str, str]]
    glue: dict[str, str]
    baseurl: str | None = None
    keyprefix: str = ""
    labels: dict[str, Target] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    cited: list[str] = field(default_factory=list)
    unresolved_glue: int = 0

    @property
    def docname(self) -> str:
        """The chapter's page name (``book/foundations/attacks``)."""
        return self.source.relative_to(self.root).with_suffix("").as_posix()

    def count(self, kind: str) -> int:
        """The next number of a ``kind`` of target (``exercise``, ``theorem``, ...)."""
        self.counters[kind] = self.counters.get(kind, 0) + 1
        return self.counters[kind]

    def online(self, docname: str, anchor: str | None = None) -> str | None:
        """The URL of a page of the online book (``html.baseurl`` of ``_config.yml``), or ``None`` without one."""
        if not self.baseurl:
            return None
        return f"{self.baseurl.rstrip('/')}/{docname}.html" + (f"#{anchor}" if anchor else "")


def _split_target(content: str) -> tuple[str | None, str]:
    """``("text", "target")`` of ``text <target>``; ``(None, content)`` without an explicit text."""
    match = re.fullmatch(r"(?s)(.*?)\s*<([^<>]+)>\s*", content)
    if match and match.group(1).strip():
        return match.group(1).strip(), match.group(2).strip()
    return None, content.strip()


def _doc_title(path: Path) -> str:
    """The first level-1 heading of a MyST page (its file name when it has none)."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    except OSError:
        pass
    return path.stem.replace("_", " ")


def _resolve_cite(key: str, ch: MarkdownContext) -> str:
    if key in ch.bibliography:
        return key
    if ch.keyprefix and key.startswith(ch.keyprefix) and key[len(ch.keyprefix):] in ch.bibliography:
        return key[len(ch.keyprefix):]
    raise ValueError(f"{ch.source}: no entry {key!r} in the bibliography")


def _role(role: str, content: str, ch: MarkdownContext) -> str:
    """Plain Markdown for one MyST role."""
    if role.startswith("glue"):
        key, spec = content, ""
        if role == "glue:text" and ":" in content:
            key, spec = content.rsplit(":", 1)
        key = key.strip()
        if "::" in key or key not in ch.glue:
            ch.unresolved_glue += 1
            return PLACEHOLDER
        text = ch.glue[key]
        return format_glue(text, spec) if role == "glue:text" else format_glue(text, "")
    if role.startswith("cite"):
        keys = [_resolve_cite(k.strip(), ch) for k in content.split(",") if k.strip()]
        for k in keys:
            if k not in ch.cited:
                ch.cited.append(k)
        labels = [cite_label(ch.bibliography[k]) for k in keys]
        style = role.split(":", 1)[1] if ":" in role else "p"
        if style.startswith("t"):
            return "; ".join(re.sub(r"^(.*), (\S+)$", r"\1 (\2)", lab) for lab in labels)
        if style == "author":
            return "; ".join(lab.rsplit(", ", 1)[0] for lab in labels)
        if style == "year":
            return "; ".join(lab.rsplit(", ", 1)[1] for lab in labels)
        return "(" + "; ".join(labels) + ")"
    if role == "doc":
        text, target = _split_target(content)
        base = ch.root if target.startswith("/") else ch.source.parent
        path = (base / target.lstrip("/")).with_suffix(".md")
        title = text or _doc_title(path)
        try:
            docname = path.resolve().relative_to(ch.root.resolve()).with_suffix("").as_posix()
        except ValueError:
            docname = None
        url = ch.online(docname) if docname else None
        return f"[{title}]({url})" if url else f"*{title}*"
    if role in ("numref", "ref", "prf:ref", "eq", "numref:numref"):
        text, label = _split_target(content)
        known = ch.labels.get(label)
        if known is None:
            shown = text or label
        elif role == "numref" and text:
            number = "" if known.number is None else str(known.number)
            shown = text.replace("%s", number).replace("{number}", number).replace("{name}", known.title)
        elif role == "eq":
            shown = f"({known.number})" if known.number is not None else label
        else:
            shown = text or known.text
        url = ch.online(ch.docname, label)
        return f"[{shown}]({url})" if url else shown
    if role == "math":
        return f"${content}$"
    if role in ("sub", "sup", "kbd"):
        return f"<{role}>{content}</{role}>"
    if role == "abbr":
        return re.sub(r"\s*\([^()]*\)\s*$", "", content)
    text, _ = _split_target(content)
    return text or content


def _inline(text: str, ch: MarkdownContext) -> str:
    """Roles converted, macros expanded; code spans left alone."""
    out, pos = [], 0
    for match in _INLINE.finditer(text):
        out.append(expand_macros(text[pos:match.start()], ch.macros))
        if match.group("role"):
            content = match.group("content")
            if match.group("role") == "math":
                content = expand_macros(content, ch.macros)
            out.append(_role(match.group("role"), content, ch))
        else:
            out.append(match.group(0))
        pos = match.end()
    out.append(expand_macros(text[pos:], ch.macros))
    return "".join(out)


def directive_options(lines: list[str]) -> tuple[dict[str, str], int]:
    """A MyST directive's options, read from the start of its body (``:key: value`` lines or a ``---`` YAML block),
    and the index of the first body line after them. The one reader of options for the reader notebooks and for
    :func:`companion.bookbuild.directives`."""
    options: dict[str, str] = {}
    i = 0
    if lines and lines[0].strip() == "---":
        end = next((j for j in range(1, len(lines)) if lines[j].strip() == "---"), None)
        if end is not None:
            options = {str(k): str(v) for k, v in (yaml.safe_load("\n".join(lines[1:end])) or {}).items()}
            i = end + 1
    else:
        while i < len(lines):
            match = re.match(r"^\s*:([\w-]+):\s*(.*)$", lines[i])
            if not match:
                break
            options[match.group(1)] = match.group(2).strip()
            i += 1
    return options, i


def _quote(lines: list[str]) -> list[str]:
    text = _collapse_math("\n".join(lines))
    return [f"> {line}" if line.strip() else ">" for line in text.split("\n")]


def _details(summary: str, body: list[str]) -> list[str]:
    return ["<details>", f"<summary>{summary}</summary>", "", *body, "", "</details>"]


def _references(ch: MarkdownContext) -> list[str]:
    keys = sorted(ch.cited, key=lambda k: (cite_label(ch.bibliography[k]).lower(), k))
    return [f"- {reference_text(ch.bibliography[k])}" for k in keys]


def _directive(name: str, argument: str, body: list[str], ch: MarkdownContext) -> list[str]:
    """Plain Markdown lines for one MyST directive."""
    options, start = directive_options(body)
    body = body[start:]
    body = body[next((i for i, line in enumerate(body) if line.strip()), len(body)):]
    classes = options.get("class", "").split()
    label = options.get("label") or options.get("name")
    if name == "bibliography":
        ch.keyprefix = options.get("keyprefix", ch.keyprefix)
        return _references(ch)
    if name == "exercise":
        number = ch.count("exercise")
        if label:
            ch.labels[label] = Target("exercise", number, argument)
        title = f"**Exercise {number}" + (f" ({_inline(argument, ch)})" if argument else "") + "**"
        return [title, "", *_convert(body, ch)]
    if name == "solution":
        return _details("Solution", _convert(body, ch))
    if name.startswith("prf:"):
        kind = name.split(":", 1)[1]
        title = kind.capitalize()
        if kind not in _PRF_NUMBERED_APART:
            number = ch.count(kind)
            if label:
                ch.labels[label] = Target(kind, number, argument)
            title = f"{title} {number}"
        if argument:
            title += f" ({_inline(argument, ch)})"
        inner = _convert(body, ch)
        if kind == "proof":
            inner += ["", "∎"]
        return _quote([f"**{title}.**", "", *inner])
    if name == "math":
        if label:
            ch.labels[label] = Target("equation", ch.count("equation"))
        return ["$$", *(expand_macros(line, ch.macros) for line in ([argument] if argument else []) + body), "$$"]
    if name in ("code-block", "code", "sourcecode"):
        return [f"```{argument}", *body, "```"]
    if name in ("figure", "image"):
        alt = options.get("alt", "")
        caption = _convert(body, ch) if name == "figure" else []
        if label:
            ch.labels[label] = Target("figure", ch.count("figure"), " ".join(caption))
        return [f"![{alt}]({argument})", *([""] + caption if caption else [])]
    if name.startswith("glue"):
        return [PLACEHOLDER]
    if name in ("raw",):
        return body if argument.strip() == "html" else []
    title = ADMONITIONS.get(name, name.replace("-", " ").capitalize())
    if argument:
        title = _inline(argument, ch) if name in ("admonition", "dropdown", "toggle", "margin", "sidebar", "topic") \
            else f"{title}: {_inline(argument, ch)}"
    inner = _convert(body, ch)
    if "dropdown" in classes or name in ("dropdown", "toggle"):
        return _details(title, inner)
    return _quote(([f"**{title}**", ""] if title else []) + inner)


def _convert(lines: list[str], ch: MarkdownContext) -> list[str]:
    """Plain Jupyter Markdown for MyST Markdown lines: directives, targets, comments, roles and macros."""
    out: list[str] = []
    text: list[str] = []

    def flush() -> None:
        if text:
            out.extend(_inline("\n".join(text), ch).split("\n"))
            text.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence and not (fence.group("fence")[0] == ":" and not fence.group("info").lstrip().startswith("{")):
            flush()
            char, length, indent = fence.group("fence")[0], len(fence.group("fence")), fence.group("indent")
            closing = re.compile(rf"^\s*{re.escape(char)}{{{length},}}\s*$")
            end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), len(lines))
            body = [b[len(indent):] if b.startswith(indent) else b.lstrip() for b in lines[i + 1:end]]
            info = fence.group("info").strip()
            directive = re.match(r"^\{([^}]+)\}\s*(.*)$", info)
            if directive:
                converted = _directive(directive.group(1).strip(), directive.group(2).strip(), body, ch)
                out.extend(indent + c if c else c for c in converted)
            else:
                out.extend(lines[i:end + 1])   # a code block: verbatim
            i = end + 1
            continue
        target = _TARGET.match(line)
        if target:
            flush()
            heading = next((lines[j] for j in range(i + 1, len(lines)) if lines[j].strip()), "")
            ch.labels.setdefault(target.group("label"), Target("section", None, heading.lstrip("#").strip()))
            i += 1
            continue
        if re.match(r"^%(?!%)", line):   # a MyST comment
            i += 1
            continue
        text.append(line)
        i += 1
    flush()
    return out


def convert_markdown(text: str, ch: MarkdownContext) -> str:
    """One Markdown cell of a chapter in plain Jupyter Markdown."""
    return "\n".join(_convert(text.split("\n"), ch))


# --------------------------------------------------------------------------------------------------- notebook

def install_cell_source(config: dict) -> str:
    """The first code cell of a reader notebook: install the companion if, and only if, it does not import."""
    url = _github(config)[0]
    return "\n".join([
        INSTALL_MARKER,
        "# Where it imports (a clone after `pip install .`, Binder), nothing is installed.",
        "try:",
        "    import companion",
        "except ImportError:",
        f"    # from the book's intended home, {url} (repository.url of its _config.yml),",
        f"    # at the branch that holds these notebooks ({notebooks_branch(config)}), so that the package matches them",
        f"    %pip install --quiet \"{install_requirement(config)}\"",
        "    import importlib",
        "",
        "    importlib.invalidate_caches()",
        "    import companion",
    ])


def _cell(kind: str, source: str, index: int, metadata: dict | None = None) -> dict:
    cell: dict[str, Any] = {"cell_type": kind, "id": f"cell-{index}", "metadata": metadata or {}, "source": source}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def reader_notebook(name: str, *, runs: Path | None = None, profile: str = "book", root: Path | None = None) -> dict:
    """The reader notebook of chapter ``name`` (nbformat 4.5 as a dict; see the module's docstring).

    ``runs``: a folder of executed chapters (``_build/book/runs``) whose current run of ``name`` in ``profile``
    supplies the glued values; ``None`` or no current run: every glued value is a placeholder.
    """
    import jupytext

    root = root or repo_root()
    source = chapters(root)[name]
    config = book_config(root)
    ch = MarkdownContext(source=source, root=root, macros=mathjax_macros(config),
                  bibliography=read_bibliography(root / ((config.get("bibtex_bibfiles") or ["book/references.bib"])[0])),
                  glue=glue_values(runs, name, profile), baseurl=(config.get("html") or {}).get("baseurl"))
    nb = jupytext.read(source)
    for line in "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").splitlines():
        match = re.match(r"^\s*:keyprefix:\s*(\S+)", line)
        if match:
            ch.keyprefix = match.group(1)
    figures = 0
    for cell in nb.cells:
        figure = (cell.metadata.get("mystnb") or {}).get("figure") or {} if cell.cell_type == "code" else {}
        if figure.get("caption"):
            figures += 1
            if figure.get("name"):
                ch.labels[figure["name"]] = Target("figure", figures, figure["caption"])

    def convert_all() -> list[tuple[str, str, dict]]:
        ch.counters, ch.cited, ch.unresolved_glue = {}, [], 0
        cells, figure = [], 0
        for cell in nb.cells:
            if cell.cell_type == "code":
                metadata = json.loads(json.dumps(cell.metadata))
                cells.append(("code", cell.source, metadata))
                caption = ((metadata.get("mystnb") or {}).get("figure") or {}).get("caption")
                if caption:
                    figure += 1
                    cells.append(("markdown", f"**Fig. {figure}.** {_inline(caption, ch)}", {}))
            elif cell.cell_type == "markdown":
                cells.append(("markdown", convert_markdown(cell.source, ch), json.loads(json.dumps(cell.metadata))))
            else:
                cells.append((cell.cell_type, cell.source, json.loads(json.dumps(cell.metadata))))
        return cells

    convert_all()              # a first pass finds every label, so that references may come before their targets
    converted = convert_all()
    has_bibliography = any(re.search(r"(?m)^\s*(`{3,}|:{3,})\{bibliography\}", c.source) for c in nb.cells
                           if c.cell_type == "markdown")
    if ch.cited and not has_bibliography:
        converted.append(("markdown", "\n".join(["## References", "", *_references(ch)]), {}))
    title = _doc_title(source)
    values = ("The numbers quoted in the text are those of the book's own run of this chapter "
              f"(profile `{profile}`); yours, which the cells print as they run, may differ slightly."
              if not ch.unresolved_glue else
              "Numbers the book's page quotes from its own run read here as "
              f"{PLACEHOLDER}: the cells print them as they run.")
    note = (f"> This is the chapter *{title}* of the book *{config.get('title', '')}* as a plain Jupyter notebook "
            f"(from `{source.relative_to(root).as_posix()}`). The next cell installs the book's companion package "
            "where it is missing, as on Colab; in a clone of the repository or on Binder it does nothing. "
            f"{values}")
    first_code = next((i for i, (kind, _, _) in enumerate(converted) if kind == "code"), len(converted))
    converted[first_code:first_code] = [("markdown", note, {}), ("code", install_cell_source(config), {})]
    cells = [_cell(kind, src, i, meta) for i, (kind, src, meta) in enumerate(converted)]
    metadata = {k: v for k, v in json.loads(json.dumps(nb.metadata)).items() if k != "jupytext"}
    metadata.setdefault("language_info", {"name": "python"})
    return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


def notebook_bytes(nb: dict) -> bytes:
    """A notebook as nbformat writes it (one-space indent, a final newline), the same bytes for the same input."""
    return (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode()


def notebook_paths(root: Path | None = None) -> dict[str, str]:
    """Chapter name -> the reader notebook's path below an output folder: ``<part>/<chapter>.ipynb``."""
    root = root or repo_root()
    out = {}
    for name, source in chapters(root).items():
        rel = source.relative_to(root)
        rel = rel.relative_to("book") if rel.parts[0] == "book" else rel
        out[name] = rel.with_suffix(".ipynb").as_posix()
    return out


def write_notebooks(out: Path, *, runs: Path | None = None, profile: str = "book", root: Path | None = None,
                    log=print) -> list[Path]:
    """Write every chapter's reader notebook to ``out/<part>/<chapter>.ipynb``; return the paths."""
    root = root or repo_root()
    written = []
    for name, rel in notebook_paths(root).items():
        nb = reader_notebook(name, runs=runs, profile=profile, root=root)
        path = Path(out) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(notebook_bytes(nb))
        glued = "glued values from the run" if glue_values(runs, name, profile) else "placeholders for glued values"
        log(f"wrote {path} ({glued})")
        written.append(path)
    return written


def publish_downloads(html_dir: Path, *, runs: Path | None = None, profile: str = "book", root: Path | None = None) -> list[Path]:
    """Put each chapter's reader notebook where its page's download button points: ``_sources/<page>.ipynb``.

    The staged chapter pages are executed notebooks; sphinx-book-theme's download button of an ``.ipynb`` page
    offers ``_sources/<page>.ipynb``, which Sphinx copies from the staged page (raw MyST and the build's outputs).
    Written after ``jupyter-book build``, the reader notebook takes its place.
    """
    root = root or repo_root()
    written = []
    for name, source in chapters(root).items():
        target = Path(html_dir) / "_sources" / published_path(source, root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(notebook_bytes(reader_notebook(name, runs=runs, profile=profile, root=root)))
        written.append(target)
    return written


def is_reader_notebook(nb: dict) -> bool:
    """Whether ``nb`` is a reader notebook: its first code cell is the install cell."""
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    source = "".join(code[0]["source"]) if code and isinstance(code[0]["source"], list) else (code[0]["source"] if code else "")
    return source.startswith(INSTALL_MARKER)


def check_published(html_dir: Path, root: Path | None = None) -> list[str]:
    """Problems of a built book's chapter pages: a Colab or Binder button that does not open the page's reader
    notebook on the notebooks branch, or a download that is not the reader notebook."""
    root = root or repo_root()
    config = launch_config(book_config(root))
    problems = []
    for name, source in chapters(root).items():
        path = published_path(source, root)
        page = Path(html_dir) / Path(path).with_suffix(".html")
        if not page.exists():
            problems.append(f"{name}: no page {page}")
            continue
        text = _html.unescape(page.read_text(errors="replace"))
        for kind, url in launch_urls(config, path).items():
            if f'href="{url}"' not in text:
                problems.append(f"{name}: the {kind} button does not open {url}")
        download = Path(html_dir) / "_sources" / path
        if f'_sources/{path}"' not in text:
            problems.append(f"{name}: the download button does not offer _sources/{path}")
        if not download.exists() or not is_reader_notebook(json.loads(download.read_text())):
            problems.append(f"{name}: {download} is not the reader notebook")
    return problems


def commit_to_branch(notebooks: dict[str, bytes], branch: str, root: Path | None = None,
                     message: str | None = None) -> str:
    """Commit ``notebooks`` (repository path -> bytes) onto ``branch``: HEAD's tree plus the notebooks.

    The commit's parents are the branch's previous commit (if any) and HEAD, so that the branch moves forward
    and contains the sources it was made from. Neither the working tree nor the index change. Returns the
    commit's hash; CI pushes the branch (``git push origin <branch>``).
    """
    root = root or repo_root()

    def git(*args: str, env: dict | None = None, data: bytes | None = None) -> str:
        return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, input=data,
                              env={**os.environ, **(env or {})}).stdout.decode().strip()

    index = (root / git("rev-parse", "--git-path", "reader-notebooks-index")).resolve()
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        git("read-tree", "HEAD", env=env)
        for path, data in sorted(notebooks.items()):
            blob = git("hash-object", "-w", "--stdin", data=data)
            git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = git("write-tree", env=env)
    finally:
        index.unlink(missing_ok=True)
    head = git("rev-parse", "HEAD")
    previous = subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/heads/{branch}"], cwd=root,
                              capture_output=True).stdout.decode().strip()
    parents = [p for p in (previous, head) if p]
    if previous and git("rev-parse", f"{previous}^{{tree}}") == tree:
        return previous   # nothing changed
    args = ["commit-tree", tree]
    for p in dict.fromkeys(parents):
        args += ["-p", p]
    commit = git(*args, "-m", message or f"Reader notebooks of {head[:12]}")
    git("update-ref", f"refs/heads/{branch}", commit)
    return commit


def commit_reader_notebooks(*, runs: Path | None = None, profile: str = "book", root: Path | None = None) -> str:
    """Commit every chapter's reader notebook, next to its source, onto the notebooks branch (:func:`commit_to_branch`)."""
    root = root or repo_root()
    config = book_config(root)
    notebooks = {published_path(source, root): notebook_bytes(reader_notebook(name, runs=runs, profile=profile, root=root))
                 for name, source in chapters(root).items()}
    return commit_to_branch(notebooks, notebooks_branch(config), root)
