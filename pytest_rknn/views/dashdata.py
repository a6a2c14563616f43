"""What the dashboard shows, as plain data (the page's script reads it; nothing here is HTML).

:func:`payload` turns a matrix (and optionally the run before it and a history of runs) into
one JSON-ready dict: the status legend (from the status vocabulary), the targets, the variants
grouped by form and family, one compact entry per cell, each cell's details for the cell panel
(every metric against its bound, timings, peak memory, the layer table and memory, the log's
head and tail without the harness's frames, the advisor's fixes, the re-run command), the
signatures, the toolkit diffs and the history (with placement changes: :mod:`.dashplace`).
Repeated long strings (logs, reasons) are stored once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.compare import compare, toolkit_diff, toolkits_of
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import STATUS_TABLE, Status
from pytest_rknn.verdict.logtext import without_harness_frames
from pytest_rknn.verdict.tolerance import BOUND_OF_METRIC
from pytest_rknn.views.dashplace import (
    LABELS,
    history_placement,
    placement_detail,
    placement_index,
    placement_report,
)
from pytest_rknn.views.lengths import shape_rows
from pytest_rknn.views.placement import chip_comparison
from pytest_rknn.views.tally import model_rows, top_signatures, version_key
from pytest_rknn.views.text import rerun_command

SYMBOLS: dict[Status, str] = {
    Status.PASS: "✓",
    Status.CONVERT_FAIL: "✗",
    Status.RUNTIME_FAIL: "R",
    Status.TOLERANCE_FAIL: "≈",
    Status.CPU_FALLBACK: "C",
    Status.REFERENCE_ERROR: "?",
    Status.CRASH: "!",
    Status.TIMEOUT: "T",
    Status.OOM: "M",
    Status.UNSUPPORTED: "–",
    Status.EXPORT_FAIL: "X",
    Status.ENV_ERROR: "E",
}
LOG_LINES = 40
LOG_CHARS = 2000
DEFAULT_SUITE = "cases/"


def family(variant: dict[str, Any]) -> str:
    """The attention family of a variant: MHA, GQA, MQA (by kv heads), ``model``, or the
    model family of an ``hf`` variant (``bert``: its form, shown beside it, says ``hf``)."""
    if variant.get("form") == "model":
        return "model"
    if variant.get("form") == "hf":
        return str(variant.get("family"))
    heads, kv = variant.get("num_heads"), variant.get("num_kv_heads")
    if not isinstance(heads, int) or not isinstance(kv, int) or kv < 1:
        return "other"
    if kv == heads:
        return "MHA"
    return "MQA" if kv == 1 else "GQA"


def _text_colour(background: str) -> str:
    r, g, b = (int(background[i : i + 2], 16) for i in (1, 3, 5))
    return "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#fff"


def legend() -> list[dict[str, Any]]:
    """One entry per status, in the vocabulary's order."""
    return [
        {
            "name": status.value,
            "colour": info.colour,
            "ink": _text_colour(info.colour),
            "symbol": SYMBOLS[status],
            "failing": info.failing,
            "ran": status.ran,
            "meaning": info.meaning,
        }
        for status, info in STATUS_TABLE.items()
    ]


class _Strings:
    """A table of strings stored once each; an entry is referred to by its index."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def __call__(self, text: str | None) -> int:
        if not text:
            return -1
        if text not in self.index:
            self.index[text] = len(self.items)
            self.items.append(text)
        return self.index[text]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# Fields of an output's metrics that say which output it is and how it was judged.
NOT_METRICS = frozenset({"index", "judged", "left_out"})


def metric_rows(cell: CellRecord) -> list[dict[str, Any]]:
    """Every metric of every output, with the bound it was judged against and whether it held."""
    rows = []
    bounds = cell.bounds or {}
    ordered = sorted((cell.metrics or {}).items(), key=lambda kv: (kv[1].get("index", 0), kv[0]))
    for output, metrics in ordered:
        for name, value in metrics.items():
            if name in NOT_METRICS:
                continue
            bound_name, op = BOUND_OF_METRIC.get(name, (None, None))
            bound = _number(bounds.get(bound_name)) if bound_name else None
            number = _number(value)
            held = None
            if bound is not None and number is not None:
                held = number <= bound if op == "<=" else number >= bound
            elif bound is not None:
                held = False
            rows.append(
                {
                    "output": output,
                    "metric": name,
                    "value": number if number is not None else str(value),
                    "op": op if bound is not None else None,
                    "bound": bound,
                    "held": held,
                }
            )
    return rows


def log_parts(text: str | None) -> tuple[str, str]:
    """The log's head and tail (the tail empty when the head holds it all), without the
    traceback frames of pytest-rknn's own code."""
    body = without_harness_frames(text or "").strip("\n")
    lines = body.split("\n")
    if len(lines) <= 2 * LOG_LINES and len(body) <= 2 * LOG_CHARS:
        return body, ""
    head = "\n".join(lines[:LOG_LINES])[:LOG_CHARS]
    tail = "\n".join(lines[-LOG_LINES:])[-LOG_CHARS:]
    return head, tail


def fixes_of(cell: CellRecord) -> list[dict[str, Any]]:
    """The advisor's fixes of a cell (a ``fixes`` field, or ``extra["fixes"]``), as rows."""
    found = getattr(cell, "fixes", None) or (cell.extra or {}).get("fixes") or []
    rows = []
    for fix in found if isinstance(found, list) else []:
        if isinstance(fix, dict):
            status = str(fix.get("status", ""))
            rows.append(
                {
                    "fix": str(fix.get("fix") or fix.get("name") or ""),
                    "status": status,
                    "detail": {k: v for k, v in fix.items() if k not in ("fix", "name", "status")},
                }
            )
        else:
            rows.append({"fix": str(fix), "status": "", "detail": {}})
    return rows


def notes_of(cell: CellRecord) -> list[list[str]]:
    """What else a cell says, as (heading, text): a silent failure's warning, where a tolerance
    failure's error starts, the layers a hybrid build kept in float16, what a quantized build
    calibrated on, the rule that made the bounds and the positions an output was judged on."""
    notes = []
    if cell.warning:
        notes.append(["warning (the toolkit survived an exception)", cell.warning])
    origin = cell.error_origin or {}
    if origin.get("error"):
        notes.append(["where the error starts", f"not found: {origin['error']}"])
    elif origin.get("layer"):
        text = f"{origin.get('op', '')} {origin['layer']} (cosine {origin.get('cosine')}"
        text += f"; its inputs {origin.get('input_cosine')})"
        notes.append(["where the error starts", text.strip()])
    if cell.fp16_layers:
        layers = ", ".join(
            f"{x.get('op', '')} {x.get('name', '')}".strip() for x in cell.fp16_layers
        )
        notes.append([f"kept in float16 ({len(cell.fp16_layers)} layers)", layers])
    if cell.calibration:
        notes.append(["calibration", calibration_text(cell.calibration)])
    if cell.bounds_rule:
        notes.append(["bounds", cell.bounds_rule])
    judged = [
        f"{name}: {m['judged']}{_left_out(m.get('left_out'))}"
        for name, m in sorted((cell.metrics or {}).items())
        if m.get("judged")
    ]
    if judged:
        notes.append(["positions judged", "\n".join(judged)])
    return notes


def _left_out(left_out: Any) -> str:
    if not isinstance(left_out, dict):
        return ""
    figures = ", ".join(
        f"{key} {left_out[key]:.6g}"
        for key in ("cosine", "rel_l2")
        if isinstance(left_out.get(key), float)
    )
    return f"; the rest (not judged): {figures}" if figures else ""


def calibration_text(calibration: dict[str, Any]) -> str:
    """``8 generated samples, 5 with masked positions (digest 1a2b3c4d)``, and its note."""
    where = f" from {calibration['file']}" if calibration.get("file") else ""
    text = (
        f"{calibration.get('samples')} {calibration.get('source')} samples{where}, "
        f"{calibration.get('masked_samples')} with masked positions"
    )
    if calibration.get("digest"):
        text += f" (digest {str(calibration['digest'])[:8]})"
    if calibration.get("note"):
        text += f"; {calibration['note']}"
    return text


def _rerun(cell: CellRecord, meta: dict[str, Any]) -> str:
    test = meta.get("cell_test")
    target = f"{test}[{cell.id}]" if test else DEFAULT_SUITE
    args = meta.get("args") if isinstance(meta.get("args"), list) else ()
    return rerun_command(target, [str(a) for a in args], cell)


def _changes(report: Any, where: dict[tuple[str, ...], int]) -> list[list[Any]]:
    return [
        [where.get(c.key, -1), c.kind, "/".join(c.key), c.before, c.after] for c in report.changes
    ]


def _report(report: Any, where: dict[tuple[str, ...], int]) -> dict[str, Any]:
    return {
        "label": report.label,
        "headline": report.headline(),
        "counts": report.counts(),
        "changes": _changes(report, where),
        "placement": placement_report(report, where),
    }


def overview(matrix: Matrix) -> dict[str, Any]:
    """Pass/ran per platform (rows) and (toolkit, quant) (columns), with a symbol and a hue."""
    cells = matrix.cells
    columns = sorted({(c.toolkit, c.quant) for c in cells}, key=lambda t: (version_key(t[0]), t[1]))
    counts: dict[tuple[str, str, str], Counter[Status]] = {}
    for c in cells:
        counts.setdefault((c.platform, c.toolkit, c.quant), Counter())[c.status] += 1
    rows = []
    for platform in sorted({c.platform for c in cells}):
        entries = []
        for toolkit, quant in columns:
            tally = counts.get((platform, toolkit, quant), Counter())
            ran = sum(n for s, n in tally.items() if s.ran)
            passed = tally[Status.PASS]
            if not tally:
                symbol, text, hue = "", "–", None
            elif not ran:
                symbol, text, hue = "–", Status.UNSUPPORTED.value, None
            else:
                symbol = "●" if passed == ran else ("○" if passed == 0 else "◐")
                text, hue = f"{passed}/{ran}", round(120 * passed / ran)
            entries.append(
                {
                    "target": f"{platform}|{toolkit}|{quant}",
                    "symbol": symbol,
                    "text": text,
                    "percent": None if hue is None else round(100 * passed / ran),
                    "hue": hue,
                }
            )
        rows.append({"platform": platform, "entries": entries})
    return {"columns": [{"toolkit": t, "quant": q} for t, q in columns], "rows": rows}


def payload(
    matrix: Matrix, previous: Matrix | None = None, history: Sequence[Any] | None = None
) -> dict[str, Any]:
    """Everything the page's script needs, JSON-ready."""
    cells = matrix.cells
    meta = matrix.meta
    strings = _Strings()
    targets = sorted(
        {(c.platform, c.toolkit, c.quant) for c in cells},
        key=lambda t: (t[0], version_key(t[1]), t[2]),
    )
    target_index = {t: i for i, t in enumerate(targets)}
    specs: dict[str, dict[str, Any]] = {}
    for cell in cells:
        specs.setdefault(cell.variant_id, cell.variant or {})
    order = sorted(specs, key=lambda v: (specs[v].get("form", ""), family(specs[v]), v))
    variant_index = {v: i for i, v in enumerate(order)}
    variants = [
        {
            "id": v,
            "form": specs[v].get("form", "") or "",
            "family": family(specs[v]),
            "q": specs[v].get("q_len"),
            "kv": specs[v].get("kv_len"),
            "d": specs[v].get("head_dim"),
            "spec": specs[v],
        }
        for v in order
    ]
    status_index = {s: i for i, s in enumerate(STATUS_TABLE)}
    signatures = [sig for sig, _, _ in top_signatures(matrix, limit=10**6)]
    signature_index = {s: i for i, s in enumerate(signatures)}
    entries, details = [], []
    for cell in cells:
        sig = (cell.signature or cell.status.value) if cell.status.failing else None
        head, tail = log_parts(cell.log_excerpt)
        entries.append(
            [
                variant_index[cell.variant_id],
                target_index[(cell.platform, cell.toolkit, cell.quant)],
                status_index[cell.status],
                signature_index.get(sig, -1) if sig else -1,
                placement_index(cell),
            ]
        )
        details.append(
            {
                "signature": cell.signature,
                "reason": strings(cell.reason),
                "metrics": metric_rows(cell),
                "timings": {k: _number(v) for k, v in (cell.timings or {}).items()},
                "peak_rss_mb": _number(cell.peak_rss_mb),
                "cached": cell.cached,
                "finished": cell.finished,
                "job_id": cell.job_id,
                "artifact": cell.artifact,
                "log_head": strings(head),
                "log_tail": strings(tail),
                "fixes": fixes_of(cell),
                "shapes": shape_rows(cell),
                "notes": notes_of(cell),
                "placement": placement_detail(cell),
                "rerun": _rerun(cell, meta),
            }
        )
    where = {cell.key: i for i, cell in enumerate(cells)}
    versions = toolkits_of(matrix)
    diffs = [
        {"a": a, "b": b, "reports": [_report(r, where) for r in toolkit_diff(matrix, a, b)]}
        for a in versions
        for b in versions
        if a != b
    ]
    changed: dict[str, Any] = {}
    if previous is not None:
        label = f"since the previous run ({previous.meta.get('started') or 'undated'})"
        changed["previous"] = _report(compare(previous, matrix, label), where)
    if len(versions) >= 2:
        changed["toolkit"] = {"a": versions[-2], "b": versions[-1]}
    models = [
        {
            "line": row.line(),
            "tone": "good" if row.passed == row.targets else "bad",
            "cells": [i for i, c in enumerate(cells) if c.variant_id == row.variant_id],
            "name": row.name,
        }
        for row in model_rows(cells)
    ]
    return {
        "statuses": legend(),
        "models": models,
        "targets": [list(t) for t in targets],
        "variants": variants,
        "cells": entries,
        "details": details,
        "strings": strings.items,
        "signatures": signatures,
        "diffs": diffs,
        "changed": changed,
        "history": history_data(history, where) if history else None,
        "placements": list(LABELS),
        "chips": chip_comparison(cells),
    }


def history_data(runs: Sequence[Any], where: dict[tuple[str, ...], int]) -> dict[str, Any]:
    """Pass rate per target over the runs, and the flipped cells (newest first, at most 500)."""
    from pytest_rknn.results.history import flips, pass_rates

    rates = pass_rates(list(runs))
    found = flips(list(runs))
    return {
        "runs": [run.label for run in runs],
        "targets": [
            {"target": " / ".join(t), "series": [list(e) if e else None for e in series]}
            for t, series in rates.items()
        ],
        "flips": [
            [f.run, where.get(f.change.key, -1), f.change.kind, "/".join(f.change.key)]
            + [f.change.before, f.change.after]
            for f in found[:500]
        ],
        "flip_count": len(found),
        "placement": history_placement(list(runs)),
    }
