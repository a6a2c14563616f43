"""The host's side of the worker protocol: a job, its result, its limits, and the checks.

Messages are JSON lines over two pipes that are not the worker's stdout (the toolkit prints
there); arrays travel as ``.npy`` files in the job's own folder. ``remote.py`` speaks the same
fields with plain dicts because it cannot import this package inside a toolkit environment.

The conversation, and what the host checks at each step (:func:`check_ready`,
:func:`check_result`): the host sends ``hello`` with :data:`PROTOCOL` and a nonce; the worker
imports the toolkit and answers ``ready`` with the same protocol and nonce. Then for each job
the host sends ``job`` with the job's id and the worker answers ``result`` naming that id, or,
when the job ran in a fork of the worker (``"fork": true`` in the hello) that died before it
answered, ``died`` naming that id and how the fork ended (:func:`check_died`): a ``crash`` of
that job, and the worker lives on. Anything else (a line that is not JSON, a message over
:data:`MAX_MESSAGE_BYTES`, another op, another id, a field of the wrong type, an output outside
the job's folder) is a :class:`ProtocolError`: the supervisor kills the worker and the job is a
``crash`` with the reason. A result is never attributed to a job it does not name.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytest_rknn.results.status import Status

PROTOCOL = 5
CALL_FILE = "toolkit-call"
"""The file in a job's folder where the worker notes the toolkit call under way (remote.py's)."""
MAX_MESSAGE_BYTES = 4 << 20
MIN_MEMORY = 640 << 20
"""The smallest --rknn-max-memory a toolkit worker starts under: importing rknn-toolkit2
peaks at 569-584 MiB (2.2.0-2.5.0) and rests at 343-350 MiB (bench/worker_memory.py)."""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class ProtocolError(RuntimeError):
    """A worker said something the protocol does not allow; the message says what."""


def parse_size(text: str | int) -> int:
    """Parse ``8G``, ``512M``, ``2.5GiB`` or a number of bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"invalid memory size {text!r}: use a number with K, M, G or T, e.g. 8G")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class Limits:
    """What one job may use before its worker is killed."""

    timeout: float = 300.0
    max_memory: int = 8 << 30
    startup_timeout: float = 180.0
    poll_interval: float = 0.05

    def __post_init__(self) -> None:
        for name in ("timeout", "startup_timeout", "poll_interval"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r}: expected a finite number of seconds > 0")
        if not isinstance(self.max_memory, int) or self.max_memory < 1:
            raise ValueError(f"max_memory={self.max_memory!r}: expected a number of bytes")


@dataclass
class Job:
    """One conversion: an ONNX file for one platform with one set of options.

    ``outdir`` belongs to this job alone (the host makes a fresh one per job id): its inputs,
    outputs, artifact and log are all there, so nothing of another job can be read as its own.
    ``dataset`` lists the calibration samples of a quantized build (in ``outdir``); ``hybrid``
    builds through the toolkit's hybrid flow with the attention layers in float16; ``analysis``
    runs ``accuracy_analysis`` on ``inputs`` after the build instead of exporting and simulating.
    ``input_names`` and ``input_size_list`` (the graph's inputs and the shapes of the arrays fed
    to them) go to ``load_onnx`` for a graph with free dims, which the toolkit refuses to load
    unaided. A graph built with ``dynamic_input`` (in ``config``) gets ``shape_inputs``, the
    input files of each listed shape, simulated one by one, and ``probe_inputs``, those of a
    shape not listed, to see how the runtime answers it.
    """

    onnx: str
    platform: str
    outdir: str
    inputs: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    do_quantization: bool = False
    dataset: str | None = None
    hybrid: bool = False
    analysis: bool = False
    simulate: bool = True
    verbose: bool = False
    input_names: list[str] = field(default_factory=list)
    input_size_list: list[list[int]] = field(default_factory=list)
    shape_inputs: list[list[str]] = field(default_factory=list)
    probe_inputs: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @property
    def log(self) -> str:
        return str(Path(self.outdir) / "toolkit.log")

    def to_wire(self) -> dict[str, Any]:
        data = asdict(self)
        data["log"] = self.log
        return data

    @classmethod
    def create(
        cls,
        onnx_path: Path | str,
        platform: str,
        outdir: Path | str,
        inputs: list[np.ndarray] | None = None,
        **options: Any,
    ) -> Job:
        """Make a job in a fresh folder ``outdir/<job id>``, writing ``inputs`` there."""
        job_id = options.pop("id", None) or uuid.uuid4().hex[:16]
        out = Path(outdir) / job_id
        out.mkdir(parents=True, exist_ok=False)
        paths = []
        for i, array in enumerate(inputs or []):
            path = out / f"input{i}.npy"
            np.save(path, np.ascontiguousarray(array))
            paths.append(str(path))
        return cls(
            onnx=str(onnx_path),
            platform=platform,
            outdir=str(out),
            inputs=paths,
            id=job_id,
            **options,
        )


@dataclass
class JobResult:
    """What came back for a job: the worker's answer, or the host's account of its death.

    ``fault`` is set by the host when the worker could not answer (crash, timeout, oom,
    env-error); otherwise ``failed_phase`` names the toolkit call that returned an error, or is
    None when every call succeeded (``ok``). ``died_in`` names the toolkit call under way when
    the process running the job died by itself (a ``crash``; None when it died between calls, was
    killed by the host, or broke the protocol).
    """

    id: str
    fault: Status | None = None
    failed_phase: str | None = None
    toolkit: str | None = None
    returncodes: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    artifact: str | None = None
    error: str | None = None
    peak_rss_mb: float | None = None
    fp16_layers: list[dict[str, str]] | None = None
    analysis: str | None = None
    log: str = ""
    log_path: str | None = None
    died_in: str | None = None
    shape_outputs: list[list[str]] | None = None
    shape_errors: list[str | None] | None = None
    shape_seconds: list[float] | None = None
    unlisted: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.fault is None and self.failed_phase is None

    @property
    def status(self) -> Status | None:
        """The cell status this result decides by itself (None: the outputs must be judged)."""
        if self.fault is not None:
            return self.fault
        if self.failed_phase is not None:
            return Status.for_failed_phase(self.failed_phase)
        return None

    def load_outputs(self) -> list[np.ndarray]:
        return [np.load(p, allow_pickle=False) for p in self.outputs]


_RESULT_TYPES: dict[str, tuple[type, ...]] = {
    "failed_phase": (str, type(None)),
    "returncodes": (dict,),
    "timings": (dict,),
    "outputs": (list,),
    "artifact": (str, type(None)),
    "error": (str, type(None)),
    "peak_rss_mb": (int, float, type(None)),
    "fp16_layers": (list, type(None)),
    "analysis": (str, type(None)),
    "shape_outputs": (list, type(None)),
    "shape_errors": (list, type(None)),
    "shape_seconds": (list, type(None)),
    "unlisted": (dict, type(None)),
}
UNLISTED_ANSWERS = frozenset({"refused", "served"})
"""What a worker may say of the shape not listed (``crashed``/``untried`` are the host's)."""


def check_ready(message: dict[str, Any], nonce: str) -> dict[str, Any]:
    """The worker's ``ready`` answer to ``hello``, checked; ProtocolError otherwise."""
    if message.get("op") != "ready":
        raise ProtocolError(f"expected 'ready' at start-up, got op {message.get('op')!r}")
    if message.get("protocol") != PROTOCOL:
        raise ProtocolError(
            f"worker speaks protocol {message.get('protocol')!r}, the host {PROTOCOL}: "
            "the worker script and the plugin come from different pytest-rknn versions"
        )
    if message.get("nonce") != nonce:
        raise ProtocolError("the worker's 'ready' does not echo this host's hello")
    return message


def check_died(message: dict[str, Any], job: Job) -> str:
    """How the fork running ``job`` ended, from the worker's ``died``; ProtocolError
    otherwise."""
    if message.get("id") != job.id:
        raise ProtocolError(f"got 'died' for job {message.get('id')!r} while waiting for {job.id}")
    detail = message.get("detail")
    if not isinstance(detail, str) or not detail or len(detail) > 200:
        raise ProtocolError(f"the 'died' of job {job.id} does not say how its fork ended")
    return detail


def call_under_way(job: Job) -> str | None:
    """The toolkit call the job's process was in, from its folder's ``toolkit-call`` file
    (None: between calls, or no such file)."""
    try:
        name = (Path(job.outdir) / CALL_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if name.isidentifier() else None


def _inside(path: str, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError):
        return False


def check_result(message: dict[str, Any], job: Job) -> JobResult:
    """The worker's answer to ``job``, checked field by field; ProtocolError otherwise."""
    if message.get("op") != "result":
        raise ProtocolError(f"expected a 'result' for job {job.id}, got op {message.get('op')!r}")
    if message.get("id") != job.id:
        raise ProtocolError(
            f"got a result for job {message.get('id')!r} while waiting for {job.id}"
        )
    body = message.get("result")
    if not isinstance(body, dict) or body.get("id") != job.id:
        raise ProtocolError(f"the result for job {job.id} does not name that job inside")
    for name, types in _RESULT_TYPES.items():
        if name in body and not isinstance(body[name], types):
            raise ProtocolError(f"result field {name!r} has type {type(body[name]).__name__}")
    for name, kinds in (("timings", (int, float)), ("returncodes", (int,))):
        values = body.get(name) or {}
        if not all(isinstance(v, kinds) and not isinstance(v, bool) for v in values.values()):
            raise ProtocolError(f"result field {name!r} holds a value that is not a number")
    phase = body.get("failed_phase")
    outputs = body.get("outputs") or []
    folder = Path(job.outdir)
    if not all(isinstance(p, str) and _inside(p, folder) for p in outputs):
        raise ProtocolError(f"the result for job {job.id} names outputs outside its folder")
    artifact = body.get("artifact")
    if artifact is not None and not _inside(artifact, folder):
        raise ProtocolError(f"the result for job {job.id} names an artifact outside its folder")
    if phase is None and job.simulate and not job.analysis and not outputs:
        raise ProtocolError(f"job {job.id} succeeded but its result lists no outputs")
    layers = body.get("fp16_layers")
    if layers is not None:
        if not job.hybrid:
            raise ProtocolError(f"job {job.id} is not hybrid but its result names fp16 layers")
        if not all(
            isinstance(x, dict)
            and set(x) == {"name", "op"}
            and all(isinstance(v, str) for v in x.values())
            for x in layers
        ):
            raise ProtocolError(f"the result for job {job.id} has malformed fp16_layers")
    report = body.get("analysis")
    if report is not None and not (job.analysis and _inside(report, folder)):
        raise ProtocolError(f"the result for job {job.id} names an analysis it was not asked for")
    if job.analysis and phase is None and report is None:
        raise ProtocolError(f"analysis job {job.id} succeeded but names no analysis file")
    shapes = _check_shapes(body, job, folder)
    return JobResult(
        id=job.id,
        failed_phase=phase,
        returncodes={str(k): v for k, v in (body.get("returncodes") or {}).items()},
        timings={str(k): float(v) for k, v in (body.get("timings") or {}).items()},
        outputs=list(outputs),
        artifact=artifact,
        error=body.get("error"),
        peak_rss_mb=body.get("peak_rss_mb"),
        fp16_layers=[dict(x) for x in layers] if layers is not None else None,
        analysis=report,
        **shapes,
    )


def write_shape_inputs(job: Job, sets: list[list[np.ndarray]], probe: list[np.ndarray]) -> None:
    """Write each listed shape's inputs, and the unlisted shape's, into the job's folder."""
    folder = Path(job.outdir)
    for i, arrays in enumerate(sets):
        paths = []
        for j, array in enumerate(arrays):
            path = folder / f"shape{i}_input{j}.npy"
            np.save(path, np.ascontiguousarray(array))
            paths.append(str(path))
        job.shape_inputs.append(paths)
    for j, array in enumerate(probe):
        path = folder / f"probe_input{j}.npy"
        np.save(path, np.ascontiguousarray(array))
        job.probe_inputs.append(str(path))


def _check_shapes(body: dict[str, Any], job: Job, folder: Path) -> dict[str, Any]:
    """The per-shape part of a result, checked against the job's listed shapes."""
    names = ("shape_outputs", "shape_errors", "shape_seconds", "unlisted")
    if not job.shape_inputs:
        if any(body.get(n) is not None for n in names):
            raise ProtocolError(f"job {job.id} lists no shapes but its result answers per shape")
        return {}
    count = len(job.shape_inputs)
    outputs, errors = body.get("shape_outputs"), body.get("shape_errors")
    seconds = body.get("shape_seconds")
    whole = (
        isinstance(outputs, list)
        and isinstance(errors, list)
        and isinstance(seconds, list)
        and len(outputs) == len(errors) == len(seconds) == count
    )
    if not whole and body.get("failed_phase") is not None:
        # A call failed before (or while) the shapes were tried: the job's failure is the
        # answer, and no shape's part of it is attributed.
        return {}
    if not whole:
        raise ProtocolError(
            f"the result for job {job.id} does not answer each of its {count} shapes"
        )
    for paths, error in zip(outputs, errors, strict=True):
        if not isinstance(paths, list) or not all(
            isinstance(p, str) and _inside(p, folder) for p in paths
        ):
            raise ProtocolError(
                f"the result for job {job.id} names shape outputs outside its folder"
            )
        if not (isinstance(error, str) or (error is None and paths)):
            raise ProtocolError(f"a shape of job {job.id} has neither outputs nor an error")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in seconds):
        raise ProtocolError(f"the result for job {job.id} has malformed shape_seconds")
    unlisted = body.get("unlisted")
    if job.probe_inputs:
        if not (
            isinstance(unlisted, dict)
            and set(unlisted) == {"answer", "message"}
            and unlisted["answer"] in UNLISTED_ANSWERS
            and isinstance(unlisted["message"], str)
        ):
            raise ProtocolError(
                f"the result for job {job.id} does not say how the unlisted shape went"
            )
    elif unlisted is not None:
        raise ProtocolError(f"job {job.id} tried no unlisted shape but its result answers one")
    return {
        "shape_outputs": [list(p) for p in outputs],
        "shape_errors": list(errors),
        "shape_seconds": [float(x) for x in seconds],
        "unlisted": dict(unlisted) if unlisted is not None else None,
    }
