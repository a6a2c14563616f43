"""``--rknn-shard K/N``: a deterministic, cost-balanced part of a run's cells for one CI job.

Owns :class:`Shard` (parsed and checked from ``K/N``), :class:`MeasuredCosts` (the seconds
each cell took in an earlier run's matrix, ``--rknn-shard-costs``), :func:`cell_cost` (a cell's
measured seconds where the costs have it, else an estimate from its variant's size: the
attention's ``batch × heads × q_len × kv_len × head_dim``, the model file's size for a user
model, twice for a quantized build), :func:`partition` (the longest-processing-time rule: cells
by falling cost, ties by id, each to the least-loaded shard, ties by index) and
:func:`plan_key` (what names the run that was cut: every setting that decides its cells, and
the costs' digest). The cut is a pure function of the cells and the costs file, so every
process of a run (pytest-xdist's workers too) and every job given the same file agree on it.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_rknn.pipeline.plan import CellSpec
    from pytest_rknn.settings import Settings

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
# Seconds a small cell costs whatever its size (simulator start, reference, the protocol), and
# the attention work the toolkit builds and simulates per second on this machine kind.
BASE_SECONDS = 0.3
WORK_PER_SECOND = 4e9
MODEL_BYTES_PER_SECOND = 10e6
HF_SECONDS = 0.7
"""What a whole model's graph (embeddings, norms, MLPs) adds to its attention's cost."""


class ShardError(ValueError):
    """A bad ``--rknn-shard`` value; the message names the fix."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = _SHARD.fullmatch(text)
        if not match:
            raise ShardError(
                f"--rknn-shard {text!r}: expected K/N (this job's shard K of N), e.g. 1/4"
            )
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1:
            raise ShardError(f"--rknn-shard {text!r}: N must be at least 1, e.g. 1/4")
        if not 1 <= index <= count:
            raise ShardError(
                f"--rknn-shard {text!r}: K must be between 1 and {count} (shards count from 1)"
            )
        return cls(index, count)


@dataclass(frozen=True)
class MeasuredCosts:
    """The in-worker seconds each cell took in an earlier run, by cell key."""

    seconds: Mapping[tuple[str, str, str, str], float] = field(default_factory=dict)
    digest: str = ""

    @classmethod
    def load(cls, path: Path) -> MeasuredCosts:
        """The costs in the matrix at ``path``; a file that is not a matrix is a ShardError."""
        from pytest_rknn.results.matrix import Matrix, MatrixError

        try:
            matrix = Matrix.load(path)
        except MatrixError as exc:
            raise ShardError(f"--rknn-shard-costs: {exc}") from None
        seconds = {}
        for cell in matrix.cells:
            wall = cell.timings.get("wall")
            if isinstance(wall, (int, float)) and math.isfinite(wall) and wall > 0:
                seconds[cell.key] = round(float(wall), 2)
        text = json.dumps(sorted(seconds.items()))
        return cls(seconds, hashlib.sha256(text.encode()).hexdigest()[:16])


def cell_cost(cell: CellSpec, costs: MeasuredCosts | None = None) -> float:
    """Seconds the toolkit spends on ``cell``: measured in ``costs`` where it has the cell, else
    estimated (only the ratios matter)."""
    if costs is not None and cell.key in costs.seconds:
        return costs.seconds[cell.key]
    spec = getattr(cell.subject, "spec", None)
    if spec is not None and getattr(spec, "form", "") == "hf":
        work = (
            spec.layers * spec.batch * spec.tokens * spec.hidden * (spec.tokens + 8 * spec.hidden)
        )
        seconds = BASE_SECONDS + HF_SECONDS + work / WORK_PER_SECOND
    elif spec is not None:
        work = spec.batch * spec.num_heads * spec.q_len * spec.kv_len * spec.head_dim
        seconds = BASE_SECONDS + work / WORK_PER_SECOND
    else:
        path = getattr(cell.subject, "path", None)
        try:
            size = path.stat().st_size if path is not None else 0
        except OSError:
            size = 0
        seconds = BASE_SECONDS + size / MODEL_BYTES_PER_SECOND
    return seconds * (2.0 if cell.quant.startswith("int8") else 1.0)


def partition(
    cells: Sequence[CellSpec], count: int, costs: MeasuredCosts | None = None
) -> list[list[CellSpec]]:
    """``cells`` cut into ``count`` shards of near-equal cost; each shard keeps the cells'
    original order."""
    cost = [cell_cost(cell, costs) for cell in cells]
    order = sorted(range(len(cells)), key=lambda i: (-cost[i], cells[i].id))
    loads = [(0.0, shard) for shard in range(count)]
    owner: dict[int, int] = {}
    for i in order:
        load, shard = heapq.heappop(loads)
        owner[i] = shard
        heapq.heappush(loads, (load + cost[i], shard))
    shards: list[list[CellSpec]] = [[] for _ in range(count)]
    for i, cell in enumerate(cells):
        shards[owner[i]].append(cell)
    return shards


def select(
    cells: Sequence[CellSpec], shard: Shard | None, costs: MeasuredCosts | None = None
) -> list[CellSpec]:
    """The cells of ``shard`` (all of them without one); a shard that would get no cell is a
    :class:`ShardError` (it would leave no matrix to merge)."""
    if shard is None or shard.count == 1:
        return list(cells)
    if shard.count > len(cells):
        raise ShardError(
            f"--rknn-shard {shard}: the run has {len(cells)} cell(s), too few for {shard.count} "
            f"shards; use N <= {len(cells)}"
        )
    return partition(cells, shard.count, costs)[shard.index - 1]


def plan_key(settings: Settings) -> str:
    """A short hash of every setting that decides a run's cells: the shards of one run share
    it, runs with other cells do not."""
    decided: dict[str, Any] = {
        "toolkits": list(settings.toolkit_names),
        "platforms": list(settings.platforms),
        "quant": list(settings.quant),
        "examples": settings.examples,
        "seed": settings.seed,
        "profile": settings.profile,
        "forms": list(settings.forms),
        "curated": settings.curated,
        "variants": [v.id for v in settings.variants],
        "models": [m.id for m in settings.models],
    }
    if settings.shard_costs is not None:
        decided["costs"] = settings.shard_costs.digest
    text = json.dumps(decided, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def shard_meta(settings: Settings) -> dict[str, Any] | None:
    """The matrix's ``meta["shard"]``: ``{"index", "count", "plan"}``, or None unsharded."""
    shard = settings.shard
    if shard is None:
        return None
    return {"index": shard.index, "count": shard.count, "plan": plan_key(settings)}
