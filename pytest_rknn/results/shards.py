"""Whether the shard matrices given to ``pytest-rknn merge`` make whole runs.

A run cut with ``--rknn-shard K/N`` records ``meta["shard"] = {"index": K, "count": N, "plan":
...}``; ``plan`` names the cut run (the settings that decide its cells), so shards of the run
for toolkit 2.2.0 and of the run for 2.5.0 are told apart. :func:`shard_problem` says, in one
line, what keeps the shard matrices among a merge's inputs from being whole runs: a shard given
twice (two different runs of it: a matrix and its own journal are one run), one run cut into
different counts, a cell in two shards, or a missing shard. Unsharded matrices are not checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_rknn.results.matrix import Matrix


def _shard(matrix: Matrix) -> tuple[str, int, int] | None:
    shard = matrix.meta.get("shard")
    if not isinstance(shard, dict):
        return None
    try:
        return str(shard["plan"]), int(shard["index"]), int(shard["count"])
    except (KeyError, TypeError, ValueError):
        return None


def _run_id(matrix: Matrix) -> tuple[Any, Any]:
    """What tells two runs of one shard apart (a matrix and its journal share it)."""
    return matrix.meta.get("started"), (matrix.meta.get("host") or {}).get("name")


def _label(matrix: Matrix) -> str:
    toolkits = ",".join(matrix.meta.get("toolkits") or []) or "?"
    return f"the run of toolkits {toolkits}"


def shard_problem(inputs: Sequence[tuple[Path, Matrix]]) -> str | None:
    """One line naming the first problem with the shard matrices in ``inputs``, or None."""
    runs: dict[str, dict[int, dict[tuple[Any, Any], Path]]] = {}
    counts: dict[str, dict[int, Path]] = {}
    owners: dict[str, dict[tuple[str, str, str, str], tuple[int, Path]]] = {}
    labels: dict[str, str] = {}
    for path, matrix in inputs:
        found = _shard(matrix)
        if found is None:
            continue
        plan, index, count = found
        labels.setdefault(plan, _label(matrix))
        counts.setdefault(plan, {}).setdefault(count, path)
        if len(counts[plan]) > 1:
            (a, first), (b, second) = list(counts[plan].items())[:2]
            return (
                f"{labels[plan]} was cut into {a} shards in {first} and {b} in {second}: "
                "merge the matrices of one --rknn-shard K/N series"
            )
        shard_runs = runs.setdefault(plan, {}).setdefault(index, {})
        shard_runs.setdefault(_run_id(matrix), path)
        if len(shard_runs) > 1:
            first, second = list(shard_runs.values())[:2]
            return (
                f"shard {index}/{count} of {labels[plan]} is given twice ({first} and "
                f"{second}): give each shard's matrix once"
            )
        held = owners.setdefault(plan, {})
        for cell in matrix.cells:
            other = held.setdefault(cell.key, (index, path))
            if other[0] != index:
                return (
                    f"shards {other[0]}/{count} ({other[1]}) and {index}/{count} ({path}) of "
                    f"{labels[plan]} overlap (cell {'-'.join(cell.key)}): they were not cut "
                    "from one run; rerun the shards with the same settings"
                )
    for plan, shards in runs.items():
        (count,) = counts[plan]
        missing = [k for k in range(1, count + 1) if k not in shards]
        if missing:
            named = ", ".join(f"{k}/{count}" for k in missing)
            have = ", ".join(f"{k}/{count}" for k in sorted(shards))
            return (
                f"shard {named} of {labels[plan]} is missing (given: {have}): add its matrix "
                "(or the journal of its interrupted run) to the inputs"
            )
    return None
