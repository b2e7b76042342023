"""Papermill regression of every chapter in _toc.yml (profile ``ci``) against tests/expected."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from companion.regression import check_records, chapters, repo_root, run_chapter

CI_BUDGET_S = 90.0
OUT = repo_root() / "_build" / "ci"


@pytest.mark.chapter
@pytest.mark.parametrize("name", sorted(chapters()))
def test_chapter_reproduces_its_records_and_claims(name: str) -> None:
    run = run_chapter(name, "ci", OUT)
    runtimes = OUT / "runtimes.json"
    times = json.loads(runtimes.read_text()) if runtimes.exists() else {}
    times[name] = round(run.seconds, 1)
    runtimes.write_text(json.dumps(times, indent=1) + "\n")
    problems = check_records(name, run.records)
    assert not problems, f"chapter {name} ({run.notebook}):\n  " + "\n  ".join(problems)
    budget = CI_BUDGET_S * float(os.environ.get("COMPANION_BUDGET_FACTOR", "1"))
    assert run.seconds <= budget, f"chapter {name} took {run.seconds:.0f} s in the ci profile (budget {budget:.0f} s)"


@pytest.mark.parametrize("name", sorted(chapters()))
def test_chapter_has_parameters_and_expected_file(name: str) -> None:
    import jupytext

    nb = jupytext.read(chapters()[name])
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: exactly one cell must carry the papermill tag 'parameters'"
    for key in ("profile", "seed", "records_path"):
        assert f"{key} =" in tagged[0].source, f"{name}: the parameters cell must define {key}"
    expected = json.loads((repo_root() / "tests" / "expected" / f"{name}.json").read_text())
    assert expected["metrics"], f"{name}: the expected file lists no metric"
    assert expected["claims"], f"{name}: the expected file lists no claim of the paper"
    assert all(item.get("why") for item in expected["claims"]), f"{name}: every claim needs a 'why'"
