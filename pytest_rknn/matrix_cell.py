"""The record of one matrix cell, and the words the matrix uses for time and status.

A cell is one (variant, platform, toolkit version, quantization mode) of the compatibility
matrix with its outcome: ``status`` (one of ``STATUSES``), ``signature``, ``metrics`` per output,
``timings``, ``peak_rss_mb``, whether it was ``cached``, a ``log_excerpt`` and when it
``finished``. ``Change`` is how a cell differs between two matrices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

STATUSES = (
    "pass",
    "convert-fail",
    "runtime-fail",
    "tolerance-fail",
    "crash",
    "timeout",
    "oom",
    "unsupported",
    "env-error",
)
NOT_FAILING = ("pass", "unsupported")

Key = tuple[str, str, str, str]


class MatrixError(ValueError):
    """A matrix document or journal that cannot be used; the message names the file and fix."""


def now() -> str:
    """The current time as the matrix writes it (UTC, ISO 8601, milliseconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def instant(timestamp: str | None) -> datetime:
    """A matrix timestamp as an aware datetime (the earliest possible one for ``None``)."""
    if not timestamp:
        return datetime.min.replace(tzinfo=timezone.utc)
    parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class Cell:
    """One cell of the matrix: a variant converted for one platform by one toolkit version."""

    variant_id: str
    platform: str
    toolkit: str
    quant: str
    status: str
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
    finished: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        """(variant_id, platform, toolkit, quant): what identifies a cell across runs."""
        return (self.variant_id, self.platform, self.toolkit, self.quant)

    @property
    def failed(self) -> bool:
        """True for every status but ``pass`` and ``unsupported``."""
        return self.status not in NOT_FAILING

    def to_dict(self) -> dict[str, Any]:
        """The cell as it appears in the document (non-finite timings become null)."""
        data = asdict(self)
        data["timings"] = {k: _finite_or_none(v) for k, v in self.timings.items()}
        data["peak_rss_mb"] = _finite_or_none(self.peak_rss_mb)
        if not data["extra"]:
            del data["extra"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cell:
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
        missing = [
            k for k in ("variant_id", "platform", "toolkit", "quant", "status") if not data.get(k)
        ]
        if missing:
            raise ValueError(f"cell lacks {', '.join(missing)}: every cell needs all of its key")
        if data["status"] not in STATUSES:
            raise ValueError(f"cell status {data['status']!r} is not one of {', '.join(STATUSES)}")
        values = dict(data)
        for name in ("variant", "metrics", "timings", "extra"):
            if values.get(name) is None:
                values.pop(name, None)
        return cls(**values)


@dataclass(frozen=True)
class Change:
    """How one cell differs between two matrices (see ``diff``)."""

    kind: str
    key: Key
    old_status: str | None
    new_status: str | None
    old_signature: str | None = None
    new_signature: str | None = None

    def describe(self) -> str:
        """One line for a person: ``regression  id @ rk3588 / 2.3.2 / fp16: pass -> crash``."""
        variant, platform, toolkit, quant = self.key
        before = f"{self.old_status}" + (f" ({self.old_signature})" if self.old_signature else "")
        after = f"{self.new_status}" + (f" ({self.new_signature})" if self.new_signature else "")
        return f"{self.kind:<10} {variant} @ {platform} / {toolkit} / {quant}: {before} -> {after}"
