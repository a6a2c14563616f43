"""The ``merge`` and ``diff`` subcommands: combine per-job matrices, and compare two runs.

``diff OLD NEW`` (or ``diff --toolkits A B MATRIX``) prints the counts of fixed / regressed /
changed / new / removed / unchanged cells and the changed cells, as text, ``--json`` or
``--markdown``, with the placement changes (attention that left the NPU, more CPU ops, memory);
it exits 1 only when a cell regressed, or with ``--fail-on-placement`` when placement regressed
(2 for unusable input).

``merge`` takes matrix files, folders of them, and the journals of interrupted runs; the journal
beside a matrix file (a run that was killed, or could not write its matrix) is read with it. A
file that cannot be read is named with its problem and left out, and the others are still
merged and written (the exit status then says that something was left out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pytest_rknn.cli.main import Subcommand, register
from pytest_rknn.results.compare import DiffReport, compare, merge, toolkit_diff
from pytest_rknn.results.history import Run, dated, history_text, load_history
from pytest_rknn.results.journal import (
    JOURNAL_SUFFIX,
    atomic_write_text,
    journal_path,
    read_journal_header,
)
from pytest_rknn.results.matrix import Matrix, MatrixError
from pytest_rknn.results.shards import shard_problem
from pytest_rknn.views.dashboard import write_dashboard
from pytest_rknn.views.markdown import diff_markdown, to_markdown
from pytest_rknn.views.text import diff_text, summary_text


def not_utf8(path: Path) -> str | None:
    """How to show ``path`` if its name is not UTF-8 (None: it is)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return None


def _named(path: Path) -> bool:
    """Whether a file found in a folder has a UTF-8 name (else it is left out, with a line)."""
    shown = not_utf8(path)
    if shown is not None:
        print(f"pytest-rknn merge: left out {shown}: its name is not UTF-8", file=sys.stderr)
    return shown is None


def _inputs(paths: list[Path]) -> list[Path]:
    """Matrix files and journals, each once: folders' contents, and each file's journal."""
    found: dict[Path, Path] = {}
    for path in paths:
        if path.is_dir():
            listed = sorted(p for p in path.glob("*.json") if p.is_file() and _named(p))
            listed += sorted(
                p for p in path.glob(f"*{JOURNAL_SUFFIX}") if p.is_file() and _named(p)
            )
            if not listed:
                print(f"pytest-rknn merge: folder {path} holds no *.json matrix", file=sys.stderr)
        else:
            listed = [path]
        for item in listed:
            found.setdefault(item.resolve(), item)
            beside = journal_path(item)
            journal = not item.name.endswith(JOURNAL_SUFFIX) and beside.is_file()
            if journal and _same_run(item, beside):
                found.setdefault(beside.resolve(), beside)
    return list(found.values())


def _same_run(matrix: Path, journal: Path) -> bool:
    """Whether ``journal`` (beside ``matrix``) was written by the run that wrote ``matrix``:
    the same ``run_id`` in both (or, for files without one, the same start). A stale journal
    of another run is left out with a line saying how to merge it on purpose."""
    try:
        mine = Matrix.load(matrix).meta
        header = read_journal_header(journal)
    except (MatrixError, OSError, ValueError):
        return True  # the matrix is left out with its own line; the journal is read alone
    key = "run_id" if mine.get("run_id") or header.get("run_id") else "started"
    if mine.get(key) == header.get(key):
        return True
    print(
        f"pytest-rknn merge: left out {journal}: it is the journal of another run "
        f"({key} {header.get(key)!r}, {matrix} has {mine.get(key)!r}); name it as an input "
        "to merge its cells anyway",
        file=sys.stderr,
    )
    return False


def _load(path: Path) -> Matrix:
    if path.name.endswith(JOURNAL_SUFFIX):
        return Matrix.from_journal(path)
    return Matrix.load(path)


def conflict_lines(conflicts: list[dict]) -> list[str]:
    """One line per conflict of a merge: which result was kept and which dropped."""
    if not conflicts:
        return []
    lines = [f"{len(conflicts)} conflict(s): inputs disagree on these cells (the later is kept):"]
    for c in conflicts:
        kept, dropped = c["kept"], c["dropped"]
        lines.append(
            f"  {c['variant_id']} @ {c['platform']} / {c['toolkit']} / {c['quant']}: kept "
            f"{_brief(kept)}, dropped {_brief(dropped)}"
        )
    return lines


def _brief(side: dict) -> str:
    text = str(side.get("status"))
    if side.get("signature"):
        text += f" ({side['signature']})"
    return text + f" of {side.get('finished') or 'unknown time'}"


def _configure_merge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="*", type=Path, help="matrix files, folders, journals (today's run)"
    )
    parser.add_argument(
        "--history",
        type=Path,
        metavar="DIR",
        help="a folder of earlier runs' matrices: print the pass rate per target over time "
        "and the cells that flipped, and add the history to the --html dashboard",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="merged matrix JSON")
    parser.add_argument("--markdown", type=Path, help="also write a Markdown summary here")
    parser.add_argument("--html", type=Path, help="also write the HTML dashboard here")


def _run_merge(args: argparse.Namespace) -> int:
    given = [*args.inputs, args.output, args.markdown, args.html, args.history]
    for path in (p for p in given if p is not None):
        shown = not_utf8(path)
        if shown is not None:
            print(
                f"pytest-rknn merge: error: {shown}: the path is not valid UTF-8 (a matrix "
                "stores paths as UTF-8 text): rename it, or give another path",
                file=sys.stderr,
            )
            return 2
    runs: list[Run] = []
    if args.history is not None:
        try:
            runs, skipped = load_history(args.history)
        except MatrixError as exc:
            print(f"pytest-rknn merge: error: {exc}", file=sys.stderr)
            return 2
        for line in skipped:
            print(f"pytest-rknn merge: {line}", file=sys.stderr)
    if not args.inputs and not runs:
        where = (
            f"history folder {args.history} holds no readable matrix (*.json): copy each run's "
            "--rknn-matrix file there (e.g. named by date), or give today's matrices"
            if args.history is not None
            else "nothing to merge: give matrix files or folders, or --history DIR"
        )
        print(f"pytest-rknn merge: error: {where}", file=sys.stderr)
        return 2
    if not args.inputs:
        return _write_outputs(args, runs[-1].matrix, runs, 0, "the latest run of the history")
    paths = _inputs(args.inputs)
    output = args.output.resolve()
    named = {p.resolve() for p in args.inputs}
    matrices, bad, paths_read = [], 0, []
    for path in paths:
        if path.resolve() == output and output not in named:
            continue
        try:
            matrices.append(_load(path))
            paths_read.append(path)
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
    problem = shard_problem(list(zip(paths_read, matrices, strict=True)))
    if problem:
        if bad:
            problem += f"; {bad} file(s) were left out above as unreadable: it may be one of them"
        print(f"pytest-rknn merge: error: {problem}", file=sys.stderr)
        return 2
    merged = merge(matrices)
    merged.meta.pop("shard", None)  # whole runs now, not one shard
    if runs:
        runs = [*runs, dated(merged, "the merged inputs")]
    journals = sum(1 for m in matrices if "journal" in m.meta)
    read = f"{len(matrices) - journals} matrix file(s)" + (
        f" and {journals} journal(s)" if journals else ""
    )
    return _write_outputs(args, merged, runs, bad, read)


def _write_outputs(
    args: argparse.Namespace, merged: Matrix, runs: list[Run], bad: int, read: str
) -> int:
    previous = runs[-2].matrix if len(runs) >= 2 else None
    try:
        merged.write(args.output)
        if args.markdown:
            atomic_write_text(args.markdown, to_markdown(merged))
        if args.html:
            write_dashboard(merged, args.html, previous=previous, history=runs or None)
    except OSError as exc:
        print(
            f"pytest-rknn merge: error: cannot write {exc.filename or args.output}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    print(summary_text(merged))
    for line in conflict_lines(merged.meta.get("conflicts") or []):
        print(line)
    if runs:
        print(history_text(runs))
    print(f"merged {read}: {len(merged)} cell(s) -> {args.output}")
    return 1 if bad else 0


def _configure_diff(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "matrices",
        nargs="+",
        type=Path,
        metavar="MATRIX",
        help="OLD NEW: an earlier and a later matrix; or one MATRIX with --toolkits",
    )
    parser.add_argument(
        "--toolkits",
        nargs=2,
        metavar=("A", "B"),
        help="compare toolkit version A with version B inside one matrix, per platform",
    )
    parser.add_argument(
        "--fail-on-placement",
        action="store_true",
        help="exit 1 also when placement regressed (an attention op moved to the CPU, or more "
        "ops run on the CPU)",
    )
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print the report as JSON")
    form.add_argument(
        "--markdown",
        action="store_true",
        help='print the report as Markdown (e.g. >> "$GITHUB_STEP_SUMMARY")',
    )


def _diff_reports(args: argparse.Namespace) -> list[DiffReport]:
    """The reports ``diff`` prints; ``ValueError`` (one line, with the fix) on bad input."""
    paths = args.matrices
    if args.toolkits:
        if len(paths) != 1:
            raise ValueError(
                f"--toolkits A B compares two versions inside one matrix, got {len(paths)} "
                "files: give exactly one MATRIX"
            )
        return toolkit_diff(Matrix.load(paths[0]), *args.toolkits)
    if len(paths) != 2:
        raise ValueError(
            f"got {len(paths)} file(s): give OLD NEW (two matrices), "
            "or --toolkits A B MATRIX to compare two versions inside one"
        )
    old, new = Matrix.load(paths[0]), Matrix.load(paths[1])
    return [compare(old, new, f"{paths[0]} → {paths[1]}")]


def _run_diff(args: argparse.Namespace) -> int:
    try:
        reports = _diff_reports(args)
    except (MatrixError, ValueError) as exc:
        print(f"pytest-rknn diff: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"reports": [r.to_dict() for r in reports]}, indent=1))
    elif args.markdown:
        print(diff_markdown(reports), end="")
    else:
        print(diff_text(reports))
    if any(r.regressions for r in reports):
        return 1
    moved = any(r.placement is not None and r.placement.regressions for r in reports)
    return 1 if args.fail_on_placement and moved else 0


register(
    Subcommand(
        "merge",
        "merge matrix files into one (and a Markdown summary)",
        _configure_merge,
        _run_merge,
    )
)
register(
    Subcommand(
        "diff",
        "compare two matrices (or two toolkits in one); exit 1 only on regressions",
        _configure_diff,
        _run_diff,
    )
)
