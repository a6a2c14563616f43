"""Counting placement for the views: attention fully on the NPU per platform x toolkit, the op
types that fall back most, a chip comparison, memory ranges and a cell's JUnit properties.

Everything reads the cells' ``placement`` (see :mod:`~pytest_rknn.verdict.placement`); a cell
without one, or whose table could not be read, is left out of every count and the counts say
of how many cells they are.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.placement_diff import readable
from pytest_rknn.verdict.placement import attention_on_npu
from pytest_rknn.views.tally import version_key


def _row(cell: CellRecord, several_quants: bool) -> str:
    return f"{cell.platform} {cell.quant}" if several_quants else cell.platform


def npu_table(cells: list[CellRecord]) -> list[list[str]]:
    """``on NPU/with attention`` per platform (rows) x toolkit (columns), header row first: how
    many cells run every attention op on the NPU, of the cells whose table shows attention
    ops. Empty when no cell has a readable table."""
    known = [c for c in cells if attention_on_npu(readable(c)) is not None]
    if not known:
        return []
    several = len({c.quant for c in known}) > 1
    rows = sorted({_row(c, several) for c in known})
    columns = sorted({c.toolkit for c in known}, key=version_key)
    counts: dict[tuple[str, str], list[int]] = {}
    for cell in known:
        entry = counts.setdefault((_row(cell, several), cell.toolkit), [0, 0])
        entry[0] += bool(attention_on_npu(cell.placement))
        entry[1] += 1
    table = [["platform", *columns]]
    for row in rows:
        values = [counts.get((row, col)) for col in columns]
        table.append([row, *[f"{v[0]}/{v[1]}" if v else "-" for v in values]])
    return table


def fallback_ops(cells: list[CellRecord], limit: int = 5) -> list[tuple[str, int]]:
    """The attention op types most often on the CPU: (op type, cells where it is)."""
    counter: Counter[str] = Counter()
    for cell in cells:
        placement = readable(cell)
        if placement:
            counter.update({op["op"] for op in placement["cpu"] if op.get("attention")})
    return counter.most_common(limit)


def chip_comparison(cells: list[CellRecord]) -> list[str]:
    """Per toolkit (and quant mode), the chips side by side: ``2.5.0 fp16: rk3566 vs rk3588:
    attention on the CPU in 31 of 31 cells vs 0 of 31 (exSoftmax13 31 vs 0)``."""
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for cell in cells:
        placement = readable(cell)
        if attention_on_npu(placement) is None:
            continue
        chips = groups.setdefault((cell.toolkit, cell.quant), {})
        chips.setdefault(cell.platform, []).append(placement)
    lines = []
    for (toolkit, quant), chips in sorted(groups.items(), key=lambda g: version_key(g[0][0])):
        if len(chips) < 2:
            continue
        names = sorted(chips)
        on_cpu = [sum(attention_on_npu(p) is False for p in chips[n]) for n in names]
        ops = Counter(
            op["op"] for n in names for p in chips[n] for op in p["cpu"] if op.get("attention")
        )
        text = f"{toolkit} {quant}: {' vs '.join(names)}: attention on the CPU in " + " vs ".join(
            f"{k} of {len(chips[n])}" for k, n in zip(on_cpu, names, strict=True)
        )
        details = []
        for op, _ in ops.most_common(3):
            per_chip = [
                sum(any(o["op"] == op and o.get("attention") for o in p["cpu"]) for p in chips[n])
                for n in names
            ]
            details.append(f"{op} {' vs '.join(map(str, per_chip))}")
        lines.append(text + (f" ({'; '.join(details)})" if details else ""))
    return lines


def _size(value: float) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{int(value)} B"


def memory_ranges(cells: list[CellRecord]) -> list[list[str]]:
    """Per platform, the range of internal, weight and model memory over cells with a table,
    header row first (empty when none)."""
    found: dict[str, dict[str, list[int]]] = {}
    for cell in cells:
        placement = readable(cell)
        if placement is None:
            continue
        memory = found.setdefault(cell.platform, {})
        for key, value in placement.get("memory", {}).items():
            if isinstance(value, int) and value > 0:
                memory.setdefault(key, []).append(value)
    if not found:
        return []
    table = [["platform", "internal", "weight", "model file", "cells"]]
    for platform in sorted(found):
        memory = found[platform]
        row = [platform]
        for key in ("internal_bytes", "weight_bytes", "model_bytes"):
            values = memory.get(key)
            row.append(f"{_size(min(values))} – {_size(max(values))}" if values else "-")
        row.append(str(max((len(v) for v in memory.values()), default=0)))
        table.append(row)
    return table


def junit_properties(cell: CellRecord) -> list[tuple[str, str]]:
    """A cell's placement as JUnit properties: ``npu_ops``, ``cpu_ops``, ``attention_on_npu``
    (``true``/``false``/``unknown``) and the memory in bytes; ``placement_error`` instead when
    its table could not be read; none for a cell without a placement."""
    placement = getattr(cell, "placement", None)
    if not placement:
        return []
    if "error" in placement:
        return [("placement_error", str(placement["error"]))]
    on_npu = attention_on_npu(placement)
    props = [
        ("npu_ops", str(placement["npu_ops"])),
        ("cpu_ops", str(placement["cpu_ops"])),
        ("attention_on_npu", "unknown" if on_npu is None else str(on_npu).lower()),
    ]
    for key in ("internal_bytes", "weight_bytes", "model_bytes"):
        value = placement.get("memory", {}).get(key)
        if value is not None:
            props.append((f"memory_{key}", str(value)))
    return props


def placement_text(cells: list[CellRecord]) -> list[str]:
    """The terminal summary's placement lines (none when no cell has a readable table)."""
    table = npu_table(cells)
    if not table:
        return []
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["attention fully on the NPU (the compiler's plan; cells with attention ops):"]
    lines += [
        "  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table
    ]
    ops = fallback_ops(cells)
    if ops:
        lines.append(
            "attention ops on the CPU most often: " + ", ".join(f"{o} ({n})" for o, n in ops)
        )
    return lines
