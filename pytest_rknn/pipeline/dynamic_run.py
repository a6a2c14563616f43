"""How a cell with listed shapes runs (``--rknn-dims``): one conversion, one verdict per shape.

The cell's model is converted once with ``config(dynamic_input=...)`` listing every shape set
of :mod:`.dims`; the worker simulates each (``remote_shapes.py``) and one shape not listed.
Each served shape is judged against the reference run at that shape; the cell passes only when
every listed shape passes, and its reason names the shapes that did not. A conversion that
fails fails every shape with the toolkit's reason and signature. The compiler's internal and
weight memory per compiled graph are read from the job's verbose log (:func:`graph_memory`).

Such a cell is not read from nor written to the conversion cache yet: it is converted on every
run (its id, and so every key made of it, carries the dims).
"""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_rknn.pipeline import reproduce
from pytest_rknn.pipeline.cell_job import conversion_of, make_job
from pytest_rknn.pipeline.dims import ShapeSet, serves
from pytest_rknn.pipeline.input_roles import InputRoleError
from pytest_rknn.pipeline.materials import HostError, Materials
from pytest_rknn.results.status import Status
from pytest_rknn.toolkit.protocol import JobResult, write_shape_inputs
from pytest_rknn.verdict.judge import Verdict, judge_failure, judge_outputs

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
    """Convert once with every listed shape, judge each, and make the cell's record."""
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
    python, why = session.python_for(cell.toolkit)
    if python is None:
        return _short(cell, Status.ENV_ERROR, str(why), "toolkit environment broken")
    session.missed(cell)

    def run_job() -> JobResult:
        job = make_job(
            cell, made.built.path, {}, made.arrays, session.workdir / "jobs", made.calibration
        )
        job.config["dynamic_input"] = [_listed(s, names) for s in sets]
        job.verbose = True
        write_shape_inputs(
            job, [[arrays[n] for n in names] for arrays in inputs], [probe_inputs[n] for n in names]
        )
        return session.pool.run(cell.toolkit, job)

    result = reproduce.confirmed(run_job(), run_job)
    conversion = conversion_of(result)
    memory = graph_memory(result.log_path) if result.log_path else {}
    shapes = []
    for i, shape_set in enumerate(sets):
        verdict = _judge_shape(cell, session.materials, made, inputs[i], result, i, bounds)
        if verdict is None:  # the conversion failed: every shape with the toolkit's answer
            why = f"not served: the conversion failed: {conversion.error}"
            verdict = Verdict(conversion.status or Status.CRASH, conversion.signature, why)
        entry: dict[str, Any] = {
            "dims": shape_set.dims_dict,
            "inputs": {n: list(s) for n, s in shape_set.shapes},
            "status": verdict.status.value,
            "signature": verdict.signature,
            "reason": verdict.reason,
            "metrics": verdict.metrics,
        }
        found = memory.get(str(_listed(shape_set, names)))
        if found:
            entry["memory"] = found
        shapes.append((shape_set, verdict, entry))
    failing = [(s, v) for s, v, _e in shapes if v.status is not Status.PASS]
    largest = max(shapes, key=lambda t: t[0].size)[1]
    if not failing:
        status, signature = Status.PASS, None
        reason = f"serves {serves(subject.dims)}"
    else:
        first = failing[0][1]
        status, signature = first.status, first.signature
        failed = "; ".join(
            f"{s.describe()}: {v.status.value} ({v.signature or v.reason})" for s, v in failing
        )
        passed = [s.describe() for s, v, _e in shapes if v.status is Status.PASS]
        reason = f"shapes failed: {failed}" + (f"; serves {', '.join(passed)}" if passed else "")
        if conversion.status is not None:
            reason = f"{conversion.error}; {reason}"
    unlisted: dict[str, Any] = {"dims": probe.dims_dict, "answer": "untried", "message": None}
    if result.unlisted is not None:
        unlisted.update(result.unlisted)
    elif conversion.status is not None:
        unlisted["message"] = "the job ended before the runtime was asked"
    warning = conversion.signature if conversion.status is None else None
    record = new_record(
        cell,
        status,
        signature=signature,
        reason=reason,
        metrics=largest.metrics,
        bounds=bounds.to_dict() if conversion.status is None else None,
        timings={**conversion.timings, "cell": round(time.perf_counter() - started, 6)},
        peak_rss_mb=conversion.peak_rss_mb,
        cached=False,
        log_excerpt=conversion.log_excerpt if status is not Status.PASS or warning else "",
        artifact=conversion.artifact,
        job_id=conversion.job_id,
        warning=warning,
        fp16_layers=conversion.fp16_layers,
        attention=made.built.export,
        shapes=[e for _s, _v, e in shapes],
        unlisted_shape=unlisted,
    )
    report = "\n".join(f"[{s.describe()}] {v.report}" for s, v, _e in shapes if v.report)
    return Outcome(record, message(record), conversion.outputs, details(record, report))


def _judge_shape(
    cell: CellSpec,
    materials: Materials,
    made: _Made,
    inputs: dict[str, np.ndarray],
    result: JobResult,
    index: int,
    bounds: Bounds,
) -> Verdict | None:
    """One listed shape's verdict (None: the job has no answer per shape)."""
    if result.shape_outputs is None or result.shape_errors is None:
        return None
    error = result.shape_errors[index]
    if error is not None:
        status = Status.for_failed_phase("inference")
        verdict = judge_failure(status, "", error)
        return Verdict(verdict.status, verdict.signature, f"refused at inference: {error}")
    try:
        outputs = [np.load(p, allow_pickle=False) for p in result.shape_outputs[index]]
    except (OSError, ValueError) as exc:
        return Verdict(Status.CRASH, "outputs unreadable", f"the shape's outputs: {exc}")
    found = materials._make_reference(cell.subject, made.built.model, inputs)
    if isinstance(found, HostError):
        return Verdict(Status.REFERENCE_ERROR, "reference not computable", str(found))
    return judge_outputs(found, outputs, bounds)
