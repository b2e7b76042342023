"""Record a chapter's key numbers: glued for the prose, saved for regression runs, printed only on request.

A chapter calls ``use_records_file(records_path)`` once (``records_path`` is a papermill parameter;
when it is ``None`` the environment variable ``COMPANION_RECORDS`` is used, and when that is unset
nothing is written), then ``record(name, value)`` for every number the regression harness and the
appendix scorecard should see. Records are not printed: the page shows them in its tables, figures and
prose (``{glue:text}`name```); ``record(name, value, show=True)`` also prints ``name = value``.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.@]*$")
_path: Path | None = None


def use_records_file(path: str | os.PathLike | None) -> Path | None:
    """Start a fresh records file at ``path`` (or ``$COMPANION_RECORDS``); return the path used."""
    global _path
    chosen = path if path is not None else os.environ.get("COMPANION_RECORDS")
    _path = Path(chosen) if chosen else None
    if _path is not None:
        _path.parent.mkdir(parents=True, exist_ok=True)
        _path.write_text("{}\n")
    return _path


def record(name: str, value: float, *, show: bool = False) -> float:
    """Glue ``value`` for MyST (``{glue:text}`name```) and write it to the records file; return it as a float.

    ``name`` uses letters, digits, ``_``, ``.`` and ``@`` (e.g. ``acc_pgd@0.1``); ``value`` is a
    finite number (accuracies are fractions in [0, 1]). Nothing is printed unless ``show`` is true, then
    ``name = value`` (4 significant digits): a chapter shows its numbers in tables, figures and prose.
    """
    _check_name(name, "record")
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"record {name!r}: value must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"record {name!r}: value must be finite, got {v}")
    if show:
        print(f"{name} = {v:.4g}")
    _glue(name, v)
    path = _path
    if path is None and os.environ.get("COMPANION_RECORDS"):
        path = Path(os.environ["COMPANION_RECORDS"])
    if path is not None:
        records = json.loads(path.read_text()) if path.exists() else {}
        records[name] = v
        path.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    return v


def glue_skipped(*names: str) -> None:
    """Glue NaN for numbers that this run's profile does not compute (a section the ``ci`` profile skips), so
    that the prose's ``{glue:text}`` references to them still resolve (they read "nan" there); nothing is
    written to the records file, and a name that this run does record must not be passed."""
    for name in names:
        _check_name(name, "glue")
    for name in names:
        _glue(name, float("nan"))


def _check_name(name: str, kind: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{kind} name {name!r} must start with a letter and use only letters, digits, '_', '.', '@'")


def _glue(name: str, value: float) -> None:
    """Glue ``value`` for MyST, only inside a kernel that MyST-NB can read (a no-op elsewhere)."""
    try:
        from myst_nb import glue
    except ImportError:
        return
    glue(name, value, display=False)
