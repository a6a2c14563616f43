"""How one cell runs: from its coordinates to its record, through the toolkit worker.

:func:`run_cell` makes (or recalls) the subject's model, inputs and reference, takes the
toolkit's answer from the cache when everything that went into the job is unchanged or else from
a worker (the job and its key: :mod:`.cell_job`; a job whose process died in a toolkit call is
run again: :mod:`.reproduce`), has the verdict made (:mod:`~pytest_rknn.verdict.judge`) and
returns the cell's :class:`~pytest_rknn.results.cell.CellRecord` with the text a failing pytest
item shows. A toolkit fault is a status, never an exception; so is a host that cannot make the
inputs or reference.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pytest_rknn.pipeline import analysis, dynamic_run, reproduce
from pytest_rknn.pipeline.build_config import rejected_by
from pytest_rknn.pipeline.cache import Conversion
from pytest_rknn.pipeline.cache_keys import array_digest, code_digest, verdict_key
from pytest_rknn.pipeline.calibration import CalibrationSet, record_of
from pytest_rknn.pipeline.cell_job import conversion_key_of, conversion_of, load_shapes, make_job
from pytest_rknn.pipeline.materials import BuiltModel, HostError
from pytest_rknn.pipeline.plan import CellSpec
from pytest_rknn.pipeline.session import RknnSession
from pytest_rknn.pipeline.targets import QUANT_MODES, base_quant, unsupported_reason
from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.status import Status
from pytest_rknn.toolkit.protocol import JobResult
from pytest_rknn.variants.export_process import ExportProcessError
from pytest_rknn.variants.forms import NotBuildable
from pytest_rknn.variants.hf_export import ExportFailed
from pytest_rknn.verdict.judge import Verdict, judge_outputs, measure
from pytest_rknn.verdict.logtext import first_error, harmless, precision_warnings, shorten
from pytest_rknn.verdict.placement import broken_requirement
from pytest_rknn.verdict.positions import masks_of, selections
from pytest_rknn.verdict.rules import Judging, emulated

# The code whose change changes a judgement of the same outputs.
_VERDICT_CODE = (
    "verdict/metrics.py",
    "verdict/positions.py",
    "verdict/judge.py",
    "verdict/tolerance.py",
)


@dataclass
class Outcome:
    """A finished cell: its record, the short text a failing pytest item shows, the details
    (the tolerance report and the toolkit's log) shown with ``-v``, and its outputs."""

    record: CellRecord
    message: str = ""
    outputs: list[np.ndarray] | None = None
    details: str = ""

    @property
    def status(self) -> Status:
        return self.record.status


def new_record(cell: CellSpec, status: Status, **fields: object) -> CellRecord:
    """A record of ``cell`` (its identity always from the cell itself)."""
    return CellRecord(
        variant_id=cell.subject.id,
        platform=cell.platform,
        toolkit=cell.toolkit,
        quant=cell.quant,
        status=status,
        variant=cell.subject.to_dict(),
        **fields,  # type: ignore[arg-type]
    )


def message(record: CellRecord) -> str:
    """What a failing or skipped item shows: status and signature, the reason (for a tolerance
    failure, the bounds broken), the toolkit's first error line (one that good builds print
    too comes first only when it is the only one, and says so) and, on an accuracy failure,
    the toolkit's warnings about precision."""
    lines = [f"{record.status.value}: {record.signature or record.reason or ''}".rstrip()]
    if record.reason and record.reason != record.signature:
        lines.append(f"reason: {record.reason}")
    origin = analysis.describe(record.error_origin)
    if origin:
        lines.append(origin)
    first = first_error(record.log_excerpt or "")
    if first is not None and first[1].strip() not in (record.reason or ""):
        line = shorten(first[1].strip(), 300)
        if harmless(line):
            line += " (good builds print it too)"
        lines.append(f"first error in the toolkit's log: {line}")
    if record.status is Status.TOLERANCE_FAIL:
        for warning in precision_warnings(record.log_excerpt or "")[:3]:
            lines.append(f"precision warning in the toolkit's log: {shorten(warning, 300)}")
    return "\n".join(lines)


def details(record: CellRecord, report: str = "") -> str:
    """The rest: every metric against its bound, and the toolkit's log excerpt."""
    parts = [report] if report else []
    if record.log_excerpt:
        parts += ["toolkit log (excerpt):", record.log_excerpt]
    return "\n".join(parts)


def _short(cell: CellSpec, status: Status, reason: str, signature: str | None) -> Outcome:
    record = new_record(cell, status, reason=reason, signature=signature)
    return Outcome(record, message(record))


def run_guarded(cell: CellSpec, session: RknnSession, judging: Judging) -> Outcome:
    """:func:`run_cell`, with a harness bug recorded as ``crash`` (a wrong result is worse
    than none): the cell still lands in the matrix, with the traceback in its log excerpt."""
    try:
        return run_cell(cell, session, judging)
    except Exception as exc:  # noqa: BLE001
        record = new_record(
            cell,
            Status.CRASH,
            reason=f"internal error in pytest-rknn: {type(exc).__name__}: {exc}",
            signature="internal error",
            log_excerpt=traceback.format_exc()[-4000:],
        )
        return Outcome(record, message(record), details=details(record))


@dataclass
class _Made:
    """What a cell's job is made of on the host, and the key of its conversion."""

    built: BuiltModel
    inputs: dict[str, np.ndarray]
    names: list[str]
    arrays: list[np.ndarray]
    calibration: CalibrationSet | None
    key: str | None
    load: dict[str, list]


def _make(cell: CellSpec, session: RknnSession) -> _Made | Outcome:
    """The cell's model, inputs (and calibration set) and conversion key, or the short
    outcome of a cell that cannot get that far."""
    reason = unsupported_reason(cell.platform, cell.quant) or rejected_by(cell.toolkit, cell.quant)
    if reason:
        return _short(cell, Status.UNSUPPORTED, reason, "unsupported")
    materials = session.materials
    try:
        built = materials.model(cell.subject)
    except NotBuildable as exc:
        return _short(cell, Status.UNSUPPORTED, f"not buildable here: {exc}", "not buildable")
    except ExportFailed as exc:
        return _short(cell, Status.EXPORT_FAIL, exc.reason, exc.signature)
    except HostError as exc:
        return _short(cell, Status.REFERENCE_ERROR, str(exc), "inputs not computable")
    except OSError as exc:  # the host's disk, not the toolkit: never a verdict, never kept
        return _short(cell, Status.CRASH, f"the host could not make the model: {exc}", "host error")
    except ExportProcessError as exc:  # the exporter's or the machine's, not the model's
        return _short(cell, Status.CRASH, f"the exporter failed: {exc}", "exporter failed")
    try:
        inputs = materials.inputs(cell.subject)
    except HostError as exc:
        return _short(cell, Status.REFERENCE_ERROR, str(exc), "inputs not computable")
    names = [i.name for i in built.model.graph.input if i.name in inputs]
    arrays = [inputs[n] for n in names]
    calibration = None
    if QUANT_MODES[base_quant(cell.quant)].do_quantization:
        try:
            calibration = materials.calibration(
                cell.subject, inputs, names, session.settings.calibration
            )
        except HostError as exc:
            return _short(cell, Status.REFERENCE_ERROR, str(exc), "calibration set not computable")
    made = _Made(built, inputs, names, arrays, calibration, None, load_shapes(built, names, arrays))
    made.key = _key_now(cell, session, made)
    return made


def _key_now(cell: CellSpec, session: RknnSession, made: _Made) -> str | None:
    """The conversion's cache key, once the environment is usable (its identity known)."""
    identity = session.toolkits.identity(cell.toolkit)
    if identity is None:
        return None
    digests = session.materials.digests(cell.subject, made.inputs)
    pairs = [(n, digests[n]) for n in made.names]
    return conversion_key_of(cell, made.built, pairs, identity, made.calibration, made.load)


def needs_job(cell: CellSpec, session: RknnSession) -> bool:
    """Make what ``cell`` needs on the host and say whether it will run a toolkit job (its
    conversion is not cached and its environment is usable); for the prefetcher."""
    made = _make(cell, session)
    if isinstance(made, Outcome):
        return False
    key = (
        dynamic_run.key_of(cell, session, made)
        if dynamic_run.is_dynamic(cell.subject)
        else made.key
    )
    if key is not None and session.cache.has(key):
        return False
    python, _why = session.python_for(cell.toolkit)
    return python is not None


def warm_reference(cell: CellSpec, session: RknnSession) -> None:
    """Make (and cache) ``cell``'s reference outputs now; a failure is the cell's to meet."""
    made = _make(cell, session)
    if not isinstance(made, Outcome):
        with contextlib.suppress(HostError):
            session.materials.reference(cell.subject, made.built, made.inputs)


def run_cell(cell: CellSpec, session: RknnSession, judging: Judging) -> Outcome:
    """Run (or recall) one cell; never raises for a toolkit fault."""
    started = time.perf_counter()
    session.running(cell)
    made = _make(cell, session)
    if isinstance(made, Outcome):
        return made
    if dynamic_run.is_dynamic(cell.subject):
        outcome = dynamic_run.run_dynamic(cell, session, judging.bounds, made, started)
        outcome.record.bounds_rule = (
            judging.rule
            if judging.emulate is None
            else "fixed fp16 defaults (a dynamic-shape cell runs no fp16 emulation per shape)"
        )
        return outcome
    built, inputs, arrays, calibration = made.built, made.inputs, made.arrays, made.calibration
    key = made.key
    conversion = session.cache.get(key) if key else None
    if conversion is None:
        python, why = session.python_for(cell.toolkit)
        if python is None:
            return _short(cell, Status.ENV_ERROR, str(why), "toolkit environment broken")
        session.missed(cell)

        def run_job() -> JobResult:
            job = make_job(
                cell, built.path, made.load, arrays, session.workdir / "jobs", calibration
            )
            return session.pool.run(cell.toolkit, job)

        conversion = conversion_of(reproduce.confirmed(run_job(), run_job))
        key = key or _key_now(cell, session, made)
        if key is not None:
            session.cache.put(key, conversion)

    emulation: dict[str, object] = {}
    if judging.emulate and conversion.status is None:
        judging = _emulated(cell, session, built, inputs, judging, emulation)
    verdict = _verdict(cell, session, built, inputs, conversion, judging)
    calibrated = record_of(calibration, cell.subject, inputs) if calibration else None
    reason = verdict.reason
    if calibrated and calibrated["note"] and verdict.status.failing:
        reason = f"{reason}; {_trap(calibrated)}" if reason else _trap(calibrated)
    warning = conversion.signature if conversion.status is None else None
    origin = None
    if verdict.status is Status.TOLERANCE_FAIL:
        origin = _error_origin(cell, session, built.path, made.load, arrays, calibration, key)
    record = new_record(
        cell,
        verdict.status,
        signature=verdict.signature,
        reason=reason,
        metrics=verdict.metrics,
        bounds=judging.bounds.to_dict() if conversion.status is None else None,
        bounds_rule=judging.rule if conversion.status is None else None,
        timings={**conversion.timings, "cell": round(time.perf_counter() - started, 6)},
        peak_rss_mb=conversion.peak_rss_mb,
        cached=conversion.cached,
        log_excerpt=conversion.log_excerpt if verdict.status is not Status.PASS or warning else "",
        artifact=conversion.artifact,
        job_id=conversion.job_id,
        warning=warning,
        fp16_layers=conversion.fp16_layers,
        error_origin=origin,
        attention=built.export,
        placement=conversion.placement,
        calibration=calibrated,
        extra={"fp16_emulation": emulation} if emulation else {},
    )
    return Outcome(record, message(record), conversion.outputs, details(record, verdict.report))


def held_to_npu(outcome: Outcome, require: str | None) -> Outcome:
    """The outcome under ``--rknn-require-npu`` (``attention`` or ``all``; None: placement is
    recorded only). A passing cell with ops the requirement wants on the NPU running on the CPU
    becomes ``cpu-fallback``, naming them; a passing cell whose placement cannot be read becomes
    ``crash`` with the reason (a pass it cannot vouch for is not given). Other statuses stand."""
    record = outcome.record
    if require is None or record.status is not Status.PASS:
        return outcome
    placement = record.placement
    if not placement or "error" in placement:
        why = (placement or {}).get("error", "no layer table was recorded")
        record.status = Status.CRASH
        record.signature = "placement unreadable"
        record.reason = f"--rknn-require-npu {require} cannot be checked: {why}"
    else:
        ops = broken_requirement(placement, require)
        if not ops:
            return outcome
        what = "attention ops" if require == "attention" else "ops"
        kinds = sorted({op.split(" ", 1)[0] for op in ops})
        record.status = Status.CPU_FALLBACK
        record.signature = f"CPU fallback: {', '.join(kinds)}"
        record.reason = f"{len(ops)} {what} on the CPU (npu={require}): {'; '.join(ops)}"[:600]
    outcome.message = message(record)
    return outcome


def _emulated(
    cell: CellSpec,
    session: RknnSession,
    built: BuiltModel,
    inputs: dict[str, np.ndarray],
    judging: Judging,
    figures: dict[str, object],
) -> Judging:
    """``judging`` with bounds scaled to what float16 does to this model (see
    :mod:`~pytest_rknn.verdict.rules`); ``figures`` gets the emulation's metrics per output."""
    materials = session.materials
    try:
        reference = materials.reference(cell.subject, built, inputs)
    except HostError:
        return emulated(judging, "no reference")  # the verdict says why
    try:
        half = materials.fp16_emulation(cell.subject, built, inputs)
    except HostError as exc:
        return emulated(judging, f"the float16 run failed: {exc}")
    if len(half) != len(reference):
        return emulated(judging, "the float16 run gave another number of outputs")
    masks = masks_of(cell.subject, inputs)
    chosen = selections(masks, [r.shape for r in reference], judging.all_positions)
    metrics = [
        measure(ref, out, i, chosen[i])
        for i, (ref, out) in enumerate(zip(reference, half, strict=True))
    ]
    for i, m in enumerate(metrics):
        figures[f"output{i}"] = {
            key: m.to_dict().get(key) for key in ("cosine", "rel_l2", "max_abs_rms", "error")
        }
    return emulated(judging, metrics)


def _trap(calibrated: dict[str, object]) -> str:
    """A failing quantized cell's word on a calibration that never masked what its input does."""
    return (
        f"{calibrated['note']} (calibration: {calibrated['samples']} {calibrated['source']} "
        "samples): the quantized mask path may clip the padding away; calibrate on padded "
        "samples (model.calib.npz beside the model, or --rknn-calibration-data)"
    )


def _error_origin(
    cell: CellSpec,
    session: RknnSession,
    model: Path,
    load: dict[str, list],
    arrays: list[np.ndarray],
    calibration: CalibrationSet | None,
    key: str | None,
) -> dict[str, object]:
    """Where the toolkit's accuracy_analysis sees a tolerance failure's error start (from the
    cache when the same conversion was analysed); a failed analysis is a field, not a status."""
    # The reading of the report is part of the answer: its code is in the key.
    reader = code_digest(("pipeline/analysis.py",))
    origin_key = f"{key}-analysis{analysis.ANALYSIS_VERSION}-{reader}" if key else None
    found = session.cache.get_origin(origin_key) if origin_key else None
    if found is not None:
        return found
    python, why = session.python_for(cell.toolkit)
    if python is None:
        return {"error": f"no toolkit environment to run accuracy_analysis: {why}"}
    job = make_job(cell, model, load, arrays, session.workdir / "jobs", calibration, analyse=True)
    result = session.pool.run(cell.toolkit, job)
    if result.fault is not None:
        # The worker died, hung or passed its cap: say so, and never store it.
        return {"error": f"accuracy_analysis {result.fault.value}: {result.error}"}
    if result.failed_phase is not None or result.analysis is None:
        found = {"error": f"accuracy_analysis failed: {result.error or 'no report'}"}
    else:
        found = analysis.read_origin(result.analysis)
    if origin_key is not None:
        session.cache.put_origin(origin_key, found)
    return found


def _verdict(
    cell: CellSpec,
    session: RknnSession,
    built: BuiltModel,
    inputs: dict[str, np.ndarray],
    conversion: Conversion,
    judging: Judging,
) -> Verdict:
    """The cell's verdict, on the positions each output is judged on; a judgement of the same
    outputs against the same reference under the same bounds and positions is taken from the
    cache."""
    if conversion.status is not None:
        return Verdict(conversion.status, conversion.signature, conversion.error)
    materials = session.materials
    judged = None
    masks = masks_of(cell.subject, inputs)
    names = [o.name for o in built.model.graph.output]
    if conversion.stored_outputs:
        reference_key = materials.reference_key(cell.subject, built, inputs)
        how = {**judging.key(), "code": code_digest(_VERDICT_CODE)}
        how["masks"] = [(m.name, m.layout, array_digest(m.keep)) for m in masks]
        judged = verdict_key(conversion.stored_outputs, reference_key, how, names)
        found = session.cache.get_verdict(judged)
        if found is not None:
            return found
    try:
        reference = materials.reference(cell.subject, built, inputs)
    except HostError as exc:
        return Verdict(
            Status.REFERENCE_ERROR,
            "reference not computable",
            f"converted and simulated, but {exc}",
        )
    chosen = selections(masks, [r.shape for r in reference], judging.all_positions)
    verdict = judge_outputs(
        reference, conversion.outputs or [], judging.bounds, chosen, names=names
    )
    if judged is not None:
        session.cache.put_verdict(judged, verdict)
    return verdict
