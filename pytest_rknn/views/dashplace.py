"""What the dashboard shows of placement, as plain data (:mod:`.dashdata` puts it in the page).

Each cell gets a placement class for the grid's filter and overlay (:data:`CLASSES`: all on the
NPU, some op on the CPU, attention on the CPU; -1 when its table is missing or unreadable), and
its cell panel the layer table (CPU rows flagged) and the memory. Diff reports and the history
get how the placement moved (:mod:`~pytest_rknn.results.placement_diff`); the page also gets
the chip comparison of :mod:`.placement`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.placement_diff import placement_diff
from pytest_rknn.verdict.placement import attention_on_npu, placement_class

CLASSES = ("all-on-npu", "some-on-cpu", "attention-on-cpu")
LABELS = ("all ops on the NPU", "some op on the CPU", "attention on the CPU")
MAX_LAYERS = 400


def placement_index(cell: CellRecord) -> int:
    """The cell's index in :data:`CLASSES`, or -1."""
    found = placement_class(cell.placement)
    return CLASSES.index(found) if found else -1


def placement_detail(cell: CellRecord) -> dict[str, Any] | None:
    """The cell panel's placement: the counts, fused kernels, memory, cycle estimates and the
    layer table (``[id, op, dtype, target, attention, name]``, at most :data:`MAX_LAYERS`
    rows); ``{"error": why}`` when the table could not be read; None without one."""
    placement = cell.placement
    if not placement:
        return None
    if "error" in placement:
        return {"error": str(placement["error"])}
    layers = [
        [r.get("id"), r.get("op"), r.get("dtype"), r.get("target"), bool(r.get("attention"))]
        + [r.get("name") or ""]
        for r in placement.get("layers", [])
    ]
    on_npu = attention_on_npu(placement)
    return {
        "npu_ops": placement.get("npu_ops"),
        "cpu_ops": placement.get("cpu_ops"),
        "attention_on_npu": on_npu,
        "fused": placement.get("fused", []),
        "dtypes": placement.get("dtypes", {}),
        "memory": placement.get("memory", {}),
        "cycles": placement.get("cycles", {}),
        "tables": placement.get("tables"),
        "layers": layers[:MAX_LAYERS],
        "layers_left_out": max(0, len(layers) - MAX_LAYERS),
    }


def placement_report(report: Any, where: dict[tuple[str, ...], int]) -> dict[str, Any] | None:
    """A diff report's placement part: its headline and changes, or None when no pair of
    cells had both tables."""
    moved = getattr(report, "placement", None)
    if moved is None or not moved.compared:
        return None
    return {
        "headline": moved.headline(),
        "regressions": len(moved.regressions),
        "changes": [
            [where.get(c.key, -1), c.kind, "/".join(c.key), c.cpu_before, c.cpu_after]
            for c in moved.changes
        ],
    }


def history_placement(runs: Sequence[Any]) -> list[list[str]]:
    """Per pair of consecutive runs, how the placement moved: ``[run, headline]``."""
    lines = []
    for before, after in zip(runs, runs[1:], strict=False):
        old, new = before.matrix, after.matrix
        keys = sorted(set(old.keys()) & set(new.keys()))
        moved = placement_diff((old.get(k), new.get(k)) for k in keys)
        if moved.compared:
            lines.append([after.label, moved.headline()])
    return lines
