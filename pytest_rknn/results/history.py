"""A history of runs: matrices from a folder of dated runs, oldest first, and what they show
over time (pass rate per target, the cells that flipped between consecutive runs).

A run's date is its ``meta["started"]`` (a merged matrix: its earliest job's start), else the
file's modification time. ``pytest-rknn merge --history DIR`` reads one, and the dashboard and
the terminal show it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pytest_rknn.results.cell import instant
from pytest_rknn.results.compare import Change, diff
from pytest_rknn.results.matrix import Matrix, MatrixError
from pytest_rknn.results.status import Status
from pytest_rknn.views.tally import version_key

Target = tuple[str, str, str]


@dataclass(frozen=True)
class Run:
    """One dated run of the history."""

    label: str
    when: datetime
    matrix: Matrix
    source: str


@dataclass(frozen=True)
class Flip:
    """A cell whose status or signature changed from the run before to ``run``."""

    run: str
    change: Change


def dated(matrix: Matrix, source: str, mtime: float | None = None) -> Run:
    """``matrix`` as a run of a history, dated by its start (or ``mtime``)."""
    started = matrix.meta.get("started")
    when = instant(started) if started else datetime.fromtimestamp(mtime or 0, timezone.utc)
    return Run(when.strftime("%Y-%m-%d %H:%M"), when, matrix, source)


def load_history(folder: str | os.PathLike[str]) -> tuple[list[Run], list[str]]:
    """The matrices in ``folder`` as runs, oldest first (none for a new, empty history), and
    one line per file left out. ``MatrixError`` when the folder does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MatrixError(
            f"history folder {folder} does not exist or is not a folder: give the folder "
            "that holds one matrix JSON per earlier run"
        )
    runs, skipped = [], []
    for path in sorted(folder.glob("*.json")):
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            shown = str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            skipped.append(f"left out {shown}: its name is not UTF-8")
            continue
        try:
            runs.append(dated(Matrix.load(path), str(path), path.stat().st_mtime))
        except (MatrixError, OSError) as exc:
            skipped.append(f"left out {path}: {exc}")
    return sorted(runs, key=lambda r: r.when), skipped


def targets(runs: list[Run]) -> list[Target]:
    """Every (platform, toolkit, quant) of any run, in the views' order."""
    found = {(c.platform, c.toolkit, c.quant) for run in runs for c in run.matrix.cells}
    return sorted(found, key=lambda t: (t[0], version_key(t[1]), t[2]))


def pass_rates(runs: list[Run]) -> dict[Target, list[tuple[int, int] | None]]:
    """Per target, per run: (passed, ran), or None where the run has no cell of the target."""
    rates: dict[Target, list[tuple[int, int] | None]] = {
        t: [None] * len(runs) for t in targets(runs)
    }
    for index, run in enumerate(runs):
        for cell in run.matrix.cells:
            target = (cell.platform, cell.toolkit, cell.quant)
            passed, ran = rates[target][index] or (0, 0)
            if cell.status.ran:
                ran += 1
                passed += cell.status is Status.PASS
            rates[target][index] = (passed, ran)
    return rates


def flips(runs: list[Run]) -> list[Flip]:
    """Cells present in two consecutive runs whose status or signature changed, newest first."""
    found: list[Flip] = []
    for before, after in zip(runs, runs[1:], strict=False):
        for change in diff(before.matrix, after.matrix):
            if change.kind not in ("new", "removed"):
                found.append(Flip(after.label, change))
    return found[::-1]


def history_text(runs: list[Run], limit: int = 20) -> str:
    """Pass/ran per target over the runs, then the latest flips (at most ``limit``)."""
    lines = [f"history: {len(runs)} run(s), {runs[0].label} … {runs[-1].label}"]
    for (platform, toolkit, quant), series in pass_rates(runs).items():
        shown = " → ".join("-" if entry is None else f"{entry[0]}/{entry[1]}" for entry in series)
        lines.append(f"  {platform} / {toolkit} / {quant}: {shown}")
    found = flips(runs)
    lines.append(f"{len(found)} cell(s) flipped between consecutive runs")
    lines += [f"  {flip.run}  {flip.change.describe()}" for flip in found[:limit]]
    if len(found) > limit:
        lines.append(f"  … and {len(found) - limit} more")
    return "\n".join(lines)
