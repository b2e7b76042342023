"""Calibrate a chapter's expected values over the things that differ between machines.

A trained network amplifies tiny float differences (CPU kernels, thread count, library versions) into
different accuracies, so a value blessed from one run fails on another machine. :func:`calibrate` runs the
chapter's ``ci`` profile in each :data:`VARIANTS` (seeds, 1 and 2 threads, the AVX2 kernels instead of
AVX-512), then derives each metric's centre and tolerance from the measured spread and each claim's status
from how many runs it held in (:func:`companion.expected.calibrate`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from . import expected as _expected
from .regression import chapters, repo_root, run_in_subprocess, source_key

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
        key = source_key(name, "ci", params, code_only=True)
        meta = out / f"{name}.meta.json"
        if meta.exists() and json.loads(meta.read_text()).get("calibration_key") == key:
            log(f"{name} [{label}]: current, not re-run")
            continue
        start = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        proc = run_in_subprocess(name, "ci", out, params=params, env=env, log=out / "run.log")
        if proc.wait() != 0:
            raise RuntimeError(f"{name} [{label}] failed; see {out / 'run.log'}")
        info = json.loads(meta.read_text())
        meta.write_text(json.dumps({**info, "calibration_key": key, "variant": label}, indent=1) + "\n")
        log(f"{name} [{label}]: {time.perf_counter() - start:.0f} s")


def collect(name: str) -> dict[str, dict[str, float]]:
    """The records of every current calibration run of ``name`` (refuses runs of older sources)."""
    runs = {}
    for label, (params, _) in VARIANTS.items():
        out = runs_dir(name) / label
        meta = out / f"{name}.meta.json"
        if not meta.exists():
            continue
        if json.loads(meta.read_text()).get("calibration_key") != source_key(name, "ci", params, code_only=True):
            raise RuntimeError(f"{name} [{label}]: the run is of older sources; run `python -m companion calibrate {name}`")
        runs[label] = json.loads((out / f"{name}.json").read_text())
    return runs


def book_run(name: str) -> dict[str, dict[str, float]]:
    """The last ``book``-profile run of ``name`` (``_build/book/runs``), if its code is today's: claim evidence."""
    runs = repo_root() / "_build" / "book" / "runs"
    meta = runs / f"{name}.meta.json"
    if not meta.exists():
        return {}
    info = json.loads(meta.read_text())
    if info.get("code_key") != source_key(name, "book", info.get("params") or {}, code_only=True):
        return {}
    return {"book": json.loads((runs / f"{name}.json").read_text())}


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
