"""How placement changed between two sets of cells: attention that left the NPU or came back,
more or fewer CPU ops, and the memory's median change.

:func:`placement_diff` pairs cells (two runs, or two toolkit versions of one matrix, as
:mod:`~pytest_rknn.results.compare` pairs them) and compares the ``placement`` of each pair whose
two layer tables were both read. A regression is an attention op that moved to the CPU, or,
with the attention where it was, more ops on the CPU. Views format the report; nothing here
prints.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_rknn.results.cell import CellRecord, Key
from pytest_rknn.verdict.placement import attention_on_npu

KINDS = {
    "attention-to-cpu": "attention left the NPU",
    "attention-to-npu": "attention back on the NPU",
    "more-cpu-ops": "more CPU ops",
    "fewer-cpu-ops": "fewer CPU ops",
}
REGRESSIONS = frozenset({"attention-to-cpu", "more-cpu-ops"})


def readable(cell: CellRecord | None) -> dict[str, Any] | None:
    """The cell's placement when its layer table was read, else None."""
    placement = getattr(cell, "placement", None)
    return placement if placement and "error" not in placement else None


@dataclass(frozen=True)
class PlacementChange:
    """One cell whose placement moved (``kind``: a key of :data:`KINDS`)."""

    kind: str
    key: Key
    cpu_before: int
    cpu_after: int

    @property
    def regression(self) -> bool:
        return self.kind in REGRESSIONS

    def describe(self) -> str:
        variant, platform, toolkit, quant = self.key
        return (
            f"{KINDS[self.kind]:<26} {variant} @ {platform} / {toolkit} / {quant}: "
            f"CPU ops {self.cpu_before} -> {self.cpu_after}"
        )


@dataclass(frozen=True)
class PlacementReport:
    """The placement changes of a comparison, over ``compared`` pairs with both tables read."""

    changes: tuple[PlacementChange, ...]
    compared: int
    internal_change: float | None
    weight_change: float | None

    @property
    def regressions(self) -> list[PlacementChange]:
        return [c for c in self.changes if c.regression]

    def counts(self) -> dict[str, int]:
        kinds = [c.kind for c in self.changes]
        return {kind: kinds.count(kind) for kind in KINDS}

    def headline(self) -> str:
        """``attention left the NPU in 0 cells, back on the NPU in 1, more CPU ops in 0, fewer
        in 0; internal memory -12 % median (31 cells)``"""
        n = self.counts()
        text = (
            f"attention left the NPU in {n['attention-to-cpu']} cells, back on the NPU in "
            f"{n['attention-to-npu']}, more CPU ops in {n['more-cpu-ops']}, fewer in "
            f"{n['fewer-cpu-ops']}"
        )
        memory = [
            f"{name} memory {change:+.0%} median"
            for name, change in (("internal", self.internal_change), ("weight", self.weight_change))
            if change is not None
        ]
        return text + (f"; {', '.join(memory)}" if memory else "") + f" ({self.compared} cells)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "counts": self.counts(),
            "regressions": len(self.regressions),
            "internal_memory_median_change": self.internal_change,
            "weight_memory_median_change": self.weight_change,
            "changes": [
                {
                    "kind": c.kind,
                    "variant_id": c.key[0],
                    "platform": c.key[1],
                    "toolkit": c.key[2],
                    "quant": c.key[3],
                    "cpu_ops_before": c.cpu_before,
                    "cpu_ops_after": c.cpu_after,
                }
                for c in self.changes
            ],
        }


def _kind(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    was, now = attention_on_npu(before), attention_on_npu(after)
    if was is True and now is False:
        return "attention-to-cpu"
    if was is False and now is True:
        return "attention-to-npu"
    if after.get("cpu_ops", 0) > before.get("cpu_ops", 0):
        return "more-cpu-ops"
    if after.get("cpu_ops", 0) < before.get("cpu_ops", 0):
        return "fewer-cpu-ops"
    return None


def _median_change(values: list[tuple[int, int]]) -> float | None:
    ratios = [b / a - 1 for a, b in values if a and b is not None and a > 0]
    return round(statistics.median(ratios), 4) if ratios else None


def placement_diff(
    pairs: Iterable[tuple[CellRecord | None, CellRecord | None]],
) -> PlacementReport:
    """The placement changes over ``(before, after)`` cell pairs (a change's key: the
    ``after`` cell's)."""
    changes, compared = [], 0
    internal: list[tuple[int, int]] = []
    weight: list[tuple[int, int]] = []
    for old, new in pairs:
        before, after = readable(old), readable(new)
        if before is None or after is None or new is None:
            continue
        compared += 1
        kind = _kind(before, after)
        if kind is not None:
            key = new.key
            changes.append(PlacementChange(kind, key, before["cpu_ops"], after["cpu_ops"]))
        for name, into in (("internal_bytes", internal), ("weight_bytes", weight)):
            a, b = before["memory"].get(name), after["memory"].get(name)
            if a and b:
                into.append((a, b))
    return PlacementReport(
        tuple(changes), compared, _median_change(internal), _median_change(weight)
    )
