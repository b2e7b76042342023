"""Papermill regression of every chapter of _toc.yml (profile ``ci``) against tests/expected.

The executed notebooks land in ``_build/ci/runs`` with their cache keys, so that the book check of
``make test`` (``python -m companion book --profile ci``) builds from these very runs.
"""
from __future__ import annotations

import os

import pytest

from companion import expected
from companion.regression import (CI_BUDGET_S, REFERENCE_WORKLOAD_S, available_cores, check_chapter, chapters, ci_budget_s,
                                  repo_root, run_chapter)


def budget_s(workload_s: float) -> float:
    """The ci budget of a run on this machine (:func:`companion.regression.ci_budget_s`), given the machine's speed
    measured around it."""
    cores = available_cores()
    return ci_budget_s(workload_s, int(os.environ.get("COMPANION_THREADS", cores)), cores)


OUT = repo_root() / "_build" / "ci" / "runs"


@pytest.mark.chapter
@pytest.mark.parametrize("name", sorted(chapters()))
def test_chapter_reproduces_its_records_and_claims(name: str) -> None:
    run = run_chapter(name, "ci", OUT, time_workload=True)
    problems = check_chapter(name, run.records, "ci")
    assert not problems, f"chapter {name} ({run.notebook}):\n  " + "\n  ".join(problems)
    budget = budget_s(run.workload_s)
    assert run.seconds <= budget, (
        f"chapter {name} took {run.seconds:.0f} s in the ci profile, over its budget of {budget:.0f} s on this machine "
        f"({CI_BUDGET_S:.0f} s on the reference machine, scaled by the reference workload: {run.workload_s:.2f} s "
        f"here, {REFERENCE_WORKLOAD_S} s there)")


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
