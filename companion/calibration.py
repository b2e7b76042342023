"""Calibrate a chapter's expected values over the things that differ between machines.

A trained network amplifies tiny float differences (CPU kernels, thread count, library versions) into
different accuracies, so a value blessed from one run fails on another machine. :func:`calibrate` runs the
chapter's ``ci`` profile in each :data:`VARIANTS` (seeds, 1 and 2 threads, the AVX2 kernels instead of
AVX-512), then derives each metric's centre and tolerance from the measured spread and each claim's status
from how many runs it held in (:func:`companion.expected.calibrate`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import expected as _expected
from .regression import chapters, current_records, repo_root, run_in_subprocess

# label -> (papermill parameters, environment of the run)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "seed0-2threads": ({"seed": 0}, {"COMPANION_THREADS": "2"}),
    "seed0-1thread": ({"seed": 0}, {"COMPANION_THREADS": "1"}),
    "seed0-avx2": ({"seed": 0}, {"COMPANION_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2"}),
    "seed1-2threads": ({"seed": 1}, {"COMPANION_THREADS": "2"}),
    "seed2-2threads": ({"seed": 2}, {"COMPANION_THREADS": "2"}),
}


def runs_dir(name: str, root: Path | None = None) -> Path:
    return (root or repo_root()) / "_build" / "calibrate" / name


def run_variants(name: str, variants: list[str] | None = None, *, log=print) -> None:
    """Run chapter ``name`` (profile ``ci``) once per variant, one at a time; skip runs already current."""
    if name not in chapters():
        raise ValueError(f"unknown chapter {name!r}")
    for label in variants or list(VARIANTS):
        params, env = VARIANTS[label]
        out = runs_dir(name) / label
        if current_records(out, name, "ci") is not None:
            log(f"{name} [{label}]: current, not re-run")
            continue
        start = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        proc = run_in_subprocess(name, "ci", out, params=params, env=env, log=out / "run.log")
        if proc.wait() != 0:
            raise RuntimeError(f"{name} [{label}] failed; see {out / 'run.log'}")
        log(f"{name} [{label}]: {time.perf_counter() - start:.0f} s")


def collect(name: str) -> dict[str, dict[str, float]]:
    """The records of every current calibration run of ``name`` (refuses runs of older sources)."""
    runs = {}
    for label in VARIANTS:
        out = runs_dir(name) / label
        if not (out / f"{name}.meta.json").exists():
            continue
        records = current_records(out, name, "ci")
        if records is None:
            raise RuntimeError(f"{name} [{label}]: the run is of older sources; run `python -m companion calibrate {name}`")
        runs[label] = records
    return runs


def book_run(name: str) -> dict[str, dict[str, float]]:
    """The last ``book``-profile run of ``name`` (``_build/book/runs``), if its code is today's: claim evidence."""
    records = current_records(repo_root() / "_build" / "book" / "runs", name, "book")
    return {} if records is None else {"book": records}


def bless(name: str) -> Path:
    """Rewrite ``tests/expected/<name>.json`` from the current calibration runs (claims and floors kept).

    The claims' statuses count the chapter's last ``book`` run too, when its code is current (``make book``).
    """
    root = repo_root()
    runs = collect(name)
    spec = _expected.load(name, root, calibrated=False)
    new = _expected.calibrate(spec, runs, book_run(name))
    path = _expected.path(name, root)
    path.write_text(_expected.dumps(new))
    return path


def calibrate(names: list[str], variants: list[str] | None = None, *, log=print) -> None:
    """Run every variant of each chapter, then bless its expected file from those runs."""
    for name in names:
        run_variants(name, variants, log=log)
        log(f"wrote {bless(name)}")
