"""Counting a matrix for its views: pass/ran per platform and toolkit, top signatures, and a
row per model the user brought.

The helpers read only the cells' ``platform``, ``toolkit``, ``quant``, ``status`` (a
:class:`~pytest_rknn.results.status.Status`), ``signature`` and ``variant_id``, so they work on
any iterable of records (``Matrix.cells``). What counts as failing or as ran comes from the
status vocabulary.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.status import Status


def cells_of(matrix: Any) -> list[CellRecord]:
    """The cells of a matrix, or the iterable of cells itself."""
    return list(matrix.cells if hasattr(matrix, "cells") else matrix)


def failing_cells(matrix: Any) -> list[CellRecord]:
    return [c for c in cells_of(matrix) if c.status.failing]


def version_key(label: str) -> tuple[Any, ...]:
    """Sort key putting ``2.2.0 < 2.3.0 < 2.10.0`` and non-version labels after them."""
    parts = re.findall(r"\d+|[A-Za-z]+", label)
    if not parts or not parts[0].isdigit():
        return (1, label)
    return (0, *[(0, int(p)) if p.isdigit() else (1, p) for p in parts])


def grid(
    cells: list[CellRecord],
) -> tuple[list[str], list[str], dict[tuple[str, str], Counter[Status]]]:
    """Row names (platform, with the quant mode when there are several), toolkit columns, and
    the status counts of each (row, column)."""
    quants = sorted({c.quant for c in cells})
    rows = sorted({(c.platform, c.quant) for c in cells})
    row_names = [p if len(quants) == 1 else f"{p} {q}" for p, q in rows]
    columns = sorted({c.toolkit for c in cells}, key=version_key)
    counts: dict[tuple[str, str], Counter[Status]] = {}
    for cell in cells:
        name = cell.platform if len(quants) == 1 else f"{cell.platform} {cell.quant}"
        counts.setdefault((name, cell.toolkit), Counter())[cell.status] += 1
    return row_names, columns, counts


def family_table(cells: list[CellRecord]) -> list[list[str]]:
    """Pass/ran of the whole-model (``hf``) cells per family (rows) and platform x toolkit
    (columns), header row first; empty when the run has no hf cells."""
    hf = [c for c in cells if c.variant.get("form") == "hf"]
    if not hf:
        return []
    columns = sorted({(c.platform, c.toolkit) for c in hf}, key=lambda t: (t[0], version_key(t[1])))
    counts: dict[tuple[str, str, str], Counter[Status]] = {}
    for c in hf:
        key = (str(c.variant.get("family")), c.platform, c.toolkit)
        counts.setdefault(key, Counter())[c.status] += 1
    table = [["family", *[f"{p} {t}" for p, t in columns]]]
    for family in sorted({f for f, _p, _t in counts}):
        table.append([family, *[pass_ran(counts.get((family, p, t))) for p, t in columns]])
    return table


def pass_ran(counter: Counter[Status] | None) -> str:
    """``passed/ran`` of one grid entry, ``-`` when empty, the status when none ran (e.g.
    ``unsupported``, ``export-fail``)."""
    if not counter:
        return "-"
    ran = sum(n for status, n in counter.items() if status.ran)
    if ran == 0:
        skipped = {status for status, n in counter.items() if n}
        return skipped.pop().value if len(skipped) == 1 else Status.UNSUPPORTED.value
    return f"{counter[Status.PASS]}/{ran}"


def status_line(cells: list[CellRecord]) -> str:
    """``248 cells: 192 pass, 56 fail (convert-fail 56), 8 unsupported``."""
    counts = Counter(c.status for c in cells)
    failing = {s: n for s, n in counts.items() if s.failing}
    noun = "cell" if len(cells) == 1 else "cells"
    text = f"{len(cells)} {noun}: {counts[Status.PASS]} pass, {sum(failing.values())} fail"
    if failing:
        text += " (" + ", ".join(f"{s.value} {n}" for s, n in sorted(failing.items())) + ")"
    for status, n in counts.items():
        if not status.ran:
            text += f", {n} {status.value}"
    return text


def top_signatures(matrix: Any, limit: int = 8) -> list[tuple[str, int, list[str]]]:
    """The most common signatures of failing cells: (signature, count, where it occurs)."""
    groups: dict[str, list[CellRecord]] = {}
    for cell in failing_cells(matrix):
        groups.setdefault(cell.signature or cell.status.value, []).append(cell)
    ranked = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))[:limit]
    result = []
    for signature, members in ranked:
        places = sorted(
            {(c.platform, c.toolkit) for c in members}, key=lambda p: (p[0], version_key(p[1]))
        )
        result.append((signature, len(members), [f"{p}/{t}" for p, t in places]))
    return result


@dataclass(frozen=True)
class ModelRow:
    """One model the user brought (``--rknn-model``, the ``rknn`` fixture): its targets passed,
    its worst metric (lowest cosine of any output on any target) and its failures."""

    name: str
    variant_id: str
    passed: int
    ran: int
    targets: int
    worst_cosine: float | None
    worst_where: str
    failing: dict[str, int]

    def line(self) -> str:
        """``my_bert.onnx: 3/8 targets pass; worst cosine 0.98121 (last_hidden_state,
        rk3588/2.5.0 fp16); convert-fail 4, tolerance-fail 1``."""
        text = f"{self.name}: {self.passed}/{self.targets} targets pass"
        if self.ran != self.targets:
            text += f" ({self.targets - self.ran} not run)"
        if self.worst_cosine is not None:
            text += f"; worst cosine {self.worst_cosine:.5f} ({self.worst_where})"
        if self.failing:
            text += "; " + ", ".join(f"{s} {n}" for s, n in sorted(self.failing.items()))
        return text


def model_rows(matrix: Any) -> list[ModelRow]:
    """A :class:`ModelRow` per user model of the matrix (cells of the ``model`` form)."""
    groups: dict[str, list[CellRecord]] = {}
    for cell in cells_of(matrix):
        if cell.variant.get("form") == "model":
            groups.setdefault(cell.variant_id, []).append(cell)
    rows = []
    for variant_id, cells in sorted(groups.items()):
        path = cells[0].variant.get("path")
        name = str(path).replace("\\", "/").rsplit("/", 1)[-1] if path else variant_id
        worst: tuple[float, str] | None = None
        for cell in cells:
            for output, metrics in (cell.metrics or {}).items():
                cosine = metrics.get("cosine")
                if isinstance(cosine, float) and (worst is None or cosine < worst[0]):
                    worst = (cosine, f"{output}, {cell.platform}/{cell.toolkit} {cell.quant}")
        failing = Counter(c.status.value for c in cells if c.status.failing)
        rows.append(
            ModelRow(
                name=name,
                variant_id=variant_id,
                passed=sum(c.status is Status.PASS for c in cells),
                ran=sum(c.status.ran for c in cells),
                targets=len(cells),
                worst_cosine=worst[0] if worst else None,
                worst_where=worst[1] if worst else "",
                failing=dict(failing),
            )
        )
    return rows
