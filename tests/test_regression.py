"""The regression harness itself: the expected-file schema, claims, calibration, the runner, the book checks."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from companion import record, use_records_file
from companion.expected import (ExpectedFileError, calibrate, check_records, claim_names, evaluate_claim, sample_size,
                                validate)
from companion.regression import (CI_BUDGET_S, NON_CHAPTERS, REFERENCE_WORKLOAD_S, ChapterRunError, chapters,
                                  ci_budget_s, execute, reference_workload_s, run_chapter, toc_files)

RECORDS = {"acc_fgsm@0.1": 0.5, "acc_pgd@0.1": 0.2, "acc_pgd@0.2": 0.05, "clean": 0.97}


def _spec(metrics=None, claims=None, **extra) -> dict:
    claims = claims if claims is not None else [{"claim": "acc_pgd@0.1 <= acc_fgsm@0.1", "why": "t", "status": "reproduced"}]
    metrics = metrics if metrics is not None else {k: {"value": v, "tol": 1e-9} for k, v in RECORDS.items()}
    return {"chapter": "x", "metrics": metrics, "claims": claims, **extra}


def test_claims_hold_and_fail_as_written() -> None:
    assert evaluate_claim("acc_pgd@0.1 <= acc_fgsm@0.1", RECORDS)[0]
    assert not evaluate_claim("acc_pgd@0.1 >= acc_fgsm@0.1", RECORDS)[0]
    assert evaluate_claim("acc_fgsm@0.1 >= acc_pgd@0.1 + 0.25", RECORDS)[0]
    assert not evaluate_claim("acc_fgsm@0.1 >= acc_pgd@0.1 + 0.35", RECORDS)[0]
    assert evaluate_claim("acc_pgd@0.2 <= acc_pgd@0.1 <= clean", RECORDS)[0]
    assert not evaluate_claim("acc_pgd@0.1 <= acc_pgd@0.2 <= clean", RECORDS)[0]
    assert evaluate_claim("clean >= 0.95", RECORDS)[0]
    ok, why, margin = evaluate_claim("missing <= clean", RECORDS)
    assert not ok and "missing" in why and margin == -math.inf


def test_margin_is_the_smallest_slack_of_the_chain() -> None:
    assert evaluate_claim("acc_pgd@0.2 <= acc_pgd@0.1 <= clean", RECORDS)[2] == pytest.approx(0.15)
    assert evaluate_claim("acc_fgsm@0.1 >= acc_pgd@0.1 + 0.35", RECORDS)[2] == pytest.approx(-0.05)


@pytest.mark.parametrize("bad", ["acc_pgd@0.1", "acc_pgd@0.1 => clean", "a <= b <=", "acc_pgd@0.1 <= 1 +"])
def test_malformed_claims_are_rejected(bad: str) -> None:
    with pytest.raises(ExpectedFileError):
        evaluate_claim(bad, RECORDS)


def test_a_claim_must_name_a_record() -> None:
    assert claim_names("a <= b + 0.1 <= 3") == ["a", "b"]
    with pytest.raises(ExpectedFileError, match="at least one record"):
        validate(_spec(claims=[{"claim": "0.5 <= 1", "why": "t", "status": "reproduced"}]))


@pytest.mark.parametrize("metrics, message", [
    ({"clean": {"value": 0.9, "mn": 0.1, "tol": 0.1}}, "unknown key"),        # misspelled bound
    ({"clean": {"value": 0.9, "tolerance": 0.1}}, "unknown key"),             # misspelled tolerance
    ({"clean": {"value": 0.9}}, "needs a 'tol'"),                             # no tolerance at all
    ({"clean": {"tol": 0.1}}, "give a 'value'"),
    ({"clean": {"value": "0.9", "tol": 0.1}}, "wrong type"),
    ({"clean": {"value": float("nan"), "tol": 0.1}}, "not finite"),
])
def test_schema_rejects_misspelled_or_incomplete_metrics(metrics, message) -> None:
    with pytest.raises(ExpectedFileError, match=message):
        validate(_spec(metrics=metrics))


def test_schema_rejects_unknown_top_level_keys_and_statuses() -> None:
    with pytest.raises(ExpectedFileError, match="unknown key"):
        validate(_spec(default_tolerance=0.1))
    with pytest.raises(ExpectedFileError, match="status"):
        validate(_spec(claims=[{"claim": "clean >= 0.9", "why": "t", "status": "holds"}]))
    with pytest.raises(ExpectedFileError, match="missing key 'status'"):
        validate(_spec(claims=[{"claim": "clean >= 0.9", "why": "t"}]))
    validate(_spec(claims=[{"claim": "clean >= 0.9", "why": "t"}]), calibrated=False)


def test_check_records_reports_every_kind_of_difference() -> None:
    spec = validate(_spec(metrics={"clean": {"value": 0.9, "tol": 0.05}, "acc_pgd@0.1": {"min": 0.3},
                                   "acc_fgsm@0.1": {"value": 0.5, "tol": 0.01}, "absent": {"value": 1.0, "tol": 0.1}},
                          claims=[{"claim": "acc_fgsm@0.1 <= acc_pgd@0.1", "why": "test", "status": "reproduced"}]))
    text = "\n".join(problems := check_records("x", RECORDS, spec))
    assert "clean: got 0.97, expected 0.9" in text
    assert "below the minimum" in text
    assert "absent: expected but not recorded" in text
    assert "acc_pgd@0.2: recorded but not in the expected file" in text
    assert "claim failed" in text
    assert len(problems) == 5
    assert check_records("x", RECORDS, validate(_spec())) == []


def test_nan_and_infinite_records_fail() -> None:
    spec = validate(_spec(metrics={"clean": {"min": 0.5}, "acc_pgd@0.1": {"max": 1.0}},
                          claims=[{"claim": "clean >= acc_pgd@0.1", "why": "t", "status": "reproduced"}]))
    problems = check_records("x", {"clean": float("nan"), "acc_pgd@0.1": float("inf")}, spec)
    assert sum("not a finite number" in p for p in problems) == 2
    assert any("missing" in p for p in problems)   # the claim cannot pass on non-finite values


def test_claim_statuses_are_asserted_both_ways() -> None:
    claims = [{"claim": "acc_pgd@0.1 >= acc_fgsm@0.1", "why": "paper says so", "status": "not reproduced"},
              {"claim": "acc_pgd@0.2 >= clean", "why": "sometimes", "status": "mixed"}]
    assert check_records("x", RECORDS, validate(_spec(claims=claims))) == []
    flipped = dict(RECORDS, **{"acc_pgd@0.1": 0.6})
    problems = check_records("x", flipped, validate(_spec(claims=claims)), values=False)
    assert len(problems) == 1 and "now holds" in problems[0]


def test_calibration_derives_tolerances_and_statuses_from_the_runs() -> None:
    spec = _spec(metrics={"acc_fgsm@0.1": {"value": 0.0, "tol": 0.01}, "loss": {"value": 0.0, "tol": 0.2},
                          "t_s": {"max": 10}},
                 claims=[{"claim": "acc_pgd@0.1 <= acc_fgsm@0.1", "why": "a"}, {"claim": "acc_fgsm@0.1 >= 0.55", "why": "b"},
                         {"claim": "acc_fgsm@0.1 >= 0.9", "why": "c"}],
                 sample_sizes={"acc_*": 200})
    runs = {"r1": {"acc_fgsm@0.1": 0.50, "acc_pgd@0.1": 0.2, "loss": 1.0, "t_s": 3.0},
            "r2": {"acc_fgsm@0.1": 0.60, "acc_pgd@0.1": 0.3, "loss": 1.01, "t_s": 4.0}}
    new = calibrate(spec, runs)
    fgsm = new["metrics"]["acc_fgsm@0.1"]
    assert fgsm["value"] == pytest.approx(0.55) and fgsm["spread"] == [0.5, 0.6]
    assert fgsm["tol"] == pytest.approx(0.15)                          # 1.5 x range beats the binomial floor
    assert new["metrics"]["acc_pgd@0.1"]["floor"] == pytest.approx(0.092, abs=1e-3)   # 3 binomial SEs at p = 0.25
    assert new["metrics"]["loss"]["tol"] == pytest.approx(0.2)          # the hand-set floor beats 1.5 x 0.01
    assert new["metrics"]["t_s"] == {"max": 10}                         # bounds stay
    assert [c["status"] for c in new["claims"]] == ["reproduced", "mixed", "not reproduced"]
    assert [c["runs"] for c in new["claims"]] == ["2/2", "1/2", "0/2"]
    assert sample_size("acc_x", new) == 200 and sample_size("loss", new) is None
    for records in runs.values():
        assert check_records("x", records, new) == []
    with pytest.raises(ValueError, match="at least two"):
        calibrate(spec, {"r1": runs["r1"]})
    with pytest.raises(ValueError, match="non-finite"):
        calibrate(spec, {"r1": runs["r1"], "r2": dict(runs["r2"], loss=float("nan"))})


def test_records_file_and_validation(tmp_path, monkeypatch, capsys) -> None:
    path = use_records_file(tmp_path / "r.json")
    assert record("acc_x@0.1", 0.25) == 0.25
    record("n", 3)
    assert json.loads(path.read_text()) == {"acc_x@0.1": 0.25, "n": 3.0}
    assert capsys.readouterr().out == ""   # recorded, not printed: the page shows tables and prose
    record("m", 0.123456, show=True)
    assert capsys.readouterr().out == "m = 0.1235\n"
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
    record("z", 1.0)  # no path: glued only


def test_chapters_are_exactly_the_toc_minus_the_listed_pages(tmp_path) -> None:
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nparts:\n  - caption: A\n    chapters:\n"
                                       "      - file: book/a/api_intro\n      - file: book/a/reproducibility_of_x\n"
                                       "  - caption: Appendix\n    chapters:\n      - file: book/appendix/reproducibility\n")
    assert toc_files(tmp_path) == ["book/intro", "book/a/api_intro", "book/a/reproducibility_of_x", "book/appendix/reproducibility"]
    assert list(chapters(tmp_path)) == ["api_intro", "reproducibility_of_x"]   # no substring rules
    assert set(chapters()) | {Path(p).name for p in NON_CHAPTERS} == {Path(p).name for p in toc_files()}


def test_unknown_chapter_and_profile_are_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown chapter"):
        run_chapter("no_such_chapter", "ci", tmp_path)
    with pytest.raises(ValueError, match="unknown profile"):
        run_chapter(next(iter(chapters())), "fast", tmp_path)


def _notebook(tmp_path: Path, *cells: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_blocked_cell_fails_within_its_timeout_naming_chapter_and_cell(tmp_path) -> None:
    source = _notebook(tmp_path, "profile = 'ci'", "import time\ntime.sleep(600)")
    start = time.perf_counter()
    with pytest.raises(ChapterRunError, match=r"chapter demo.*cell 1 \('import time'\).*timeout 3 s"):
        execute(source, tmp_path / "out.ipynb", {}, cell_timeout=3, label="chapter demo")
    assert time.perf_counter() - start < 60


def test_a_failing_cell_names_chapter_and_cell(tmp_path) -> None:
    source = _notebook(tmp_path, "profile = 'ci'", "raise ValueError('boom')")
    with pytest.raises(ChapterRunError, match="chapter demo: cell 2 raised ValueError: boom"):
        execute(source, tmp_path / "out.ipynb", {}, cell_timeout=30, label="chapter demo")


def test_batch_runs_build_no_widget(tmp_path, monkeypatch) -> None:
    """The explore cells' pattern: under the runner, live_kernel() is false and the slow callback never runs."""
    source = _notebook(tmp_path, "profile = 'ci'",
                       "import time, ipywidgets as widgets\nfrom companion.viz import live_kernel\n"
                       "def slow(x=1):\n    time.sleep(30)\n"
                       "if live_kernel():\n    widgets.interact(slow, x=widgets.IntSlider(1, 0, 5))\n"
                       "print('live' if live_kernel() else 'batch')")
    start = time.perf_counter()
    execute(source, tmp_path / "out.ipynb", {}, cell_timeout=25, label="demo")
    out = json.loads((tmp_path / "out.ipynb").read_text())
    assert "batch" in "".join(out["cells"][-1]["outputs"][0]["text"])
    assert time.perf_counter() - start < 25
    from companion.viz import live_kernel

    assert not live_kernel()   # plain Python, no kernel
    monkeypatch.setenv("COMPANION_BATCH", "1")
    assert not live_kernel()


def test_the_ci_budget_scales_with_a_slower_machine_and_fewer_threads_only() -> None:
    assert ci_budget_s(REFERENCE_WORKLOAD_S, 2, 2) == CI_BUDGET_S
    assert ci_budget_s(REFERENCE_WORKLOAD_S / 3, 2, 2) == CI_BUDGET_S          # a faster machine: never less
    assert ci_budget_s(REFERENCE_WORKLOAD_S * 2.5, 2, 2) == pytest.approx(2.5 * CI_BUDGET_S)
    assert ci_budget_s(REFERENCE_WORKLOAD_S, 1, 2) == 2 * CI_BUDGET_S           # half the cores as threads
    assert ci_budget_s(REFERENCE_WORKLOAD_S, 2, 8) == CI_BUDGET_S               # more cores than two: no gain
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="workload_s"):
            ci_budget_s(bad, 2, 2)
    with pytest.raises((ValueError, TypeError)):
        ci_budget_s(1.0, 0, 2)


def test_the_reference_workload_is_timed_and_its_arguments_checked() -> None:
    seconds = reference_workload_s(1, repeats=1)
    assert 0 < seconds < 60
    with pytest.raises((ValueError, TypeError)):
        reference_workload_s(0)


def test_on_reference_scale_divides_out_the_machine_speed() -> None:
    from companion.regression import on_reference_scale

    assert on_reference_scale(120.0, 2 * REFERENCE_WORKLOAD_S) == pytest.approx(60.0)
    with pytest.raises(ValueError, match="workload_s"):
        on_reference_scale(120.0, 0.0)


def test_glue_skipped_records_nothing_and_checks_names(tmp_path) -> None:
    from companion.record import glue_skipped

    path = use_records_file(tmp_path / "r.json")
    glue_skipped("search_images", "acc_x@0.1")
    assert json.loads(path.read_text()) == {}
    with pytest.raises(ValueError, match="glue name"):
        glue_skipped("1bad")
    use_records_file(None)
