"""A cell: one (subject, platform, toolkit, quant) conversion, run and judged end to end.

:func:`run_cell` builds the subject's model and inputs, reuses a cached result when everything
it depends on is unchanged, otherwise sends a job to the toolkit worker, compares the simulator's
outputs with the reference, and returns the matrix record of the cell with its status.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_rknn import signatures
from pytest_rknn.logtext import log_excerpt
from pytest_rknn.platforms import QUANT_MODES, unsupported_reason
from pytest_rknn.protocol import Job, JobResult
from pytest_rknn.session import RknnSession, cache_key
from pytest_rknn.subjects import Subject
from pytest_rknn.tolerance import (
    Bounds,
    check,
    compute_metrics,
    format_report,
    violation_signature,
)
from pytest_rknn.variants.forms import NotBuildable

JUDGED = ("pass", "tolerance-fail")
FAILING = ("convert-fail", "runtime-fail", "tolerance-fail", "crash", "timeout", "oom")


@dataclass(frozen=True)
class CellSpec:
    """Where a subject is converted: the coordinates of one matrix cell."""

    subject: Subject
    platform: str
    toolkit: str
    quant: str

    @property
    def id(self) -> str:
        return f"{self.subject.id}-{self.platform}-{self.toolkit}-{self.quant}"

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.subject.id, self.platform, self.toolkit, self.quant)


@dataclass
class Outcome:
    """A finished cell: its matrix record and the text a failing pytest item shows."""

    record: dict[str, Any]
    message: str = ""
    outputs: list[np.ndarray] | None = None

    @property
    def status(self) -> str:
        return self.record["status"]


def _record(cell: CellSpec, status: str, **fields: Any) -> dict[str, Any]:
    record = {
        "variant_id": cell.subject.id,
        "variant": cell.subject.to_dict(),
        "platform": cell.platform,
        "toolkit": cell.toolkit,
        "quant": cell.quant,
        "status": status,
        "signature": None,
        "reason": None,
        "metrics": {},
        "timings": {},
        "peak_rss_mb": None,
        "cached": False,
        "log_excerpt": "",
    }
    record.update(fields)
    return record


def _job(cell: CellSpec, model: Path, arrays: list[np.ndarray], outdir: Path) -> Job:
    mode = QUANT_MODES[cell.quant]
    job = Job.create(model, cell.platform, outdir, arrays, config=dict(mode.config))
    if mode.do_quantization:
        # One calibration sample: the cell's own inputs, as .npy paths relative to the list.
        dataset = outdir / "dataset.txt"
        dataset.write_text(" ".join(Path(p).name for p in job.inputs) + "\n")
        job.do_quantization, job.dataset = True, str(dataset)
    return job


def judge(
    reference: list[np.ndarray], outputs: list[np.ndarray], bounds: Bounds
) -> tuple[str, dict[str, Any], str, str | None]:
    """Status, metrics per output, report and signature of outputs against the reference."""
    if len(outputs) != len(reference):
        text = f"the simulator returned {len(outputs)} outputs, the reference has {len(reference)}"
        return "tolerance-fail", {}, text, "tolerance: output count"
    metrics = {}
    for i, (ref, out) in enumerate(zip(reference, outputs, strict=True)):
        metrics[f"output{i}"] = compute_metrics(ref, np.asarray(out))
    violations = check(metrics, bounds)
    report = format_report(metrics, bounds)
    status = "tolerance-fail" if violations else "pass"
    signature = violation_signature(violations) if violations else None
    return status, {k: m.to_dict() for k, m in metrics.items()}, report, signature


def _from_result(cell: CellSpec, result: JobResult, reference: list, bounds: Bounds) -> Outcome:
    status = {"ok": "pass"}.get(result.status, result.status)
    metrics: dict[str, Any] = {}
    report = ""
    outputs = None
    signature = None
    if result.status == "ok":
        outputs = result.load_outputs()
        status, metrics, report, signature = judge(reference, outputs, bounds)
    else:
        signature = signatures.classify(result.log, result.error, status)
    record = _record(
        cell,
        status,
        signature=signature,
        reason=result.error,
        metrics=metrics,
        timings=result.timings,
        peak_rss_mb=result.peak_rss_mb,
        log_excerpt=log_excerpt(result.log) if status != "pass" else "",
        artifact=result.artifact,
    )
    return Outcome(record, _message(record, report), outputs)


def _message(record: dict[str, Any], report: str = "") -> str:
    status = record["status"]
    lines = [f"{status}: {record['signature'] or record['reason'] or ''}".rstrip()]
    if record.get("reason") and record["reason"] != record["signature"]:
        lines.append(f"reason: {record['reason']}")
    if report:
        lines.append(report)
    if record.get("log_excerpt") and status != "tolerance-fail":
        lines += ["toolkit log (excerpt):", record["log_excerpt"]]
    return "\n".join(lines)


def run_cell(cell: CellSpec, session: RknnSession, bounds: Bounds) -> Outcome:
    """Run (or recall) one cell; never raises for a toolkit fault."""
    started = time.perf_counter()
    reason = unsupported_reason(cell.platform, cell.quant)
    if reason:
        return Outcome(_record(cell, "unsupported", reason=reason, signature="unsupported"), reason)
    try:
        built = session.built(cell.subject)
    except NotBuildable as exc:
        text = f"not buildable here: {exc}"
        return Outcome(_record(cell, "unsupported", reason=text, signature="not buildable"), text)
    inputs = session.inputs(cell.subject)
    names = [i.name for i in built.model.graph.input if i.name in inputs]
    arrays = [inputs[n] for n in names]
    key = cache_key(
        model=built.sha256,
        inputs=[(n, a.dtype.str, a.shape, _digest(a)) for n, a in zip(names, arrays, strict=True)],
        platform=cell.platform,
        quant=cell.quant,
        toolkit=cell.toolkit,
        env=session.recipe_hash(cell.toolkit),
        limits=[session.settings.limits.timeout, session.settings.limits.max_memory],
    )
    hit = session.cache_get(key)
    if hit is not None:
        if hit.get("bounds") == bounds.to_dict() or hit["record"]["status"] not in JUDGED:
            record = {**hit["record"], "cached": True}
            return Outcome(record, hit.get("message") or _message(record))
        outputs = session.cached_outputs(key, hit["outputs"]) if hit.get("outputs") else None
        if outputs is not None:
            reference = session.reference(cell.subject, built.model, inputs)
            return _recall(cell, hit["record"], outputs, reference, bounds)
    python, why = session.python_for(cell.toolkit)
    if python is None:
        record = _record(cell, "env-error", reason=why, signature="toolkit environment broken")
        return Outcome(record, f"env-error: {why}")
    outdir = session.workdir / "cells" / _safe(cell.id)
    result = session.pool.run(cell.toolkit, _job(cell, built.path, arrays, outdir))
    reference = session.reference(cell.subject, built.model, inputs)
    outcome = _from_result(cell, result, reference, bounds)
    outcome.record["timings"]["cell"] = round(time.perf_counter() - started, 6)
    if outcome.status != "env-error":
        stored = {"record": outcome.record, "bounds": bounds.to_dict(), "message": outcome.message}
        session.cache_set(key, stored, outcome.outputs)
    return outcome


def _recall(
    cell: CellSpec,
    stored: dict[str, Any],
    outputs: list[np.ndarray] | None,
    reference: list,
    bounds: Bounds,
) -> Outcome:
    """A cached cell, judged again: the bounds may have changed since it ran."""
    record = dict(stored)
    record["cached"] = True
    report = ""
    if outputs is not None and record["status"] in JUDGED:
        status, metrics, report, signature = judge(reference, outputs, bounds)
        record.update(status=status, metrics=metrics, signature=signature)
    return Outcome(record, _message(record, report))


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
