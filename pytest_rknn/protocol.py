"""The host's view of the worker protocol: a conversion job, its result and its limits.

Both travel as plain JSON (arrays as ``.npy`` files beside them); ``remote.py`` speaks the same
fields with plain dicts because it cannot import this package inside a toolkit environment.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WORKER_STATUSES = ("ok", "convert-fail", "runtime-fail")
HOST_STATUSES = ("crash", "timeout", "oom", "env-error")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


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


@dataclass
class Job:
    """One conversion: an ONNX file for one platform with one set of options."""

    onnx: str
    platform: str
    outdir: str
    inputs: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    do_quantization: bool = False
    dataset: str | None = None
    simulate: bool = True
    verbose: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

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
        """Make a job, writing ``inputs`` as ``.npy`` files into ``outdir``."""
        out = Path(outdir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, array in enumerate(inputs or []):
            path = out / f"input{i}.npy"
            np.save(path, np.ascontiguousarray(array))
            paths.append(str(path))
        return cls(onnx=str(onnx_path), platform=platform, outdir=str(out), inputs=paths, **options)


@dataclass
class JobResult:
    """What came back for a job, from the worker or, when it died, from the host."""

    id: str
    status: str
    toolkit: str | None = None
    returncodes: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    artifact: str | None = None
    error: str | None = None
    phase: str | None = None
    peak_rss_mb: float | None = None
    log: str = ""
    log_path: str | None = None

    @classmethod
    def from_wire(cls, data: dict[str, Any], **extra: Any) -> JobResult:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.update(extra)
        return cls(**known)

    def load_outputs(self) -> list[np.ndarray]:
        return [np.load(p) for p in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
