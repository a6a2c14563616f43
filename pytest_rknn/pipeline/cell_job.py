"""What a cell asks of the toolkit, and what the answer becomes.

Owns a cell's job (:func:`make_job`: the toolkit ``config()`` options of its build mode, the
shapes ``load_onnx`` is told for a graph with free dims (:func:`load_shapes`), the calibration
set of a quantized build), the key its conversion is cached under (:func:`conversion_key_of`:
everything that went into the job) and the :class:`~pytest_rknn.pipeline.cache.Conversion` a
worker's result becomes (:func:`conversion_of`). How the cell runs is :mod:`.run`'s.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from pytest_rknn.pipeline.build_config import config_of
from pytest_rknn.pipeline.cache import Conversion
from pytest_rknn.pipeline.cache_keys import conversion_key
from pytest_rknn.pipeline.calibration import CalibrationSet, write_dataset
from pytest_rknn.pipeline.input_roles import declared_inputs
from pytest_rknn.pipeline.materials import BuiltModel
from pytest_rknn.pipeline.plan import CellSpec
from pytest_rknn.pipeline.targets import QUANT_MODES, base_quant
from pytest_rknn.results.status import Status
from pytest_rknn.toolkit.protocol import Job, JobResult
from pytest_rknn.verdict.judge import judge_failure
from pytest_rknn.verdict.logtext import log_excerpt, without_harness_frames
from pytest_rknn.verdict.placement import read_placement, read_placement_file
from pytest_rknn.verdict.signatures import silent_failure


def conversion_of(result: JobResult) -> Conversion:
    """The toolkit's answer in the pipeline's terms: outputs to judge, or a failure's verdict."""
    status = result.status
    outputs = None
    if status is None:
        try:
            outputs = result.load_outputs()
        except (OSError, ValueError) as exc:
            status = Status.CRASH
            result.error = f"the worker's outputs cannot be read: {exc}"
    if status is None:
        signature = silent_failure(result.log)
    else:
        signature = judge_failure(status, result.log, result.error).signature
    return Conversion(
        job_id=result.id,
        placement=placement_of(result, status),
        status=status,
        outputs=outputs,
        error=result.error,
        signature=signature,
        log_excerpt=log_excerpt(without_harness_frames(result.log)),
        timings=dict(result.timings),
        returncodes=dict(result.returncodes),
        peak_rss_mb=result.peak_rss_mb,
        toolkit=result.toolkit,
        artifact=result.artifact,
        fp16_layers=result.fp16_layers,
    )


def placement_of(result: JobResult, status: Status | None) -> dict[str, object] | None:
    """Where the build put the ops, from this job's own whole log (None: the build did not get
    through, so there is no table to read). ``model_bytes`` is the exported file's size."""
    built = status is None or status is Status.RUNTIME_FAIL or result.failed_phase == "export_rknn"
    if not built or result.fault is not None:
        return None
    model_bytes = None
    if result.artifact:
        with contextlib.suppress(OSError):
            model_bytes = Path(result.artifact).stat().st_size
    if result.log_path:
        return read_placement_file(result.log_path, model_bytes)
    return read_placement(result.log, model_bytes)


def config_options(cell: CellSpec) -> dict[str, object]:
    """The toolkit ``config()`` options of a cell: its quantization mode's, then its own."""
    return {**dict(QUANT_MODES[base_quant(cell.quant)].config), **config_of(cell.quant)}


def conversion_key_of(
    cell: CellSpec,
    built: BuiltModel,
    inputs: list[tuple[str, str]],
    identity: dict[str, object],
    calibration: CalibrationSet | None,
    load: dict[str, list],
) -> str:
    """The key of the cell's conversion: everything that went into its job (the model, the
    inputs' digests and the shapes ``load_onnx`` is told, the build options, the calibration
    set) and the toolkit environment's identity."""
    mode = QUANT_MODES[base_quant(cell.quant)]
    return conversion_key(
        model=built.sha256,
        inputs=inputs,
        load=load,
        platform=cell.platform,
        quant=cell.quant,
        config=config_options(cell),
        do_quantization=mode.do_quantization,
        hybrid=mode.hybrid,
        calibration=calibration.key() if calibration is not None else None,
        toolkit=cell.toolkit,
        environment=identity,
    )


def load_shapes(built: BuiltModel, names: list[str], arrays: list[np.ndarray]) -> dict[str, list]:
    """What ``load_onnx`` is told of the inputs: nothing for a graph whose input dims are all
    fixed; for one with free dims (the toolkit refuses to load it unaided), the inputs' names
    and the shapes of the arrays fed to them, as a user fixes them."""
    if all(d.fixed for d in declared_inputs(built.model)):
        return {}
    return {"input_names": list(names), "input_size_list": [list(a.shape) for a in arrays]}


def make_job(
    cell: CellSpec,
    model: Path,
    load: dict[str, list],
    arrays: list[np.ndarray],
    jobs: Path,
    calibration: CalibrationSet | None,
    analyse: bool = False,
) -> Job:
    """A worker job for the cell; a quantized one gets its calibration set in its own folder."""
    mode = QUANT_MODES[base_quant(cell.quant)]
    job = Job.create(
        model,
        cell.platform,
        jobs,
        arrays,
        config=config_options(cell),
        hybrid=mode.hybrid,
        analysis=analyse,
        simulate=not analyse,
        verbose=not analyse,
        **load,
    )
    if mode.do_quantization:
        if calibration is None:
            raise ValueError(f"{cell.quant} needs a calibration set")
        job.do_quantization = True
        job.dataset = str(write_dataset(calibration, Path(job.outdir)))
    return job
