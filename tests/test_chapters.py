"""Papermill regression of every chapter of _toc.yml (profile ``ci``) against tests/expected.

The executed notebooks land in ``_build/ci/runs`` with their cache keys, so that the book check of
``make test`` (``python -m companion book --profile ci``) builds from these very runs.
"""
from __future__ import annotations

import os

import pytest

from companion import expected
from companion.regression import available_cores, check_chapter, chapters, repo_root, run_chapter

CI_BUDGET_S = 90.0   # per chapter, on a 2-core machine using both cores


def budget_s() -> float:
    """The ci budget, scaled up when the run is given fewer torch threads than the cores it has (COMPANION_THREADS)."""
    cores = available_cores()
    threads = int(os.environ.get("COMPANION_THREADS", cores))
    return CI_BUDGET_S * max(1.0, min(cores, 2) / threads)
OUT = repo_root() / "_build" / "ci" / "runs"


@pytest.mark.chapter
@pytest.mark.parametrize("name", sorted(chapters()))
def test_chapter_reproduces_its_records_and_claims(name: str) -> None:
    run = run_chapter(name, "ci", OUT)
    problems = check_chapter(name, run.records, "ci")
    assert not problems, f"chapter {name} ({run.notebook}):\n  " + "\n  ".join(problems)
    assert run.seconds <= budget_s(), f"chapter {name} took {run.seconds:.0f} s in the ci profile (budget {budget_s():.0f} s)"


@pytest.mark.parametrize("name", sorted(chapters()))
def test_chapter_has_parameters_and_a_valid_expected_file(name: str) -> None:
    import jupytext

    nb = jupytext.read(chapters()[name])
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: exactly one cell must carry the papermill tag 'parameters'"
    for key in ("profile", "seed", "records_path"):
        assert f"{key} =" in tagged[0].source, f"{name}: the parameters cell must define {key}"
    spec = expected.load(name, repo_root())   # schema: unknown keys, types, statuses, claims naming records
    assert spec["metrics"], f"{name}: the expected file lists no metric"
    assert spec["claims"], f"{name}: the expected file lists no claim of the paper"
    for claim in spec["claims"]:
        assert claim.get("paper"), f"{name}: claim {claim['claim']!r} does not give the paper's number ('paper')"
        unknown = [n for n in expected.claim_names(claim["claim"]) if n not in spec["metrics"]]
        assert not unknown, f"{name}: claim {claim['claim']!r} names {unknown}, which the chapter does not record"
    assert "calibration" in spec, f"{name}: the expected file was never calibrated (python -m companion calibrate {name})"


def test_every_widget_is_guarded_against_batch_runs() -> None:
    """An interact callback that computes during a batch run can hang nbclient (see viz.live_kernel)."""
    for name, source in chapters().items():
        lines = source.read_text().splitlines()
        for i, line in enumerate(lines):
            if "widgets.interact" in line:
                assert i > 0 and lines[i - 1].strip().startswith("if live_kernel()"), \
                    f"{name}:{i + 1}: build widgets only under `if live_kernel():`"
