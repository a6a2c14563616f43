"""Comparing and combining matrices: ``merge`` of per-job matrices, ``diff`` of two runs.

:func:`diff` lists what changed cell by cell; :func:`compare` wraps it in a :class:`DiffReport`
with the counts a person reads first (fixed / regressed / changed / new / removed / unchanged);
:func:`toolkit_diff` compares two toolkit versions inside one matrix, per platform and quant
mode ("2.3.2 → 2.5.0 on rk3588: 0 fixed, 6 regressed"). Each report also carries how the
placement moved (:mod:`~pytest_rknn.results.placement_diff`). Views format these reports; nothing
here prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_rknn.results.cell import CellRecord, Key, instant
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.placement_diff import PlacementReport, placement_diff
from pytest_rknn.results.status import Status
from pytest_rknn.views.tally import version_key


@dataclass(frozen=True)
class Change:
    """How one cell differs between two matrices (see :func:`~pytest_rknn.results.compare.diff`)."""

    kind: str
    key: Key
    old_status: str | None
    new_status: str | None
    old_signature: str | None = None
    new_signature: str | None = None

    @property
    def before(self) -> str:
        """The old side for a person: ``crash (worker crashed)``, or ``absent``."""
        return (self.old_status or "absent") + (
            f" ({self.old_signature})" if self.old_signature else ""
        )

    @property
    def after(self) -> str:
        """The new side for a person: ``pass``, or ``absent``."""
        return (self.new_status or "absent") + (
            f" ({self.new_signature})" if self.new_signature else ""
        )

    def describe(self) -> str:
        """One line for a person: ``regression  id @ rk3588 / 2.3.2 / fp16: pass -> crash``."""
        variant, platform, toolkit, quant = self.key
        where = f"{variant} @ {platform} / {toolkit} / {quant}"
        return f"{self.kind:<10} {where}: {self.before} -> {self.after}"


_UNION_LISTS = ("platforms", "quant", "toolkits", "toolkit_envs")


def _union(values: Iterable[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(json.dumps(value, sort_keys=True), value)
    return list(seen.values())


# Figures of one run: a merge of several keeps each input's in ``merged_from`` only.
_ONE_RUN = ("wall_s", "exitstatus", "run_id")


def _complete(matrix: Matrix) -> bool:
    """Whether the run behind ``matrix`` ended (a killed run's matrix has no ``finished``, and
    one rebuilt from its journal says so in ``journal``)."""
    meta = matrix.meta
    if "complete" in meta:
        return bool(meta["complete"])
    return bool(meta.get("finished")) and "journal" not in meta


def _finished(matrix: Matrix) -> str | None:
    """When the run behind ``matrix`` finished; a killed run's: when its last cell did."""
    if matrix.meta.get("finished"):
        return matrix.meta["finished"]
    return max((c.finished for c in matrix.cells if c.finished), key=instant, default=None)


def _summary(matrix: Matrix) -> dict[str, Any]:
    meta = matrix.meta
    return {
        "command": meta.get("command"),
        "started": meta.get("started"),
        "finished": meta.get("finished"),
        "toolkits": meta.get("toolkits"),
        "host": (meta.get("host") or {}).get("name"),
        "cells": len(matrix),
        **{key: meta[key] for key in ("shard", *_ONE_RUN, "toolkit_s") if key in meta},
    }


def _brief(cell: CellRecord) -> dict[str, Any]:
    return {"status": cell.status.value, "signature": cell.signature, "finished": cell.finished}


def merge(matrices: Iterable[Matrix]) -> Matrix:
    """One matrix holding every cell of ``matrices`` (e.g. one per toolkit version).

    A key present in several inputs keeps the cell that finished last (ties: the later input);
    when the two disagree on status or signature, the disagreement is listed in
    ``meta["conflicts"]``. Metadata: list fields (platforms, quant, toolkits, toolkit_envs) are
    unioned, ``started`` is the earliest, ``finished`` the latest (a killed run's: its last
    cell's), ``toolkit_s`` is the merged cells' own, ``complete`` holds when every input's run
    ended; of several inputs, one run's wall time and exit status are left out, and so is
    ``command`` unless all inputs share it; other fields come from the first input that has
    them, and ``merged_from`` summarises every input (its command, times, shard, wall time,
    exit status and toolkit time).
    """
    inputs = list(matrices)
    left_out = {"conflicts", "merged_from", "journal"}
    if len(inputs) > 1:
        left_out.update(_ONE_RUN)
        if len({m.meta.get("command") for m in inputs}) > 1:
            left_out.add("command")
    meta: dict[str, Any] = {"complete": all(map(_complete, inputs))}
    for matrix in inputs:
        for key, value in matrix.meta.items():
            if key not in left_out:
                meta.setdefault(key, value)
    for key in _UNION_LISTS:
        values = [v for m in inputs for v in (m.meta.get(key) or [])]
        if values:
            meta[key] = _union(values)
    starts = [m.meta["started"] for m in inputs if m.meta.get("started")]
    ends = [end for end in map(_finished, inputs) if end]
    meta["started"] = min(starts, key=instant) if starts else None
    meta["finished"] = max(ends, key=instant) if ends else None
    conflicts = [c for m in inputs for c in (m.meta.get("conflicts") or [])]
    merged_from = [s for m in inputs for s in (m.meta.get("merged_from") or [_summary(m)])]

    result = Matrix(meta=meta)
    for matrix in inputs:
        for cell in matrix.cells:
            held = result.get(cell.key)
            if held is not None and instant(held.finished) > instant(cell.finished):
                kept, dropped = held, cell
            else:
                kept, dropped = cell, held
            if dropped is not None and (kept.status, kept.signature) != (
                dropped.status,
                dropped.signature,
            ):
                variant_id, platform, toolkit, quant = cell.key
                conflicts.append(
                    {
                        "variant_id": variant_id,
                        "platform": platform,
                        "toolkit": toolkit,
                        "quant": quant,
                        "kept": _brief(kept),
                        "dropped": _brief(dropped),
                    }
                )
            result.add(kept, validated=True)
    if any("toolkit_s" in m.meta for m in inputs):
        result.meta["toolkit_s"] = result.toolkit_seconds()
    result.meta["conflicts"] = conflicts
    result.meta["merged_from"] = merged_from
    return result


def _change(key: Key, before: CellRecord | None, after: CellRecord | None) -> Change | None:
    """How ``before`` became ``after`` (None: same status and signature)."""
    if before is None and after is not None:
        return Change("new", key, None, after.status.value, None, after.signature)
    if after is None and before is not None:
        return Change("removed", key, before.status.value, None, before.signature, None)
    if before is None or after is None:
        return None
    if (before.status, before.signature) == (after.status, after.signature):
        return None
    if before.status is Status.PASS and after.failed:
        kind = "regression"
    elif before.failed and after.status is Status.PASS:
        kind = "fix"
    else:
        kind = "changed"
    return Change(
        kind, key, before.status.value, after.status.value, before.signature, after.signature
    )


def diff(old: Matrix, new: Matrix) -> list[Change]:
    """What changed from ``old`` to ``new``, cell by cell, in key order.

    ``regression``: passed before, fails now; ``fix``: failed before, passes now; ``new`` and
    ``removed``: the key is in one matrix only; ``changed``: any other change of status or
    signature (a different failure, or a move to or from ``unsupported``).
    """
    keys = sorted({*old.keys(), *new.keys()})
    changes = (_change(key, old.get(key), new.get(key)) for key in keys)
    return [c for c in changes if c is not None]


# The counts of a report, in the order people read them, and the change kind each one counts.
COUNTS: dict[str, str | None] = {
    "fixed": "fix",
    "regressed": "regression",
    "changed": "changed",
    "new": "new",
    "removed": "removed",
    "unchanged": None,
}


@dataclass(frozen=True)
class DiffReport:
    """The changes between two sets of cells, and how many cells did not change."""

    label: str
    changes: tuple[Change, ...]
    unchanged: int
    platform: str | None = None
    quant: str | None = None
    placement: PlacementReport | None = None

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.kind == "regression"]

    def counts(self) -> dict[str, int]:
        """``{"fixed": n, "regressed": n, "changed": n, "new": n, "removed": n, "unchanged": n}``"""
        kinds = [c.kind for c in self.changes]
        return {
            name: (self.unchanged if kind is None else kinds.count(kind))
            for name, kind in COUNTS.items()
        }

    def headline(self) -> str:
        """``2.3.2 → 2.5.0 on rk3588: 0 fixed, 6 regressed, 1 changed, 12 unchanged``"""
        counts = self.counts()
        shown = [f"{counts[k]} {k}" for k in ("fixed", "regressed")]
        shown += [f"{counts[k]} {k}" for k in ("changed", "new", "removed") if counts[k]]
        return f"{self.label}: " + ", ".join([*shown, f"{counts['unchanged']} unchanged"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "platform": self.platform,
            "quant": self.quant,
            "counts": self.counts(),
            "changes": [
                {
                    "kind": c.kind,
                    "variant_id": c.key[0],
                    "platform": c.key[1],
                    "toolkit": c.key[2],
                    "quant": c.key[3],
                    "old_status": c.old_status,
                    "new_status": c.new_status,
                    "old_signature": c.old_signature,
                    "new_signature": c.new_signature,
                }
                for c in self.changes
            ],
            "placement": self.placement.to_dict() if self.placement is not None else None,
        }


def compare(old: Matrix, new: Matrix, label: str = "old → new") -> DiffReport:
    """:func:`diff` with the count of cells present and alike in both."""
    changes = diff(old, new)
    alike = len(set(new.keys()) & set(old.keys())) - sum(
        1 for c in changes if c.kind not in ("new", "removed")
    )
    pairs = [(old.get(key), new.get(key)) for key in sorted(set(new.keys()) & set(old.keys()))]
    return DiffReport(label, tuple(changes), alike, placement=placement_diff(pairs))


def toolkits_of(matrix: Matrix) -> list[str]:
    """The toolkit versions that have cells, oldest first."""
    return sorted({c.toolkit for c in matrix.cells}, key=version_key)


def toolkit_diff(matrix: Matrix, before: str, after: str) -> list[DiffReport]:
    """Toolkit ``before`` against ``after`` inside one matrix, one report per (platform, quant).

    Cells pair up by (variant, platform, quant); a change's key is the ``after`` cell's (the
    ``before`` cell's for ``removed``). Raises ``ValueError`` naming the versions the matrix has
    when either is absent, and when both are one version.
    """
    if before == after:
        raise ValueError(
            f"--toolkits {before} {after} names one version twice: give two different versions"
        )
    have = toolkits_of(matrix)
    missing = [v for v in (before, after) if v not in have]
    if missing:
        raise ValueError(
            f"toolkit {', '.join(missing)} has no cells in this matrix: it has "
            f"{', '.join(have) or 'no cells at all'}"
        )
    old: dict[tuple[str, str], dict[str, CellRecord]] = {}
    new: dict[tuple[str, str], dict[str, CellRecord]] = {}
    for cell in matrix.cells:
        side = old if cell.toolkit == before else new if cell.toolkit == after else None
        if side is not None:
            side.setdefault((cell.platform, cell.quant), {})[cell.variant_id] = cell
    several_quants = len({q for _, q in (*old, *new)}) > 1
    reports = []
    for platform, quant in sorted({*old, *new}):
        a, b = old.get((platform, quant), {}), new.get((platform, quant), {})
        changes = []
        for variant in sorted({*a, *b}):
            cell = b.get(variant) or a[variant]
            change = _change(cell.key, a.get(variant), b.get(variant))
            if change is not None:
                changes.append(change)
        alike = sum(1 for v in b if v in a) - sum(
            1 for c in changes if c.kind not in ("new", "removed")
        )
        where = f"{platform} {quant}" if several_quants else platform
        moved = placement_diff((a[v], b[v]) for v in sorted(b) if v in a)
        label = f"{before} → {after} on {where}"
        reports.append(DiffReport(label, tuple(changes), alike, platform, quant, moved))
    return reports
