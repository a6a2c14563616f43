"""How a cell with listed shapes runs (``--rknn-dims``): one conversion, one verdict per shape.

The cell's model is converted once with ``config(dynamic_input=...)`` listing every shape set
of :mod:`.dims`; the worker simulates each (``remote_shapes.py``) and one shape not listed.
Each served shape is judged against the reference run at that shape; the cell passes only when
every listed shape passes, and its reason names the shapes that did not. A conversion that
fails fails every shape with the toolkit's reason and signature. The compiler's internal and
weight memory per compiled graph are read from the job's verbose log (:func:`graph_memory`).

The conversion is cached like a static cell's, under a key that adds the listed shapes and
every shape's inputs (:func:`_key`), with its answer per shape (output counts, errors, memory,
the unlisted shape's answer) beside the outputs; an entry whose answer per shape does not fit
the cell's shapes is a miss. The verdicts are made anew on every run.
"""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_rknn.pipeline import reproduce
from pytest_rknn.pipeline.cache import Conversion
from pytest_rknn.pipeline.cache_keys import array_digest
from pytest_rknn.pipeline.cell_job import conversion_key_of, conversion_of, make_job
from pytest_rknn.pipeline.dims import ShapeSet, serves
from pytest_rknn.pipeline.input_roles import InputRoleError
from pytest_rknn.pipeline.materials import HostError, Materials
from pytest_rknn.results.status import Status
from pytest_rknn.toolkit.protocol import UNLISTED_ANSWERS, JobResult, write_shape_inputs
from pytest_rknn.verdict.judge import Verdict, judge_failure, judge_outputs
from pytest_rknn.verdict.positions import masks_of, selections

if TYPE_CHECKING:
    from pytest_rknn.pipeline.plan import CellSpec
    from pytest_rknn.pipeline.run import Outcome, _Made
    from pytest_rknn.pipeline.session import RknnSession
    from pytest_rknn.verdict.tolerance import Bounds

_INFER = re.compile(r"infer shape for (\[.*\]) \.\.\.")
_SIZE = re.compile(r"Total (Internal|Weight) Memory Size: ([\d.]+)\s*([KMG]?B)")
_GRAPH = re.compile(r"Dynamic Shape: build graph\[(\d+)\] done")
_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}


def is_dynamic(subject: object) -> bool:
    """Whether the subject lists shapes to serve (a model given ``--rknn-dims``)."""
    sets = getattr(subject, "shape_sets", None)
    return callable(sets) and bool(sets())


def graph_memory(log: str | Path) -> dict[str, dict[str, int]]:
    """The compiler's memory per compiled graph, by its input shapes (``str`` of the list of
    shapes, as in ``dynamic_input``), from a verbose build log; ``{}`` when it says nothing."""
    order: list[str] = []
    sizes: dict[str, int] = {}
    found: dict[str, dict[str, int]] = {}
    try:
        lines = Path(log).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        if (match := _INFER.search(line)) is not None:
            try:
                order.append(str(ast.literal_eval(match.group(1))))
            except (ValueError, SyntaxError):
                return {}
        elif (match := _SIZE.search(line)) is not None:
            kind = "internal_bytes" if match.group(1) == "Internal" else "weight_bytes"
            sizes[kind] = int(float(match.group(2)) * _UNITS[match.group(3)])
        elif (match := _GRAPH.search(line)) is not None:
            index = int(match.group(1))
            if index < len(order) and sizes:
                found[order[index]] = dict(sizes)
            sizes = {}
    return found


def _listed(shape_set: ShapeSet, names: list[str]) -> list[list[int]]:
    shapes = shape_set.shapes_dict
    return [list(shapes[n]) for n in names]


def run_dynamic(
    cell: CellSpec, session: RknnSession, bounds: Bounds, made: _Made, started: float
) -> Outcome:
    """Convert once with every listed shape (or recall that conversion), judge each, and make
    the cell's record."""
    from pytest_rknn.pipeline.run import Outcome, _short, details, message, new_record

    subject: Any = cell.subject
    sets: list[ShapeSet] = subject.shape_sets()
    probe: ShapeSet = subject.unlisted_set()
    names = made.names
    seed = session.materials.seed
    try:
        inputs = [subject.inputs_at(seed, s.shapes_dict) for s in sets]
        probe_inputs = subject.inputs_at(seed, probe.shapes_dict)
    except InputRoleError as exc:
        return _short(cell, Status.REFERENCE_ERROR, f"no inputs: {exc}", "inputs not computable")
    listed = [_listed(s, names) for s in sets]
    key = _key(cell, session, made, listed, inputs, probe_inputs)
    conversion = session.cache.get(key) if key else None
    # Kept: an answer for each shape, or a failed conversion (no shape was tried).
    if (
        conversion is not None
        and _per_shape(conversion, len(sets)) is None
        and (conversion.shapes is not None or conversion.status is None)
    ):
        conversion = None
    if conversion is None:
        python, why = session.python_for(cell.toolkit)
        if python is None:
            return _short(cell, Status.ENV_ERROR, str(why), "toolkit environment broken")
        session.missed(cell)

        def run_job() -> JobResult:
            job = make_job(
                cell, made.built.path, {}, made.arrays, session.workdir / "jobs", made.calibration
            )
            job.config["dynamic_input"] = listed
            job.verbose = True
            arrays = [[found[n] for n in names] for found in inputs]
            write_shape_inputs(job, arrays, [probe_inputs[n] for n in names])
            return session.pool.run(cell.toolkit, job)

        result = reproduce.confirmed(run_job(), run_job)
        answer = None
        if result.shape_outputs is not None:
            result.outputs = [p for paths in result.shape_outputs for p in paths]
            answer = {
                "counts": [len(paths) for paths in result.shape_outputs],
                "errors": list(result.shape_errors or []),
                "seconds": list(result.shape_seconds or []),
                "memory": graph_memory(result.log_path) if result.log_path else {},
                "unlisted": result.unlisted,
            }
        conversion = conversion_of(result)
        conversion.shapes = answer
        if key is not None:
            session.cache.put(key, conversion)
    per_shape = _per_shape(conversion, len(sets))
    shapes = []
    for i, shape_set in enumerate(sets):
        if per_shape is None:  # the conversion failed: every shape with the toolkit's answer
            why = f"not served: the conversion failed: {conversion.error}"
            verdict = Verdict(conversion.status or Status.CRASH, conversion.signature, why)
        else:
            outputs, error = per_shape[i]
            verdict = _judge_shape(cell, session.materials, made, inputs[i], outputs, error, bounds)
        entry: dict[str, Any] = {
            "dims": shape_set.dims_dict,
            "inputs": {n: list(s) for n, s in shape_set.shapes},
            "status": verdict.status.value,
            "signature": verdict.signature,
            "reason": verdict.reason,
            "metrics": verdict.metrics,
        }
        memory = (conversion.shapes or {}).get("memory") or {}
        if memory.get(str(listed[i])):
            entry["memory"] = memory[str(listed[i])]
        shapes.append((shape_set, verdict, entry))
    failing = [(s, v) for s, v, _e in shapes if v.status is not Status.PASS]
    largest = max(shapes, key=lambda t: t[0].size)[1]
    if not failing:
        status, signature = Status.PASS, None
        reason = f"serves {serves(subject.dims)}"
    elif per_shape is None:
        status, signature = failing[0][1].status, failing[0][1].signature
        reason = f"{conversion.error}; so none of {serves(subject.dims)} is served"
    else:
        first = failing[0][1]
        status, signature = first.status, first.signature
        failed = "; ".join(
            f"{s.describe()}: {v.status.value} ({v.signature or v.reason})" for s, v in failing
        )
        passed = [s.describe() for s, v, _e in shapes if v.status is Status.PASS]
        reason = f"shapes failed: {failed}" + (f"; serves {', '.join(passed)}" if passed else "")
    unlisted: dict[str, Any] = {"dims": probe.dims_dict, "answer": "untried", "message": None}
    if conversion.shapes is not None and conversion.shapes.get("unlisted") is not None:
        unlisted.update(conversion.shapes["unlisted"])
    elif per_shape is None:
        unlisted["message"] = "the job ended before the runtime was asked"
    warning = conversion.signature if conversion.status is None else None
    record = new_record(
        cell,
        status,
        signature=signature,
        reason=reason,
        metrics=largest.metrics,
        bounds=bounds.to_dict() if per_shape is not None else None,
        timings={**conversion.timings, "cell": round(time.perf_counter() - started, 6)},
        peak_rss_mb=conversion.peak_rss_mb,
        cached=conversion.cached,
        log_excerpt=conversion.log_excerpt if status is not Status.PASS or warning else "",
        artifact=conversion.artifact,
        job_id=conversion.job_id,
        placement=conversion.placement,
        warning=warning,
        fp16_layers=conversion.fp16_layers,
        attention=made.built.export,
        shapes=[e for _s, _v, e in shapes],
        unlisted_shape=unlisted,
    )
    report = "\n".join(f"[{s.describe()}] {v.report}" for s, v, _e in shapes if v.report)
    outputs = per_shape[-1][0] if per_shape is not None else None
    return Outcome(record, message(record), outputs, details(record, report))


def _key(
    cell: CellSpec,
    session: RknnSession,
    made: _Made,
    listed: list[list[list[int]]],
    inputs: list[dict[str, np.ndarray]],
    probe: dict[str, np.ndarray],
) -> str | None:
    """The conversion's cache key: the cell's, with the listed shapes, every shape's inputs and
    the unlisted shape's instead of the one input set of a static cell."""
    identity = session.toolkits.identity(cell.toolkit)
    if identity is None:
        return None
    names = made.names
    load = {
        "dynamic_input": listed,
        "shape_inputs": [[array_digest(found[n]) for n in names] for found in inputs],
        "probe_inputs": [array_digest(probe[n]) for n in names],
    }
    return conversion_key_of(cell, made.built, [], identity, made.calibration, load)


def key_of(cell: CellSpec, session: RknnSession, made: _Made) -> str | None:
    """The cache key of a dynamic cell's conversion (None: its inputs cannot be made, or the
    environment's identity is unknown); for the prefetcher."""
    subject: Any = cell.subject
    seed = session.materials.seed
    try:
        inputs = [subject.inputs_at(seed, s.shapes_dict) for s in subject.shape_sets()]
        probe = subject.inputs_at(seed, subject.unlisted_set().shapes_dict)
    except InputRoleError:
        return None
    listed = [_listed(s, made.names) for s in subject.shape_sets()]
    return _key(cell, session, made, listed, inputs, probe)


def _per_shape(
    conversion: Conversion, count: int
) -> list[tuple[list[np.ndarray], str | None]] | None:
    """Each listed shape's outputs and error from the conversion (None: it has no answer per
    shape, or one that does not fit ``count`` shapes and its outputs)."""
    answer = conversion.shapes
    if not isinstance(answer, dict):
        return None
    counts, errors = answer.get("counts"), answer.get("errors")
    outputs = conversion.outputs or []
    if not (
        isinstance(counts, list)
        and isinstance(errors, list)
        and len(counts) == len(errors) == count
        and all(isinstance(n, int) and n >= 0 for n in counts)
        and all(e is None or isinstance(e, str) for e in errors)
        and all((n > 0) == (e is None) for n, e in zip(counts, errors, strict=True))
        and sum(counts) == len(outputs)
        and isinstance(answer.get("memory"), dict)
    ):
        return None
    unlisted = answer.get("unlisted")
    if unlisted is not None and not (
        isinstance(unlisted, dict) and unlisted.get("answer") in UNLISTED_ANSWERS
    ):
        return None
    found, start = [], 0
    for n, error in zip(counts, errors, strict=True):
        found.append((list(outputs[start : start + n]), error))
        start += n
    return found


def _judge_shape(
    cell: CellSpec,
    materials: Materials,
    made: _Made,
    inputs: dict[str, np.ndarray],
    outputs: list[np.ndarray],
    error: str | None,
    bounds: Bounds,
) -> Verdict:
    """One listed shape's verdict: refused, or its outputs against the reference at it."""
    if error is not None:
        verdict = judge_failure(Status.for_failed_phase("inference"), "", error)
        return Verdict(verdict.status, verdict.signature, f"refused at inference: {error}")
    found = materials._make_reference(cell.subject, made.built.model, inputs)
    if isinstance(found, HostError):
        return Verdict(Status.REFERENCE_ERROR, "reference not computable", str(found))
    chosen = selections(masks_of(cell.subject, inputs), [r.shape for r in found])
    names = [o.name for o in made.built.model.graph.output]
    return judge_outputs(found, outputs, bounds, chosen, names=names)
