"""The Markdown views: a matrix's report (summary, pass/ran table, placement, signatures, failing
cells) and a diff's report; every table cell is escaped (:func:`md_text`, :func:`md_code`).

GitHub renders Markdown tables with inline HTML, so text from a log or a model's name could
otherwise close the table (``|``), start a tag (``<``) or turn into emphasis or a link.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pytest_rknn.views.lengths import served_rows
from pytest_rknn.views.placement import chip_comparison, fallback_ops, memory_ranges, npu_table
from pytest_rknn.views.tally import (
    cells_of,
    failing_cells,
    family_table,
    grid,
    model_rows,
    pass_ran,
    status_line,
    top_signatures,
    version_key,
)

_MARKUP = re.compile(r"([\\`*_\[\]{}()#+!~|])")


def md_text(text: Any) -> str:
    """``text`` as plain text inside a Markdown table cell: one line, nothing interpreted."""
    value = " ".join(str(text if text is not None else "").split())
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKUP.sub(r"\\\1", value)


def md_code(text: Any) -> str:
    """``text`` as inline code inside a table cell (a code span shows ``<`` as is)."""
    value = " ".join(str(text if text is not None else "").split()).replace("|", "\\|")
    if not value:
        return ""
    fence = "`" * (max((len(m) for m in re.findall(r"`+", value)), default=0) + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _accuracy(cell: Any) -> str:
    """The worst output's cosine and relative L2 error (blank for a cell without outputs)."""
    found = [m for m in (cell.metrics or {}).values() if isinstance(m.get("cosine"), float)]
    if not found:
        return ""
    worst = min(found, key=lambda m: m["cosine"])
    rel = worst.get("rel_l2")
    return f"{worst['cosine']:.5f} / " + (f"{rel:.2%}" if isinstance(rel, float) else "n/a")


def _table(rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(md_text(v) for v in rows[0]) + " |"]
    lines.append("|---|" + "---|" * (len(rows[0]) - 1))
    return lines + ["| " + " | ".join(md_text(v) for v in row) + " |" for row in rows[1:]]


def _placement(cells: list[Any]) -> list[str]:
    """Where the ops run: attention fully on the NPU per platform x toolkit (of the cells with
    attention ops in their layer table), the op types that fall back most, the chips side by
    side and the memory ranges (nothing when no cell has a layer table)."""
    table = npu_table(cells)
    if not table:
        return []
    lines = ["", "## Where it runs: attention fully on the NPU", ""]
    lines += [
        "The compiler's plan for the chip (its layer table), not a measurement on a board.",
        "",
    ]
    lines += _table(table)
    ops = fallback_ops(cells)
    if ops:
        shown = ", ".join(f"{md_code(op)} ({n})" for op, n in ops)
        lines += ["", f"Attention ops on the CPU most often: {shown}"]
    chips = chip_comparison(cells)
    if chips:
        lines += [""] + [f"- {md_text(line)}" for line in chips]
    memory = memory_ranges(cells)
    if memory:
        lines += ["", "Memory per chip (min – max):", ""] + _table(memory)
    return lines


def to_markdown(matrix: Any, top: int = 20) -> str:
    """A Markdown report: summary line, platform x toolkit table, signatures, failing cells."""
    cells = cells_of(matrix)
    meta = getattr(matrix, "meta", {}) or {}
    lines = ["# rknn compatibility matrix", ""]
    facts = [
        f"{k}: {md_text(meta[k])}"
        for k in ("pytest_rknn", "started", "finished", "seed", "profile")
        if meta.get(k) is not None
    ]
    if facts:
        lines += ["- " + fact for fact in facts] + [""]
    if not cells:
        return "\n".join([*lines, "No cells."]) + "\n"
    rows, columns, counts = grid(cells)
    lines += [status_line(cells), "", "Pass / ran per platform and toolkit:", ""]
    lines.append("| platform | " + " | ".join(md_text(c) for c in columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    for row in rows:
        entries = [pass_ran(counts.get((row, col))) for col in columns]
        lines.append(f"| {md_text(row)} | " + " | ".join(entries) + " |")
    models = model_rows(cells)
    if models:
        lines += ["", "## Your models", "", "| model | targets passed | worst cosine | where |"]
        lines.append("|---|---|---|---|")
        for m in models:
            worst = f"{m.worst_cosine:.5f}" if m.worst_cosine is not None else ""
            failing = ", ".join(f"{s} {n}" for s, n in sorted(m.failing.items()))
            passed = f"{m.passed}/{m.targets}" + (f" ({failing})" if failing else "")
            lines.append(
                f"| {md_code(m.name)} | {md_text(passed)} | {worst} | {md_text(m.worst_where)} |"
            )
    families = family_table(cells)
    if families:
        lines += ["", "## Whole models (hf form): pass / ran per family", ""]
        lines.append("| " + " | ".join(md_text(v) for v in families[0]) + " |")
        lines.append("|---|" + "---|" * (len(families[0]) - 1))
        lines += ["| " + " | ".join(md_text(v) for v in row) + " |" for row in families[1:]]
    lines += _placement(cells)
    dynamic = served_rows(cells)
    if dynamic:
        lines += ["", "## Served lengths (--rknn-dims)", ""]
        lines += ["| model | quant | platform | toolkit | lengths |", "|---|---|---|---|---|"]
        lines += [
            f"| {md_code(m)} | {md_text(q)} | {md_text(p)} | {md_text(t)} | {md_text(text)} |"
            for m, q, p, t, text in dynamic
        ]
    signatures = top_signatures(cells, top)
    if signatures:
        lines += ["", "## Failure signatures", "", "| cells | signature | where |", "|---|---|---|"]
        for signature, count, places in signatures:
            lines.append(f"| {count} | {md_code(signature)} | {md_text(', '.join(places))} |")
    failing = failing_cells(cells)
    if failing:
        lines += ["", "## Failing cells", ""]
        lines += [
            "| variant | platform | toolkit | quant | status | signature | cosine / rel_l2 |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in sorted(
            failing, key=lambda c: (c.variant_id, c.platform, version_key(c.toolkit), c.quant)
        ):
            lines.append(
                f"| {md_code(c.variant_id)} | {md_text(c.platform)} | {md_text(c.toolkit)} "
                f"| {md_text(c.quant)} | {md_text(c.status.value)} | {md_text(c.signature)} "
                f"| {md_text(_accuracy(c))} |"
            )
    return "\n".join(lines) + "\n"


def _placement_diff(reports: list[Any]) -> list[str]:
    """Where the ops run, per comparison: attention that left the NPU or came back, more or
    fewer CPU ops, and the median memory change (only comparisons with layer tables)."""
    moved = [(r, r.placement) for r in reports if getattr(r, "placement", None)]
    moved = [(r, p) for r, p in moved if p.compared]
    if not moved:
        return []
    lines = ["", "Placement (where the compiler puts the ops):", ""]
    lines.append(
        "| comparison | attention left the NPU | back on the NPU | more CPU ops | fewer CPU ops "
        "| internal memory | weight memory | cells |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for report, placement in moved:
        n = placement.counts()
        memory = [
            f"{change:+.0%}" if change is not None else "-"
            for change in (placement.internal_change, placement.weight_change)
        ]
        lines.append(
            f"| {md_text(report.label)} | {n['attention-to-cpu']} | {n['attention-to-npu']} "
            f"| {n['more-cpu-ops']} | {n['fewer-cpu-ops']} | {memory[0]} | {memory[1]} "
            f"| {placement.compared} |"
        )
    regressions = [c for _r, p in moved for c in p.regressions]
    if regressions:
        lines += ["", "| placement regression | variant | platform | toolkit | quant | CPU ops |"]
        lines.append("|---|---|---|---|---|---|")
        for c in regressions[:50]:
            variant, platform, toolkit, quant = c.key
            lines.append(
                f"| {md_text(c.kind)} | {md_code(variant)} | {md_text(platform)} "
                f"| {md_text(toolkit)} | {md_text(quant)} | {c.cpu_before} → {c.cpu_after} |"
            )
    return lines


def diff_markdown(reports: Iterable[Any], title: str = "rknn matrix diff", limit: int = 50) -> str:
    """A diff's reports: one counts table, then each report's changed cells (at most ``limit``
    rows per report, the regressions first)."""
    reports = list(reports)
    lines = [f"## {md_text(title)}", ""]
    names = ["fixed", "regressed", "changed", "new", "removed", "unchanged"]
    lines.append("| comparison | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for report in reports:
        counts = report.counts()
        lines.append(
            f"| {md_text(report.label)} | " + " | ".join(str(counts[n]) for n in names) + " |"
        )
    lines += _placement_diff(reports)
    order = {"regression": 0, "fix": 1, "changed": 2, "new": 3, "removed": 4}
    for report in reports:
        if not report.changes:
            continue
        changes = sorted(report.changes, key=lambda c: order.get(c.kind, 9))
        lines += ["", f"### {md_text(report.label)}", ""]
        lines += ["| change | variant | platform | toolkit | quant | before | after |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for c in changes[:limit]:
            variant, platform, toolkit, quant = c.key
            lines.append(
                f"| {c.kind} | {md_code(variant)} | {md_text(platform)} | {md_text(toolkit)} "
                f"| {md_text(quant)} | {md_text(c.before)} | {md_text(c.after)} |"
            )
        if len(changes) > limit:
            lines.append(f"\n… and {len(changes) - limit} more (`pytest-rknn diff` lists them all)")
    return "\n".join(lines) + "\n"
