"""The ``merge`` and ``diff`` subcommands: combine per-job matrices, and compare two runs.

``merge`` takes matrix files, folders of them, and the journals of interrupted runs; a file that
cannot be read is named with its problem and left out, and the others are still merged and
written (the exit status then says that something was left out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_rknn.cli import Subcommand, register
from pytest_rknn.dashboard import write_dashboard
from pytest_rknn.matrix import Matrix, MatrixError, diff, merge, summary_text, to_markdown

JOURNAL_SUFFIX = ".journal"


def _inputs(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.glob("*.json") if p.is_file())
            found += sorted(path.glob(f"*.json{JOURNAL_SUFFIX}"))
        else:
            found.append(path)
    return found


def _load(path: Path) -> Matrix:
    if path.name.endswith(JOURNAL_SUFFIX):
        return Matrix.from_journal(path)
    return Matrix.load(path)


def _configure_merge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, help="matrix files, folders, journals")
    parser.add_argument("-o", "--output", type=Path, required=True, help="merged matrix JSON")
    parser.add_argument("--markdown", type=Path, help="also write a Markdown summary here")
    parser.add_argument("--html", type=Path, help="also write the HTML dashboard here")


def _run_merge(args: argparse.Namespace) -> int:
    paths = _inputs(args.inputs)
    output = args.output.resolve()
    matrices, bad = [], 0
    for path in paths:
        if path.resolve() == output:
            continue
        try:
            matrices.append(_load(path))
        except (MatrixError, OSError, ValueError) as exc:
            print(f"pytest-rknn merge: left out {path}: {exc}", file=sys.stderr)
            bad += 1
    if not matrices:
        print(
            "pytest-rknn merge: error: no readable matrix among the inputs; "
            "give the --rknn-matrix files of earlier runs",
            file=sys.stderr,
        )
        return 2
    merged = merge(matrices)
    merged.write(args.output)
    if args.markdown:
        args.markdown.write_text(to_markdown(merged), encoding="utf-8")
    if args.html:
        write_dashboard(merged, args.html)
    print(summary_text(merged))
    print(f"merged {len(matrices)} matrices, {len(merged.cells)} cells -> {args.output}")
    return 1 if bad else 0


def _configure_diff(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", type=Path, help="the earlier matrix")
    parser.add_argument("new", type=Path, help="the later matrix")


def _run_diff(args: argparse.Namespace) -> int:
    try:
        old, new = Matrix.load(args.old), Matrix.load(args.new)
    except MatrixError as exc:
        print(f"pytest-rknn diff: error: {exc}", file=sys.stderr)
        return 2
    changes = diff(old, new)
    for change in changes:
        print(change.describe())
    regressions = sum(1 for c in changes if c.kind == "regression")
    print(f"{len(changes)} changes, {regressions} regressions")
    return 1 if regressions else 0


register(
    Subcommand(
        "merge",
        "merge matrix files into one (and a Markdown summary)",
        _configure_merge,
        _run_merge,
    )
)
register(
    Subcommand("diff", "compare two matrices; exit 1 on regressions", _configure_diff, _run_diff)
)
