"""Run chapters with papermill and check their records against ``tests/expected/<chapter>.json``.

An expected file holds

* ``metrics``: for each record name either ``{"value": v, "tol": t}`` (|recorded - v| <= t) or
  bounds ``{"min": a, "max": b}`` (either may be left out);
* ``claims``: the paper's claims as inequalities between records, e.g.
  ``"acc_pgd@0.1 <= acc_fgsm@0.1"``, ``"acc_defended >= acc_undefended + 0.2"`` or a chain
  ``"acc@0.3 <= acc@0.2 <= acc@0.1"``; each with a ``why`` that names the source of the claim.

Values come from real runs (``python -m companion bless``); tolerances and claims are written by
hand and never loosened to make a run pass.
"""
from __future__ import annotations

import json
import operator
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ._validate import check_choice

PROFILES = ("ci", "book", "full")
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_SPLIT = re.compile(r"\s+(<=|>=|<|>)\s+")
_TERM = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_.@]*|-?[0-9.]+(?:e-?[0-9]+)?)\s*(?:([+-])\s*([0-9.]+(?:e-?[0-9]+)?))?\s*$")
NON_CHAPTERS = ("intro", "appendix", "scorecard", "api", "reproduc")


def repo_root() -> Path:
    """The book's root: the folder holding ``_toc.yml`` (the package's parent, or the working directory)."""
    for candidate in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (candidate / "_toc.yml").exists():
            return candidate
    raise FileNotFoundError("no _toc.yml found next to the companion package or in the working directory")


def chapters(root: Path | None = None) -> dict[str, Path]:
    """Chapter name -> MyST source, for every chapter listed in ``_toc.yml`` (intro/appendix excluded)."""
    root = root or repo_root()
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc)
    out = {}
    for f in files:
        name = Path(f).name
        if any(tag in name for tag in NON_CHAPTERS):
            continue
        out[name] = root / (f + ".md")
    return out


@dataclass
class Run:
    """One executed chapter: the executed notebook, its records and the wall time."""

    notebook: Path
    records: dict[str, float]
    seconds: float


def run_chapter(name: str, profile: str = "ci", out_dir: str | Path = "_build/runs", params: dict[str, Any] | None = None,
                timeout: int = 1200) -> Run:
    """Execute chapter ``name`` with papermill in ``profile``; write ``<out>/<name>.ipynb`` and ``<name>.json``."""
    import jupytext
    import papermill

    check_choice(profile, "profile", PROFILES)
    known = chapters()
    if name not in known:
        raise ValueError(f"unknown chapter {name!r}; the table of contents lists {', '.join(sorted(known)) or 'none'}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    source = known[name]
    raw = out / f"{name}.input.ipynb"
    jupytext.write(jupytext.read(source), raw)
    records_path = out / f"{name}.json"
    records_path.unlink(missing_ok=True)
    executed = out / f"{name}.ipynb"
    parameters = {"profile": profile, "records_path": str(records_path), **(params or {})}
    start = time.perf_counter()
    papermill.execute_notebook(str(raw), str(executed), parameters=parameters, cwd=str(source.parent),
                               kernel_name="python3", progress_bar=False, execution_timeout=timeout)
    seconds = time.perf_counter() - start
    raw.unlink()
    records = json.loads(records_path.read_text()) if records_path.exists() else {}
    return Run(executed, records, seconds)


def expected_path(name: str, root: Path | None = None) -> Path:
    return (root or repo_root()) / "tests" / "expected" / f"{name}.json"


def _term(text: str, records: dict[str, float]) -> float:
    head, sign, offset = _TERM.match(text).groups()  # type: ignore[union-attr]  # checked by evaluate_claim
    if head[0].isalpha():
        if head not in records:
            raise KeyError(head)
        value = records[head]
    else:
        value = float(head)
    if sign:
        value = value + float(offset) if sign == "+" else value - float(offset)
    return value


def evaluate_claim(claim: str, records: dict[str, float]) -> tuple[bool, str]:
    """Evaluate ``"a <= b + 0.1"`` (chains allowed) on records; return (holds, explanation)."""
    parts = _SPLIT.split(claim.strip())
    if len(parts) < 3 or len(parts) % 2 == 0:
        raise ValueError(f"claim {claim!r} must read 'term OP term [OP term ...]' with OP one of <=, >=, <, >")
    for term in parts[0::2]:
        if not _TERM.match(term):
            raise ValueError(f"cannot read term {term!r} of claim {claim!r}; write 'name', 'number' or 'name + number'")
    try:
        values = [_term(p, records) for p in parts[0::2]]
    except KeyError as missing:
        return False, f"record {missing} is missing"
    ok = all(_OPS[op](a, b) for a, op, b in zip(values, parts[1::2], values[1:]))
    shown = " ".join(f"{p}" if i % 2 else f"{p}[{values[i // 2]:.4g}]" for i, p in enumerate(parts))
    return ok, shown


def check_records(name: str, records: dict[str, float], expected: dict[str, Any] | None = None) -> list[str]:
    """All differences between ``records`` and the expected file of chapter ``name`` (empty list: pass)."""
    expected = expected if expected is not None else json.loads(expected_path(name).read_text())
    problems = []
    default_tol = expected.get("default_tol")
    for key, spec in expected.get("metrics", {}).items():
        if key not in records:
            problems.append(f"metric {key}: expected but not recorded")
            continue
        got = records[key]
        if "value" in spec:
            tol = spec.get("tol", default_tol)
            if tol is None:
                problems.append(f"metric {key}: no tolerance set in the expected file")
            elif abs(got - spec["value"]) > tol:
                problems.append(f"metric {key}: got {got:.4g}, expected {spec['value']:.4g} ± {tol:g}")
        if "min" in spec and got < spec["min"]:
            problems.append(f"metric {key}: got {got:.4g}, below the minimum {spec['min']:g}")
        if "max" in spec and got > spec["max"]:
            problems.append(f"metric {key}: got {got:.4g}, above the maximum {spec['max']:g}")
    for key in sorted(set(records) - set(expected.get("metrics", {}))):
        problems.append(f"metric {key}: recorded ({records[key]:.4g}) but not in the expected file; add it with `python -m companion bless {name}`")
    for item in expected.get("claims", []):
        ok, shown = evaluate_claim(item["claim"], records)
        if not ok:
            problems.append(f"claim failed: {shown}  ({item.get('why', 'no reason given')})")
    return problems


def bless(name: str, records: dict[str, float], root: Path | None = None) -> Path:
    """Write the values of a real run into the expected file, keeping tolerances, bounds and claims."""
    path = expected_path(name, root)
    expected = json.loads(path.read_text()) if path.exists() else {"chapter": name, "profile": "ci", "default_tol": None,
                                                                  "metrics": {}, "claims": []}
    for key, value in records.items():
        spec = expected["metrics"].setdefault(key, {})
        if "min" not in spec and "max" not in spec:
            spec["value"] = round(value, 6)
    expected["metrics"] = dict(sorted(expected["metrics"].items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(expected, indent=2) + "\n")
    return path


def stage_book(executed_dir: str | Path, dest: str | Path, root: Path | None = None) -> Path:
    """Copy the book to ``dest`` with each chapter's MyST source replaced by its executed notebook.

    Building that copy with execution off checks the book (warnings as errors) without running
    any chapter a second time.
    """
    import shutil

    root = root or repo_root()
    dest = Path(dest).resolve()
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(root / "book", dest / "book")
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy(root / f, dest / f)
    config = yaml.safe_load((dest / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (dest / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    for name, source in chapters(root).items():
        executed = Path(executed_dir) / f"{name}.ipynb"
        if not executed.exists():
            raise FileNotFoundError(f"chapter {name} has no executed notebook in {executed_dir}; run the regression tests first")
        target = dest / source.relative_to(root)
        target.unlink()
        shutil.copy(executed, target.with_suffix(".ipynb"))
    return dest
