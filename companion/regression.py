"""Run the book's chapters with papermill: the one execution path of the tests, the calibration and ``make book``.

Chapters are exactly the files of ``_toc.yml`` minus the pages listed in :data:`NON_CHAPTERS`. Each run
executes in a fresh kernel with ``COMPANION_BATCH=1`` (so that no interactive widget is built, see
:func:`companion.viz.live_kernel`) and a per-cell timeout; a cell that fails or times out raises
:class:`ChapterRunError` naming the chapter and the cell. Records and expected values: :mod:`companion.expected`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import expected as _expected
from ._validate import check_choice, check_int

PROFILES = ("ci", "book", "full")
# Pages of _toc.yml that are not chapters (no parameters cell, no records), by their exact toc path.
NON_CHAPTERS = frozenset({"book/intro", "book/appendix/reproducibility", "book/appendix/api", "book/appendix/course"})
# The harness's own modules: they run, check and publish chapters but compute nothing a chapter records,
# so editing them does not invalidate cached runs or calibration runs.
HARNESS = frozenset({"__main__.py", "cli.py", "regression.py", "calibration.py", "expected.py", "bookbuild.py",
                     "notebooks.py"})
CELL_TIMEOUT_S = {"ci": 240, "book": 900, "full": 6 * 3600}


class ChapterRunError(RuntimeError):
    """A chapter's cell raised, timed out or killed the kernel."""


def repo_root() -> Path:
    """The book's root: the folder holding ``_toc.yml`` (the package's parent, or the working directory)."""
    for candidate in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (candidate / "_toc.yml").exists():
            return candidate
    raise FileNotFoundError("no _toc.yml found next to the companion package or in the working directory")


def toc_files(root: Path | None = None) -> list[str]:
    """Every ``file`` entry of ``_toc.yml`` (the root page first), in order."""
    toc = yaml.safe_load(((root or repo_root()) / "_toc.yml").read_text())
    files: list[str] = [toc["root"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk({k: v for k, v in toc.items() if k != "root"})
    return files


def chapters(root: Path | None = None) -> dict[str, Path]:
    """Chapter name -> MyST source, for every page of ``_toc.yml`` not listed in :data:`NON_CHAPTERS`."""
    root = root or repo_root()
    out = {}
    for f in toc_files(root):
        if f in NON_CHAPTERS:
            continue
        name = Path(f).name
        if name in out:
            raise ValueError(f"two chapters of _toc.yml are named {name!r}")
        out[name] = root / (f + ".md")
    return out


@dataclass
class Run:
    """One executed chapter: the executed notebook, its records, the wall time and, when it was timed, the machine's
    speed around the run (:func:`reference_workload_s`, the mean of one measurement before and one after)."""

    notebook: Path
    records: dict[str, float]
    seconds: float
    workload_s: float | None = None


def execute(source: Path, executed: Path, parameters: dict[str, Any], *, cell_timeout: int, label: str) -> float:
    """Execute MyST/ipynb ``source`` into ``executed`` with papermill in batch mode; return the seconds taken."""
    import jupytext
    import papermill
    from papermill.exceptions import PapermillExecutionError

    raw = executed.with_suffix(".input.ipynb")
    jupytext.write(jupytext.read(source), raw)
    previous = os.environ.get("COMPANION_BATCH")
    os.environ["COMPANION_BATCH"] = "1"   # inherited by the kernel: no widgets, nothing waits for a reader
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(raw), str(executed), parameters=parameters, cwd=str(source.parent),
                                   kernel_name="python3", progress_bar=False, execution_timeout=cell_timeout)
    except PapermillExecutionError as err:
        raise ChapterRunError(f"{label}: cell {err.exec_count} raised {err.ename}: {err.evalue} "
                              f"(executed notebook: {executed})") from None
    except Exception as err:  # nbclient's CellTimeoutError, DeadKernelError...
        cell = _failed_cell(raw, str(err))
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ChapterRunError(f"{label}: {type(err).__name__} in cell {cell}: {first} (per-cell timeout "
                              f"{cell_timeout} s; executed notebook: {executed})") from None
    finally:
        if previous is None:
            os.environ.pop("COMPANION_BATCH", None)
        else:
            os.environ["COMPANION_BATCH"] = previous
        raw.unlink(missing_ok=True)
    return time.perf_counter() - start


def _failed_cell(notebook: Path, message: str) -> str:
    """Index and first line of the code cell whose source nbclient quotes in ``message`` ("?" if none)."""
    try:
        cells = json.loads(notebook.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return "?"
    for i, cell in enumerate(cells):
        source = "".join(cell["source"]).strip()
        if cell["cell_type"] == "code" and source and source[:300] in message:
            return f"{i} ({source.splitlines()[0][:60]!r})"
    return "?"


def run_chapter(name: str, profile: str = "ci", out_dir: str | Path = "_build/runs", params: dict[str, Any] | None = None,
                cell_timeout: int | None = None, *, time_workload: bool = False) -> Run:
    """Execute chapter ``name`` in ``profile``; write ``<out>/<name>.ipynb``, ``<name>.json`` (records), ``<name>.meta.json``.

    ``time_workload``: also time :func:`reference_workload_s` just before and just after the run (on the cores it may
    use, at most two, whatever ``COMPANION_THREADS`` gives the run), so that its wall time can be judged against the
    machine's speed at the time.
    """
    check_choice(profile, "profile", PROFILES)
    known = chapters()
    if name not in known:
        raise ValueError(f"unknown chapter {name!r}; the table of contents lists {', '.join(sorted(known)) or 'none'}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / f"{name}.json"
    executed = out / f"{name}.ipynb"
    for stale in (records_path, executed, out / f"{name}.meta.json"):   # an interrupted run never looks current
        stale.unlink(missing_ok=True)
    parameters = {"profile": profile, "records_path": str(records_path), **(params or {})}
    timeout = cell_timeout or CELL_TIMEOUT_S[profile]
    workload_threads = min(2, available_cores())
    before = reference_workload_s(workload_threads) if time_workload else None
    seconds = execute(known[name], executed, parameters, cell_timeout=timeout, label=f"chapter {name} ({profile})")
    workload_s = None if before is None else (before + reference_workload_s(workload_threads)) / 2
    records = json.loads(records_path.read_text()) if records_path.exists() else {}
    meta = {"chapter": name, "profile": profile, "key": source_key(name, profile, params),
            "code_key": source_key(name, profile, params, code_only=True), "seconds": round(seconds, 1),
            "params": params or {},
            "threads": os.environ.get("COMPANION_THREADS"), "cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"),
            "workload_s": None if workload_s is None else round(workload_s, 3)}
    (out / f"{name}.meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return Run(executed, records, seconds, workload_s)


def run_in_subprocess(name: str, profile: str, out_dir: Path, *, params: dict[str, Any] | None = None,
                      env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """Start ``python -m companion run`` for one chapter in its own process (own environment, e.g. thread count)."""
    cmd = [sys.executable, "-m", "companion", "run", name, "--profile", profile, "--out", str(out_dir)]
    for key, value in (params or {}).items():
        cmd += ["-p", key, repr(value)]
    if log is None:
        return subprocess.Popen(cmd, cwd=repo_root(), env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
    with open(log, "w") as stream:   # the child keeps its own copy of the handle
        return subprocess.Popen(cmd, cwd=repo_root(), env={**os.environ, **(env or {})}, stdout=stream,
                                stderr=subprocess.STDOUT)


def current_records(runs: Path, name: str, profile: str) -> dict[str, float] | None:
    """The records of the run of ``name`` in folder ``runs`` if it ran today's code (``None`` otherwise).

    Today's code: the chapter's code cells, the companion's non-harness files, ``constraints.txt`` and the
    run's parameters (its meta file's ``code_key``). The chapter's prose does not count.
    """
    meta, records = runs / f"{name}.meta.json", runs / f"{name}.json"
    if not (meta.exists() and records.exists() and (runs / f"{name}.ipynb").exists()):
        return None
    info = json.loads(meta.read_text())
    if info.get("profile") != profile or info.get("code_key") != source_key(name, profile, info.get("params") or {},
                                                                             code_only=True):
        return None
    return json.loads(records.read_text())


def available_cores() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# The ci budget: 90 s per chapter on the 2-core AMD EPYC the chapters were sized on, where the reference workload
# (reference_workload_s, two threads) is estimated to take 0.55 s. That machine could not be measured again; the
# estimate comes from invert_and_defend, the chapter that slowed down most between it and the Intel Xeon (Sapphire
# Rapids, 2 vCPUs at 2.0 GHz) of 2026-12-03: 72 s there, 272 s here while the workload took 2.08 s (131 workloads).
# Chapters without GAN projections slowed down less (2.1-3.0 times against 3.5-3.8), so for them the scaled budget
# is up to about 1.7 times looser than 90 s on the EPYC. On that Xeon the workload took 1.8-6.0 s within minutes
# (other guests of the host take up to 40 % of its CPU time), hence the measurement around each run.
CI_BUDGET_S = 90.0
REFERENCE_WORKLOAD_S = 0.55


def on_reference_scale(seconds: float, workload_s: float) -> float:
    """``seconds`` measured while :func:`reference_workload_s` took ``workload_s`` here, as seconds on the reference
    machine (where it takes :data:`REFERENCE_WORKLOAD_S`)."""
    if not workload_s > 0:
        raise ValueError(f"workload_s must be a positive number of seconds, got {workload_s!r}")
    return seconds * REFERENCE_WORKLOAD_S / workload_s


def ci_budget_s(workload_s: float, threads: int, cores: int) -> float:
    """The ci budget of one chapter on this machine: :data:`CI_BUDGET_S` scaled by how much slower than the
    reference machine this one runs :func:`reference_workload_s` (``workload_s``; never scaled down), and by the
    share of the cores (at most two) that the run is given as torch threads (``COMPANION_THREADS``)."""
    if not workload_s > 0:
        raise ValueError(f"workload_s must be a positive number of seconds, got {workload_s!r}")
    check_int(threads, "threads")
    check_int(cores, "cores")
    return CI_BUDGET_S * max(1.0, workload_s / REFERENCE_WORKLOAD_S) * max(1.0, min(cores, 2) / threads)


def reference_workload_s(threads: int = 2, repeats: int = 4) -> float:
    """Seconds this machine takes for a fixed torch workload shaped like the chapters': 10 Adam steps of a small
    CNN classifier on 128 digit-sized images, then 10 Adam steps of 512 latent codes through a DCGAN-shaped
    generator (the projections of Defense-GAN, InvGAN and MimicGAN); ``threads`` torch threads, the mean of
    ``repeats`` after a warm-up (the mean, not the best: a chapter's run meets the machine's average speed, and a
    shared machine's speed can halve from one minute to the next). The ci budget is scaled by it
    (:func:`ci_budget_s`), so that a slower machine is not mistaken for a slower chapter. It runs in its own
    process, leaving this one's torch settings alone, and builds its networks here so that no change to the
    companion can change it."""
    check_int(threads, "threads")
    check_int(repeats, "repeats")
    code = f"""
import time, torch
from torch import nn
torch.set_num_threads({threads}); torch.manual_seed(0)
clf = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                    nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
gen = nn.Sequential(nn.Linear(32, 64 * 49), nn.BatchNorm1d(64 * 49), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
                    nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
                    nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Sigmoid()).eval().requires_grad_(False)
x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
z, target = torch.randn(512, 32, requires_grad=True), torch.rand(512, 1, 28, 28)
opt_clf, opt_z = torch.optim.Adam(clf.parameters()), torch.optim.Adam([z])
times = []
for rep in range({repeats} + 1):
    start = time.perf_counter()
    for _ in range(10):
        opt_clf.zero_grad(); nn.functional.cross_entropy(clf(x), y).backward(); opt_clf.step()
    for _ in range(10):
        opt_z.zero_grad(); (gen(z) - target).pow(2).sum().backward(); opt_z.step()
    if rep:
        times.append(time.perf_counter() - start)
print(sum(times) / len(times))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600)
    return float(out.stdout.strip().splitlines()[-1])


def check_chapter(name: str, records: dict[str, float], profile: str = "ci", root: Path | None = None) -> list[str]:
    """Problems of ``records`` against the chapter's expected file: values and claims (ci), claims only (book)."""
    spec = _expected.load(name, root or repo_root())
    return _expected.check_records(name, records, spec, values=profile == "ci")


def environment_summary() -> dict[str, str]:
    """What a result depends on besides the sources: Python, torch, the CPU and the pinned constraints."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": str(os.cpu_count())}


def source_key(name: str, profile: str, params: dict[str, Any] | None = None, root: Path | None = None, *,
               code_only: bool = False) -> str:
    """A hash of everything a chapter's run depends on that lives in the repository.

    The chapter's source, every file of the companion package (code and shipped weights) except the harness
    (:data:`HARNESS`), the profile, the parameters and the pinned constraints; editing any of them changes the key.
    ``code_only``: only the chapter's code cells count (the records do not depend on its prose).
    """
    import hashlib

    root = root or repo_root()
    digest = hashlib.sha256()
    digest.update(json.dumps({"chapter": name, "profile": profile, "params": params or {}}, sort_keys=True).encode())
    source = chapters(root)[name]
    if code_only:
        import jupytext

        digest.update("\0".join(c.source for c in jupytext.read(source).cells if c.cell_type == "code").encode())
        files = [root / "constraints.txt"]
    else:
        files = [source, root / "constraints.txt"]
    files += sorted(p for p in (root / "companion").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and p.name not in HARNESS)
    for file in files:
        digest.update(str(file.relative_to(root)).encode())
        digest.update(file.read_bytes() if file.exists() else b"")
    return digest.hexdigest()[:16]
