"""The regression harness itself: claims, metric checks, blessing, the records file."""
from __future__ import annotations

import json

import pytest

from companion import record, use_records_file
from companion.regression import bless, check_records, chapters, evaluate_claim, run_chapter

RECORDS = {"acc_fgsm@0.1": 0.5, "acc_pgd@0.1": 0.2, "acc_pgd@0.2": 0.05, "clean": 0.97}


def test_claims_hold_and_fail_as_written() -> None:
    assert evaluate_claim("acc_pgd@0.1 <= acc_fgsm@0.1", RECORDS)[0]
    assert not evaluate_claim("acc_pgd@0.1 >= acc_fgsm@0.1", RECORDS)[0]
    assert evaluate_claim("acc_fgsm@0.1 >= acc_pgd@0.1 + 0.25", RECORDS)[0]
    assert not evaluate_claim("acc_fgsm@0.1 >= acc_pgd@0.1 + 0.35", RECORDS)[0]
    assert evaluate_claim("acc_pgd@0.2 <= acc_pgd@0.1 <= clean", RECORDS)[0]
    assert not evaluate_claim("acc_pgd@0.1 <= acc_pgd@0.2 <= clean", RECORDS)[0]
    assert evaluate_claim("clean >= 0.95", RECORDS)[0]
    ok, why = evaluate_claim("missing <= clean", RECORDS)
    assert not ok and "missing" in why


@pytest.mark.parametrize("bad", ["acc_pgd@0.1", "acc_pgd@0.1 => clean", "a <= b <=", "acc_pgd@0.1 <= 1 +"])
def test_malformed_claims_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        evaluate_claim(bad, RECORDS)


def test_check_records_reports_every_kind_of_difference() -> None:
    expected = {
        "metrics": {"clean": {"value": 0.9, "tol": 0.05}, "acc_pgd@0.1": {"min": 0.3}, "acc_fgsm@0.1": {"value": 0.5},
                    "absent": {"value": 1.0, "tol": 0.1}},
        "claims": [{"claim": "acc_fgsm@0.1 <= acc_pgd@0.1", "why": "test"}],
    }
    problems = check_records("x", RECORDS, expected)
    text = "\n".join(problems)
    assert "clean: got 0.97, expected 0.9" in text
    assert "below the minimum" in text
    assert "acc_fgsm@0.1: no tolerance" in text
    assert "absent: expected but not recorded" in text
    assert "acc_pgd@0.2: recorded" in text
    assert "claim failed" in text
    assert len(problems) == 6
    ok = {"metrics": {k: {"value": v, "tol": 1e-9} for k, v in RECORDS.items()},
          "claims": [{"claim": "acc_pgd@0.1 <= acc_fgsm@0.1", "why": "t"}]}
    assert check_records("x", RECORDS, ok) == []


def test_bless_keeps_tolerances_bounds_and_claims(tmp_path) -> None:
    path = tmp_path / "tests" / "expected" / "demo.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"default_tol": 0.02, "metrics": {"clean": {"value": 0.5, "tol": 0.01}, "acc_pgd@0.1": {"min": 0.1}},
                                "claims": [{"claim": "clean >= 0.95", "why": "paper"}]}))
    bless("demo", RECORDS, root=tmp_path)
    out = json.loads(path.read_text())
    assert out["metrics"]["clean"] == {"value": 0.97, "tol": 0.01}
    assert out["metrics"]["acc_pgd@0.1"] == {"min": 0.1}
    assert out["metrics"]["acc_pgd@0.2"] == {"value": 0.05}
    assert out["claims"] == [{"claim": "clean >= 0.95", "why": "paper"}]
    assert check_records("demo", RECORDS, out) == []


def test_records_file_and_validation(tmp_path, monkeypatch) -> None:
    path = use_records_file(tmp_path / "r.json")
    assert record("acc_x@0.1", 0.25) == 0.25
    record("n", 3)
    assert json.loads(path.read_text()) == {"acc_x@0.1": 0.25, "n": 3.0}
    for name, value, err in [("1bad", 1.0, ValueError), ("a b", 1.0, ValueError), ("ok", float("nan"), ValueError),
                             ("ok", "0.5", TypeError), ("ok", True, TypeError)]:
        with pytest.raises(err):
            record(name, value)
    monkeypatch.setenv("COMPANION_RECORDS", str(tmp_path / "env.json"))
    use_records_file(None)
    record("y", 1.0)
    assert json.loads((tmp_path / "env.json").read_text()) == {"y": 1.0}
    monkeypatch.delenv("COMPANION_RECORDS")
    use_records_file(None)
    record("z", 1.0)  # no path: shown only


def test_unknown_chapter_and_profile_are_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown chapter"):
        run_chapter("no_such_chapter", "ci", tmp_path)
    with pytest.raises(ValueError, match="unknown profile"):
        run_chapter(next(iter(chapters())), "fast", tmp_path)
