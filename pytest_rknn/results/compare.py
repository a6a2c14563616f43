"""Comparing and combining matrices: ``merge`` of per-job matrices, ``diff`` of two runs."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_rknn.results.cell import CellRecord, Key, instant
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status


@dataclass(frozen=True)
class Change:
    """How one cell differs between two matrices (see :func:`~pytest_rknn.results.compare.diff`)."""

    kind: str
    key: Key
    old_status: str | None
    new_status: str | None
    old_signature: str | None = None
    new_signature: str | None = None

    def describe(self) -> str:
        """One line for a person: ``regression  id @ rk3588 / 2.3.2 / fp16: pass -> crash``."""
        variant, platform, toolkit, quant = self.key
        before = f"{self.old_status or 'absent'}" + (
            f" ({self.old_signature})" if self.old_signature else ""
        )
        after = f"{self.new_status or 'absent'}" + (
            f" ({self.new_signature})" if self.new_signature else ""
        )
        return f"{self.kind:<10} {variant} @ {platform} / {toolkit} / {quant}: {before} -> {after}"


_UNION_LISTS = ("platforms", "quant", "toolkits", "toolkit_envs")


def _union(values: Iterable[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(json.dumps(value, sort_keys=True), value)
    return list(seen.values())


def _summary(matrix: Matrix) -> dict[str, Any]:
    meta = matrix.meta
    return {
        "command": meta.get("command"),
        "started": meta.get("started"),
        "finished": meta.get("finished"),
        "toolkits": meta.get("toolkits"),
        "host": (meta.get("host") or {}).get("name"),
        "cells": len(matrix),
    }


def _brief(cell: CellRecord) -> dict[str, Any]:
    return {"status": cell.status.value, "signature": cell.signature, "finished": cell.finished}


def merge(matrices: Iterable[Matrix]) -> Matrix:
    """One matrix holding every cell of ``matrices`` (e.g. one per toolkit version).

    A key present in several inputs keeps the cell that finished last (ties: the later input);
    when the two disagree on status or signature, the disagreement is listed in
    ``meta["conflicts"]``. Metadata: list fields (platforms, quant, toolkits, toolkit_envs) are
    unioned, ``started`` is the earliest, ``finished`` the latest, other fields come from the
    first input that has them, and ``merged_from`` summarises every input.
    """
    inputs = list(matrices)
    meta: dict[str, Any] = {}
    for matrix in inputs:
        for key, value in matrix.meta.items():
            if key not in ("conflicts", "merged_from", "journal"):
                meta.setdefault(key, value)
    for key in _UNION_LISTS:
        values = [v for m in inputs for v in (m.meta.get(key) or [])]
        if values:
            meta[key] = _union(values)
    starts = [m.meta["started"] for m in inputs if m.meta.get("started")]
    ends = [m.meta["finished"] for m in inputs if m.meta.get("finished")]
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
    result.meta["conflicts"] = conflicts
    result.meta["merged_from"] = merged_from
    return result


def diff(old: Matrix, new: Matrix) -> list[Change]:
    """What changed from ``old`` to ``new``, cell by cell, in key order.

    ``regression``: passed before, fails now; ``fix``: failed before, passes now; ``new`` and
    ``removed``: the key is in one matrix only; ``changed``: any other change of status or
    signature (a different failure, or a move to or from ``unsupported``).
    """
    changes: list[Change] = []
    for key in sorted({*old.keys(), *new.keys()}):
        before, after = old.get(key), new.get(key)
        if before is None and after is not None:
            changes.append(Change("new", key, None, after.status.value, None, after.signature))
        elif after is None and before is not None:
            changes.append(
                Change("removed", key, before.status.value, None, before.signature, None)
            )
        elif before is not None and after is not None:
            if (before.status, before.signature) == (after.status, after.signature):
                continue
            if before.status is Status.PASS and after.failed:
                kind = "regression"
            elif before.failed and after.status is Status.PASS:
                kind = "fix"
            else:
                kind = "changed"
            changes.append(
                Change(
                    kind,
                    key,
                    before.status.value,
                    after.status.value,
                    before.signature,
                    after.signature,
                )
            )
    return changes
