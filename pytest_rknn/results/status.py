"""The status vocabulary: every status a cell can end in, and what each one means.

This is the only module that spells the status names. The matrix schema's enum, the cache
policy (which statuses are results and which are accidents of one run), the pytest outcome, the
summaries, the dashboard's colours and the default signature of a failure without a log all read
:data:`STATUS_TABLE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Status(str, Enum):
    """How one cell ended."""

    PASS = "pass"
    CONVERT_FAIL = "convert-fail"
    RUNTIME_FAIL = "runtime-fail"
    TOLERANCE_FAIL = "tolerance-fail"
    CPU_FALLBACK = "cpu-fallback"
    REFERENCE_ERROR = "reference-error"
    CRASH = "crash"
    TIMEOUT = "timeout"
    OOM = "oom"
    UNSUPPORTED = "unsupported"
    EXPORT_FAIL = "export-fail"
    ENV_ERROR = "env-error"

    def __str__(self) -> str:
        return self.value

    @property
    def info(self) -> StatusInfo:
        return STATUS_TABLE[self]

    @property
    def failing(self) -> bool:
        """A failing cell fails its pytest item and counts against the chip and toolkit."""
        return self.info.failing

    @property
    def cacheable(self) -> bool:
        """Whether the outcome belongs to the inputs (and may be reused) or to this one run."""
        return self.info.cacheable

    @property
    def outcome(self) -> str:
        """The pytest outcome of the cell's item: ``passed``, ``failed`` or ``skipped``."""
        return self.info.outcome

    @property
    def ran(self) -> bool:
        """Whether the cell counts as tried in pass/ran tallies (``unsupported`` does not)."""
        return self.info.outcome != "skipped"

    @classmethod
    def parse(cls, text: str) -> Status:
        """The status named ``text``; ``ValueError`` naming the known ones otherwise."""
        try:
            return cls(text)
        except ValueError:
            known = ", ".join(s.value for s in cls)
            raise ValueError(f"status {text!r} is not one of {known}") from None

    @classmethod
    def for_failed_phase(cls, phase: str) -> Status:
        """The status of a toolkit call that returned an error in ``phase``."""
        return cls.RUNTIME_FAIL if phase in RUNTIME_PHASES else cls.CONVERT_FAIL


@dataclass(frozen=True)
class StatusInfo:
    """What a status means, for people and for the code that reads it."""

    meaning: str
    failing: bool
    cacheable: bool
    outcome: str
    colour: str
    default_signature: str | None


# The toolkit calls after which a failure is the runtime's, not the converter's.
RUNTIME_PHASES: frozenset[str] = frozenset({"init_runtime", "inference"})

STATUS_TABLE: dict[Status, StatusInfo] = {
    Status.PASS: StatusInfo(
        "converted, simulated, within tolerance", False, True, "passed", "#2e9e44", None
    ),
    Status.CONVERT_FAIL: StatusInfo(
        "load_onnx/build/export returned an error, or died the same way twice",
        True,
        True,
        "failed",
        "#d63a3a",
        None,
    ),
    Status.RUNTIME_FAIL: StatusInfo(
        "converted, but init_runtime/inference failed (or died the same way twice)",
        True,
        True,
        "failed",
        "#a23ad6",
        None,
    ),
    Status.TOLERANCE_FAIL: StatusInfo(
        "ran, outputs outside the bounds", True, True, "failed", "#f0b400", "tolerance exceeded"
    ),
    Status.CPU_FALLBACK: StatusInfo(
        "converted and within tolerance, but ops that --rknn-require-npu wants on the NPU run "
        "on the CPU",
        True,
        True,
        "failed",
        "#e07b00",
        "CPU fallback",
    ),
    Status.REFERENCE_ERROR: StatusInfo(
        "the host could not make the inputs or the reference (the model's or the harness' "
        "fault); the conversion is kept",
        True,
        False,
        "failed",
        "#8a6d3b",
        "reference not computable",
    ),
    Status.CRASH: StatusInfo(
        "the worker died (not the same way when run again), or broke the protocol",
        True,
        False,
        "failed",
        "#222222",
        "worker crashed",
    ),
    Status.TIMEOUT: StatusInfo(
        "the worker hung past --rknn-timeout", True, False, "failed", "#444444", "timeout"
    ),
    Status.OOM: StatusInfo(
        "the worker passed --rknn-max-memory",
        True,
        False,
        "failed",
        "#666666",
        "memory cap exceeded",
    ),
    Status.UNSUPPORTED: StatusInfo(
        "known not to apply; skipped with a reason",
        False,
        True,
        "skipped",
        "#d8d8d8",
        "unsupported",
    ),
    Status.EXPORT_FAIL: StatusInfo(
        "the torch exporter made no faithful ONNX model of this variant (the exporter's finding, "
        "not the toolkit's); skipped with the exporter's reason",
        False,
        True,
        "skipped",
        "#c9a0dc",
        "export failed",
    ),
    Status.ENV_ERROR: StatusInfo(
        "the toolkit environment is broken (the harness' fault)",
        True,
        False,
        "failed",
        "#3a6bd6",
        "toolkit environment broken",
    ),
}

STATUSES: tuple[str, ...] = tuple(s.value for s in Status)

FIX_REJECTED = "rejected"
"""The status of an advisor's fix (``CellRecord.fixes``) that the toolkit version refuses (an
option its ``config()`` does not take): not tried, so neither a pass nor a failure. A fix that
was tried has the status of its conversion."""
