"""Spreading a run's cells over pytest-xdist workers so that each starts few toolkit workers.

Owns :func:`units` (the cells cut into scheduling units: with at least as many toolkits as
xdist workers, whole toolkits packed into one unit per worker by estimated cost, the costliest
first onto the least-loaded unit; with fewer, each toolkit's cells cut into enough
cost-balanced parts), :func:`unit_names` (the unit of each cell, by cell id) and
:func:`make_scheduling` (pytest-xdist's ``loadscope`` scheduling with these units as scopes:
what ``-n N`` uses unless ``--dist`` names another mode). A pytest-xdist worker computes the
same units from the same collection (:func:`unit_names` is a pure function of the cells and
the worker count), so it knows which cells it will run next.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pytest_rknn.pipeline.shard import cell_cost, partition

if TYPE_CHECKING:
    from pytest_rknn.pipeline.plan import CellSpec

PREFIX = "rknn-unit:"


def units(cells: Sequence[CellSpec], workers: int) -> list[list[CellSpec]]:
    """``cells`` cut into units for ``workers`` xdist workers (each keeps the cells' order)."""
    by_toolkit: dict[str, list[CellSpec]] = {}
    for cell in cells:
        by_toolkit.setdefault(cell.toolkit, []).append(cell)
    if not by_toolkit:
        return []
    workers = max(1, workers)
    if len(by_toolkit) >= workers:
        cost = {v: sum(cell_cost(c) for c in cs) for v, cs in by_toolkit.items()}
        loads = [(0.0, i) for i in range(workers)]
        owner: dict[str, int] = {}
        for version in sorted(cost, key=lambda v: (-cost[v], v)):
            load, i = heapq.heappop(loads)
            owner[version] = i
            heapq.heappush(loads, (load + cost[version], i))
        packed: list[list[CellSpec]] = [[] for _ in range(workers)]
        for cell in cells:
            packed[owner[cell.toolkit]].append(cell)
        return [unit for unit in packed if unit]
    parts = -(-workers // len(by_toolkit))
    found = []
    for group in by_toolkit.values():
        found += [part for part in partition(group, min(parts, len(group))) if part]
    return found


def unit_names(cells: Sequence[CellSpec], workers: int) -> dict[str, str]:
    """The name of each cell's unit, by cell id."""
    names = {}
    for unit in units(cells, workers):
        name = PREFIX + ",".join(dict.fromkeys(c.toolkit for c in unit)) + f"#{unit[0].id}"
        names.update({cell.id: name for cell in unit})
    return names


def cell_param(nodeid: str) -> str:
    """The parameter id of a test node id (``path::test[ID]`` -> ``ID``), or ''."""
    head, bracket, rest = nodeid.partition("[")
    return rest[:-1] if bracket and rest.endswith("]") else ""


def make_scheduling(
    config: Any, log: Any, cells: Callable[[], Sequence[CellSpec]]
) -> Any:  # xdist.scheduler.LoadScopeScheduling
    """pytest-xdist's loadscope scheduling with :func:`units` as the scopes of the cells
    (``cells()`` are the run's; any other test is a scope of its own)."""
    from xdist.scheduler import LoadScopeScheduling

    class ToolkitScheduling(LoadScopeScheduling):  # type: ignore[misc]
        """Cells by unit (each toolkit's worker started by as few xdist workers as may be)."""

        names: dict[str, str] = {}

        def schedule(self) -> None:
            if self.collection is None and self.collection_is_completed:
                collected = next(iter(self.registered_collections.values()), [])
                known = {c.id: c for c in cells()}
                found = [known[p] for p in map(cell_param, collected) if p in known]
                self.names = unit_names(found, len(self.nodes))
            super().schedule()

        def _split_scope(self, nodeid: str) -> str:
            return self.names.get(cell_param(nodeid), nodeid)

    return ToolkitScheduling(config, log)
