"""The record of one finished cell, from the worker's answer to the matrix.

A cell is one (variant, platform, toolkit version, quantization mode) with its outcome. One
:class:`CellRecord` is made where the cell's verdict is made and is the same object in the
pytest item, the recorder, the matrix and the views; it becomes a plain dict only where it
crosses a process boundary (the xdist report, the journal, the matrix file, the cache) and is
checked when it comes back (:meth:`CellRecord.from_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from pytest_rknn.results.status import Status
from pytest_rknn.verdict.logtext import plain

Key = tuple[str, str, str, str]
KEY_FIELDS = ("variant_id", "platform", "toolkit", "quant")


def now() -> str:
    """The current time as the matrix writes it (UTC, ISO 8601, milliseconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def instant(timestamp: str | None) -> datetime:
    """A matrix timestamp as an aware datetime (the earliest possible one for ``None``)."""
    if not timestamp:
        return datetime.min.replace(tzinfo=timezone.utc)
    parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _copy(value: Any) -> Any:
    """A copy of JSON-like data (dicts, lists, scalars); much cheaper than ``deepcopy``."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class CellRecord:
    """One cell of the matrix: a variant converted for one platform by one toolkit version.

    ``job_id`` names the worker job whose answer the cell holds (None when no job ran: an
    unsupported cell, a broken environment); ``bounds`` are the tolerance bounds the metrics were
    judged against. ``warning`` is the signature of a silent failure: every toolkit call
    returned success but the log shows an exception. ``fixes`` are what ``--rknn-advise`` tried
    on a failing cell (fix, status, signature, reason, metrics). ``fp16_layers`` names the
    layers a ``hybrid`` build kept in float16 (each ``{"name", "op"}`` as in the toolkit's graph;
    None for other modes). ``error_origin`` says, for a tolerance failure, where the toolkit's
    ``accuracy_analysis`` sees the error start (``layer``, ``op``, ``cosine``, ``input_cosine``)
    or why it could not tell (``error``). ``attention`` says, for an ``hf`` variant, how peaked
    its attention was in the torch reference run (``peak``: the mean largest attention
    probability; ``uniform``: the same for uniform attention over the allowed keys) and which
    torch and transformers exported it.

    Fields about the board and the verdict's grounds (each None when it does not apply):
    ``placement`` is where the compiler put each op (NPU or CPU), the fused kernels, the data
    types, memory and cycle estimates, from the build's own layer table, or ``{"error": why}``
    when the table could not be read. ``calibration`` says what a quantized cell calibrated on
    (``source`` user or generated, ``file``, ``samples``, ``masked_samples``, ``digest``).
    ``bounds_rule`` names the rule that made ``bounds`` (e.g. ``fp16 emulation x 4``).
    ``shapes`` are a dynamic-shape cell's listed shapes, each with its ``dims``, ``status``,
    ``reason``, ``metrics`` and, when the compiler gives them per shape, ``placement``;
    ``unlisted_shape`` is how the runtime answered one shape that was not listed
    (``dims``, ``answer``: refused or served, ``message``). ``environment`` is the identity of
    the toolkit environment that converted the cell. ``extra`` is room for fields a later
    version adds.
    """

    variant_id: str
    platform: str
    toolkit: str
    quant: str
    status: Status
    variant: dict[str, Any] = field(default_factory=dict)
    signature: str | None = None
    reason: str | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    bounds: dict[str, float | None] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    cached: bool = False
    log_excerpt: str | None = None
    artifact: str | None = None
    job_id: str | None = None
    finished: str | None = None
    warning: str | None = None
    fixes: list[dict[str, Any]] | None = None
    fp16_layers: list[dict[str, str]] | None = None
    error_origin: dict[str, Any] | None = None
    attention: dict[str, Any] | None = None
    placement: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    bounds_rule: str | None = None
    shapes: list[dict[str, Any]] | None = None
    unlisted_shape: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = (
            Status.parse(self.status) if not isinstance(self.status, Status) else (self.status)
        )

    @property
    def key(self) -> Key:
        """(variant_id, platform, toolkit, quant): what identifies a cell across runs."""
        return (self.variant_id, self.platform, self.toolkit, self.quant)

    @property
    def id(self) -> str:
        """The cell's pytest id: ``<variant>-<platform>-<toolkit>-<quant>``."""
        return "-".join(self.key)

    @property
    def failed(self) -> bool:
        return self.status.failing

    def to_dict(self) -> dict[str, Any]:
        """The cell as it appears in the document (non-finite timings become null)."""
        data = {f.name: _copy(getattr(self, f.name)) for f in _FIELDS}
        data["status"] = self.status.value
        data["timings"] = {k: _finite_or_none(v) for k, v in self.timings.items()}
        data["peak_rss_mb"] = _finite_or_none(self.peak_rss_mb)
        for name in _TEXTS:
            if isinstance(data[name], str):
                data[name] = plain(data[name])
        if not data["extra"]:
            del data["extra"]
        for name in _OPTIONAL:
            if data[name] is None:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellRecord:
        """A cell from its document form; unknown fields or a bad status raise ``ValueError``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a cell must be a JSON object, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(
                f"cell has unknown field(s) {unknown}: known fields are {', '.join(known)}"
                " (put anything else under 'extra')"
            )
        missing = [k for k in (*KEY_FIELDS, "status") if not data.get(k)]
        if missing:
            raise ValueError(f"cell lacks {', '.join(missing)}: every cell needs all of its key")
        bad = [k for k in KEY_FIELDS if not isinstance(data[k], str)]
        if bad:
            raise ValueError(f"cell key field(s) {', '.join(bad)} must be strings")
        values = dict(data)
        try:
            values["status"] = Status.parse(str(data["status"]))
        except ValueError as exc:
            raise ValueError(f"cell {exc}") from None
        for name in ("variant", "metrics", "timings", "extra"):
            if values.get(name) is None:
                values.pop(name, None)
        return cls(**values)


_FIELDS = fields(CellRecord)
_OPTIONAL = (
    "fp16_layers",
    "error_origin",
    "attention",
    "placement",
    "calibration",
    "bounds_rule",
    "shapes",
    "unlisted_shape",
    "environment",
)
"""Fields left out of the document when they do not apply (None)."""
_TEXTS = ("reason", "log_excerpt", "warning", "signature")
"""Fields of text from a worker or a log: written without terminal escapes."""
