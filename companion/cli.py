"""Command line: ``python -m companion run|check|calibrate|bless|list|book|stage-book|check-html|runtimes|notebooks``."""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

from . import regression


def _parse_value(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _report(problems: list[str]) -> int:
    for p in problems:
        print("FAIL", p)
    print("all records match" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m companion", description="Run, check and publish the book's chapters.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute one chapter with papermill and write the notebook and its records")
    run.add_argument("chapter")
    run.add_argument("--profile", choices=regression.PROFILES, default="book")
    run.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                     help="extra papermill parameter (VALUE read as a Python literal when possible)")
    run.add_argument("--out", default="_build/runs", help="folder for the executed notebook and records")
    run.add_argument("--cell-timeout", type=int, default=None, help="seconds any one cell may take (default by profile)")
    run.add_argument("--check", action="store_true", help="compare the records with tests/expected")
    run.add_argument("--time-workload", action="store_true",
                     help="time the reference workload around the run, so that its time can be read on the "
                          "reference machine's scale (python -m companion runtimes)")
    check = sub.add_parser("check", help="compare a records file with tests/expected/<chapter>.json")
    check.add_argument("chapter")
    check.add_argument("records")
    check.add_argument("--profile", choices=("ci", "book"), default="ci", help="book: claims only")
    cal = sub.add_parser("calibrate", help="run the ci profile over seeds, thread counts and CPU kernels; "
                                           "write tolerances and claim statuses from the measured spread")
    cal.add_argument("chapters", nargs="*", help="default: every chapter")
    cal.add_argument("--variants", nargs="*", default=None, help="subset of companion.calibration.VARIANTS")
    bless = sub.add_parser("bless", help="rewrite tests/expected/<chapter>.json from its current calibration runs")
    bless.add_argument("chapters", nargs="+")
    sub.add_parser("list", help="list the chapters of the table of contents")
    book = sub.add_parser("book", help="execute every chapter (cached), check its claims, build the HTML book")
    book.add_argument("--profile", choices=("ci", "book"), default="book")
    book.add_argument("--jobs", type=int, default=1, help="chapters run at once (torch threads split between them)")
    book.add_argument("--out", default=None, help="build folder (default _build/<profile>, student: _build/<profile>-student)")
    book.add_argument("--edition", choices=("full", "student"), default="full",
                      help="student: the same pages without the exercises' solutions, from the runs of the full edition")
    stage = sub.add_parser("stage-book", help="copy the book with executed notebooks in place of the sources")
    stage.add_argument("executed_dir")
    stage.add_argument("dest")
    html = sub.add_parser("check-html", help="check a built HTML book: tables, local math, no injected cells")
    html.add_argument("html_dir")
    html.add_argument("--edition", choices=("full", "student"), default="full", help="student: no solution may show")
    times = sub.add_parser("runtimes", help="the README's runtime table from the last ci and book builds")
    times.add_argument("--write-readme", action="store_true", help="replace the table in README.md")
    nbs = sub.add_parser("notebooks", help="the chapters as reader notebooks (plain Jupyter Markdown, an install cell "
                                           "for Colab) in OUT/<part>/<chapter>.ipynb")
    nbs.add_argument("--out", default="_build/notebooks", help="output folder (default _build/notebooks)")
    nbs.add_argument("--runs", default="_build/book/runs",
                     help="executed chapters whose current runs supply the glued values (default _build/book/runs)")
    nbs.add_argument("--profile", choices=("ci", "book"), default="book", help="the profile of those runs")
    nbs.add_argument("--commit", action="store_true",
                     help="also commit them, next to their sources, onto the notebooks branch (repository.notebooks_branch "
                          "of _config.yml: HEAD's tree plus the notebooks; CI pushes it)")
    args = parser.parse_args(argv)
    named = [args.chapter] if hasattr(args, "chapter") else getattr(args, "chapters", [])
    known = regression.chapters() if named else {}
    for name in named:
        if name not in known:   # argparse's error: the usage and the message on stderr, exit status 2
            parser.error(f"unknown chapter {name!r}; the table of contents lists {', '.join(sorted(known))}")

    if args.command == "list":
        for name, path in regression.chapters().items():
            print(f"{name}\t{path}")
        return 0
    if args.command == "calibrate":
        from . import calibration

        calibration.calibrate(args.chapters or sorted(regression.chapters()), args.variants)
        return 0
    if args.command == "bless":
        from . import calibration

        for name in args.chapters:
            print(f"wrote {calibration.bless(name)}")
        return 0
    if args.command == "notebooks":
        from . import notebooks

        runs = Path(args.runs)
        notebooks.write_notebooks(Path(args.out), runs=runs, profile=args.profile)
        if args.commit:
            branch = notebooks.notebooks_branch(notebooks.book_config())
            print(f"committed the reader notebooks onto {branch}: "
                  f"{notebooks.commit_reader_notebooks(runs=runs, profile=args.profile)}")
        return 0
    if args.command in ("book", "stage-book", "check-html", "runtimes"):
        from . import bookbuild

        if args.command == "runtimes":
            print(bookbuild.write_readme_runtimes() if args.write_readme else bookbuild.runtime_table())
            return 0
        if args.command == "book":
            return bookbuild.build(args.profile, jobs=args.jobs, out=Path(args.out) if args.out else None,
                                   edition=args.edition)
        if args.command == "stage-book":
            print(bookbuild.stage(Path(args.executed_dir), Path(args.dest)))
            return 0
        student = bookbuild.check_student_html(Path(args.html_dir)) if args.edition == "student" else []
        return _report(bookbuild.check_html(Path(args.html_dir)) + student)
    if args.command == "run":
        params = {k: _parse_value(v) for k, v in args.param}
        result = regression.run_chapter(args.chapter, args.profile, args.out, params, cell_timeout=args.cell_timeout,
                                        time_workload=args.time_workload)
        scaled = ("" if result.workload_s is None else
                  f" ({regression.on_reference_scale(result.seconds, result.workload_s):.0f} s on the reference "
                  f"scale; reference workload {result.workload_s:.2f} s)")
        print(f"{args.chapter} ({args.profile}): {result.seconds:.1f} s{scaled} -> {result.notebook}")
        for k, v in sorted(result.records.items()):
            print(f"  {k} = {v:.4g}")
        if not args.check:
            return 0
        return _report(regression.check_chapter(args.chapter, result.records, "ci" if args.profile == "ci" else "book"))
    records = json.loads(Path(args.records).read_text())
    return _report(regression.check_chapter(args.chapter, records, args.profile))


if __name__ == "__main__":
    sys.exit(main())
