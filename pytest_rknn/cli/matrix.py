"""The ``merge`` and ``diff`` subcommands: combine per-job matrices, and compare two runs.

``merge`` takes matrix files, folders of them, and the journals of interrupted runs; the journal
beside a matrix file (a run that was killed, or could not write its matrix) is read with it. A
file that cannot be read is named with its problem and left out, and the others are still
merged and written (the exit status then says that something was left out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_rknn.cli.main import Subcommand, register
from pytest_rknn.results.compare import diff, merge
from pytest_rknn.results.journal import JOURNAL_SUFFIX, atomic_write_text, journal_path
from pytest_rknn.results.matrix import Matrix, MatrixError
from pytest_rknn.results.shards import shard_problem
from pytest_rknn.views.dashboard import write_dashboard
from pytest_rknn.views.markdown import to_markdown
from pytest_rknn.views.text import summary_text


def _inputs(paths: list[Path]) -> list[Path]:
    """Matrix files and journals, each once: folders' contents, and each file's journal."""
    found: dict[Path, Path] = {}
    for path in paths:
        if path.is_dir():
            listed = sorted(p for p in path.glob("*.json") if p.is_file())
            listed += sorted(p for p in path.glob(f"*{JOURNAL_SUFFIX}") if p.is_file())
        else:
            listed = [path]
        for item in listed:
            found.setdefault(item.resolve(), item)
            beside = journal_path(item)
            if not item.name.endswith(JOURNAL_SUFFIX) and beside.is_file():
                found.setdefault(beside.resolve(), beside)
    return list(found.values())


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
    named = {p.resolve() for p in args.inputs}
    matrices, bad, read = [], 0, []
    for path in paths:
        if path.resolve() == output and output not in named:
            continue
        try:
            matrices.append(_load(path))
            read.append(path)
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
    problem = shard_problem(list(zip(read, matrices, strict=True)))
    if problem:
        print(f"pytest-rknn merge: error: {problem}", file=sys.stderr)
        return 2
    merged = merge(matrices)
    merged.meta.pop("shard", None)  # whole runs now, not one shard
    try:
        merged.write(args.output)
        if args.markdown:
            atomic_write_text(args.markdown, to_markdown(merged))
        if args.html:
            write_dashboard(merged, args.html)
    except OSError as exc:
        print(
            f"pytest-rknn merge: error: cannot write {exc.filename or args.output}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    print(summary_text(merged))
    journals = sum(1 for m in matrices if "journal" in m.meta)
    read = f"{len(matrices) - journals} matrix file(s)" + (
        f" and {journals} journal(s)" if journals else ""
    )
    print(f"merged {read}: {len(merged)} cell(s) -> {args.output}")
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
