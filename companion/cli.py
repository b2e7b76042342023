"""Command line: ``python -m companion run|check|bless|list|stage-book``."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m companion", description="Run and check the book's chapters.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute one chapter with papermill and write the notebook and its records")
    run.add_argument("chapter")
    run.add_argument("--profile", choices=regression.PROFILES, default="book")
    run.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                     help="extra papermill parameter (VALUE read as a Python literal when possible)")
    run.add_argument("--out", default="_build/runs", help="folder for the executed notebook and records")
    run.add_argument("--check", action="store_true", help="compare the records with tests/expected (ci profile)")
    check = sub.add_parser("check", help="compare a records file with tests/expected/<chapter>.json")
    check.add_argument("chapter")
    check.add_argument("records")
    bless = sub.add_parser("bless", help="write a real run's values into tests/expected/<chapter>.json")
    bless.add_argument("chapter")
    bless.add_argument("records")
    sub.add_parser("list", help="list the chapters of the table of contents")
    stage = sub.add_parser("stage-book", help="copy the book with executed notebooks in place of the sources")
    stage.add_argument("executed_dir")
    stage.add_argument("dest")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, path in regression.chapters().items():
            print(f"{name}\t{path}")
        return 0
    if args.command == "stage-book":
        print(regression.stage_book(args.executed_dir, args.dest))
        return 0
    if args.command == "run":
        params = {k: _parse_value(v) for k, v in args.param}
        result = regression.run_chapter(args.chapter, args.profile, args.out, params)
        print(f"{args.chapter} ({args.profile}): {result.seconds:.1f} s -> {result.notebook}")
        for k, v in sorted(result.records.items()):
            print(f"  {k} = {v:.4g}")
        if not args.check:
            return 0
        records = result.records
    else:
        records = json.loads(Path(args.records).read_text())
    if args.command == "bless":
        print(f"wrote {regression.bless(args.chapter, records)}")
        return 0
    problems = regression.check_records(args.chapter, records)
    for p in problems:
        print("FAIL", p)
    print("all records match" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
