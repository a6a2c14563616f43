"""What is reused between runs: the toolkit's answers, the host's references and judgements.

A :class:`Conversion` is what one worker job produced (outputs, or the status and signature of
the failure, timings, the log excerpt). :class:`ResultCache` keeps it in pytest's cache under a
key made of everything that went into the job: the model's bytes, the inputs, the toolkit
environment's identity, the platform, the quantization mode and every toolkit option (with a
quantized build's calibration samples and whether it is hybrid), and the code that ran the job
and read its log. It also keeps reference outputs, keyed by the subject, the model's bytes, the
inputs, the reference code and the host's numpy and onnxruntime, and the judgement of a
conversion's outputs against a reference under given bounds (the outputs' hashes, the
reference's key and the bounds); :mod:`~pytest_rknn.pipeline.cache_keys` makes those keys. The
cell's record (its identity, with the verdict) is made anew on every run, so a hit can never
carry another cell's id or another model's path.

Only statuses the vocabulary marks cacheable are stored; ``--rknn-no-cache`` neither reads nor
writes. An entry that is not exactly what this module writes (wrong schema, a field of the
wrong type, another key inside, an output file whose hash differs) is a miss, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from pytest_rknn.pipeline.cache_keys import ENTRY_VERSION
from pytest_rknn.results.matrix import cell_error
from pytest_rknn.results.status import Status
from pytest_rknn.verdict.judge import Verdict

ENTRY_SCHEMA = "pytest-rknn/conversion"
CACHE_PREFIX = "pytest-rknn/conversions/"
VERDICT_PREFIX = "pytest-rknn/verdicts/"
VERDICT_SCHEMA = "pytest-rknn/verdict"
# A stored judgement can only say that outputs were (or were not) within their bounds.
JUDGED = frozenset({Status.PASS, Status.TOLERANCE_FAIL})
ORIGIN_PREFIX = "pytest-rknn/origins/"
ORIGIN_SCHEMA = "pytest-rknn/origin"
REFERENCE_PREFIX = "pytest-rknn/references/"
REFERENCE_SCHEMA = "pytest-rknn/reference"
OUTPUTS_DIR = "pytest-rknn-outputs"
REFERENCES_DIR = "pytest-rknn-references"


@dataclass
class Conversion:
    """The toolkit's answer to one job, wherever it came from (a worker now, or the cache).

    ``status`` is None when the model converted and simulated (``outputs`` are to be judged);
    otherwise it is the status the answer decides by itself, with its ``signature``. An answer
    with outputs has a ``signature`` only when its log shows a silent failure (a warning).
    ``stored_outputs`` are the sha256 of the outputs' files in the cache (None: not stored).
    """

    job_id: str
    status: Status | None
    outputs: list[np.ndarray] | None = None
    error: str | None = None
    signature: str | None = None
    log_excerpt: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    returncodes: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    toolkit: str | None = None
    artifact: str | None = None
    cached: bool = False
    stored_outputs: list[str] | None = None
    fp16_layers: list[dict[str, str]] | None = None
    placement: dict[str, Any] | None = None
    shapes: dict[str, Any] | None = None
    """A job of listed shapes: its answer per shape (:mod:`.dynamic_run` reads it)."""

    @property
    def cacheable(self) -> bool:
        """A result of the inputs (not an accident of this run); a build whose layer table
        could not be read is converted again next time rather than kept without it."""
        unread = bool(self.placement) and "error" in (self.placement or {})
        return (self.status is None or self.status.cacheable) and not unread


def _is_number_map(value: Any, kinds: tuple[type, ...]) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, kinds) and not isinstance(v, bool)
        for k, v in value.items()
    )


# The statuses a stored answer may decide by itself (a toolkit call returned an error). A
# verdict (pass, tolerance-fail, unsupported) is made anew on every run, never read from here.
ANSWER_STATUSES = frozenset({Status.CONVERT_FAIL, Status.RUNTIME_FAIL})

_ENTRY_FIELDS: dict[str, tuple[type, ...]] = {
    "job_id": (str,),
    "status": (str, type(None)),
    "error": (str, type(None)),
    "signature": (str, type(None)),
    "log_excerpt": (str,),
    "peak_rss_mb": (int, float, type(None)),
    "toolkit": (str, type(None)),
    "outputs": (list,),
    "fp16_layers": (list, type(None)),
    "placement": (dict, type(None)),
}
_OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {"shapes": (dict, type(None))}


class ResultCache:
    """Conversions and references in pytest's cache (``cache`` None: nothing is kept)."""

    def __init__(self, cache: Any | None, enabled: bool = True) -> None:
        self.cache = cache if enabled else None

    def folder(self, name: str) -> Path | None:
        """A folder of pytest's cache for other reusable files (None: nothing is kept)."""
        return Path(self.cache.mkdir(name)) if self.cache is not None else None

    def _folder(self, key: str, kind: str = OUTPUTS_DIR) -> Path:
        assert self.cache is not None
        return Path(self.cache.mkdir(kind)) / key

    def _entry(self, name: str) -> Any:
        try:
            return self.cache.get(name, None) if self.cache is not None else None
        except RecursionError:  # JSON nested too deeply for the parser: not an entry of ours
            return None

    def get_reference(self, key: str) -> list[np.ndarray] | None:
        """The stored reference outputs for ``key``, or None."""
        entry = self._entry(REFERENCE_PREFIX + key)
        if not isinstance(entry, dict) or entry.get("schema") != REFERENCE_SCHEMA:
            return None
        if entry.get("version") != ENTRY_VERSION or entry.get("key") != key:
            return None
        try:
            return _read_arrays(self._folder(key, REFERENCES_DIR), entry.get("outputs"))
        except (OSError, ValueError, TypeError):
            return None

    def get_verdict(self, key: str) -> Verdict | None:
        """The stored judgement for ``key``, or None (nothing stored, or not trustworthy)."""
        entry = self._entry(VERDICT_PREFIX + key)
        if not isinstance(entry, dict) or entry.get("schema") != VERDICT_SCHEMA:
            return None
        if entry.get("version") != ENTRY_VERSION or entry.get("key") != key:
            return None
        if entry.get("status") not in {s.value for s in JUDGED}:
            return None
        if not isinstance(entry.get("report"), str) or not entry.get("metrics"):
            return None
        if (entry["status"] == Status.PASS.value) != (entry.get("signature") is None):
            return None
        # What goes into a cell must fit the matrix schema; any other field is ignored.
        probe = {"variant_id": "v", "variant": {"form": "f"}, "platform": "p", "toolkit": "t"}
        probe.update({k: entry.get(k) for k in ("status", "signature", "reason", "metrics")})
        if cell_error({**probe, "quant": "q"}) is not None:
            return None
        return Verdict(
            Status.parse(entry["status"]),
            entry["signature"],
            entry["reason"],
            entry["metrics"],
            entry["report"],
        )

    def put_verdict(self, key: str, verdict: Verdict) -> None:
        if self.cache is None or verdict.status not in JUDGED:
            return
        entry = {"schema": VERDICT_SCHEMA, "version": ENTRY_VERSION, "key": key}
        entry.update(status=verdict.status.value, signature=verdict.signature)
        entry.update(reason=verdict.reason, metrics=verdict.metrics, report=verdict.report)
        self.cache.set(VERDICT_PREFIX + key, entry)

    def get_origin(self, key: str) -> dict[str, Any] | None:
        """The stored ``error_origin`` of an analysis job for ``key``, or None."""
        entry = self._entry(ORIGIN_PREFIX + key)
        if not isinstance(entry, dict) or entry.get("schema") != ORIGIN_SCHEMA:
            return None
        if entry.get("version") != ENTRY_VERSION or entry.get("key") != key:
            return None
        origin = entry.get("origin")
        probe = {"variant_id": "v", "variant": {"form": "f"}, "platform": "p", "toolkit": "t"}
        probe.update(quant="q", status=Status.TOLERANCE_FAIL.value, error_origin=origin)
        if not isinstance(origin, dict) or not origin or cell_error(probe) is not None:
            return None
        return origin

    def put_origin(self, key: str, origin: dict[str, Any]) -> None:
        if self.cache is None:
            return
        entry = {"schema": ORIGIN_SCHEMA, "version": ENTRY_VERSION, "key": key}
        self.cache.set(ORIGIN_PREFIX + key, {**entry, "origin": origin})

    @contextlib.contextmanager
    def reference_lock(self, key: str) -> Iterator[None]:
        """Held while one process looks up, makes and stores the reference of ``key``: the
        other pytest-xdist workers wait for it and read it rather than make it too. A cache
        folder where no lock can be made (read-only, full) only loses the sharing."""
        lock = None
        if self.cache is not None:
            try:
                lock = FileLock(str(self._folder(key, REFERENCES_DIR)) + ".lock")
                lock.acquire()
            except OSError:
                lock = None
        try:
            yield
        finally:
            if lock is not None:
                lock.release()

    def put_reference(self, key: str, outputs: list[np.ndarray]) -> None:
        if self.cache is None:
            return
        try:
            digests = _write_arrays(self._folder(key, REFERENCES_DIR), outputs)
        except OSError:
            return
        entry = {"schema": REFERENCE_SCHEMA, "version": ENTRY_VERSION, "key": key}
        self.cache.set(REFERENCE_PREFIX + key, {**entry, "outputs": digests})

    def has(self, key: str) -> bool:
        """Whether an entry for ``key`` looks stored (a hint: :meth:`get` checks it whole)."""
        entry = self._entry(CACHE_PREFIX + key)
        return isinstance(entry, dict) and entry.get("key") == key

    def get(self, key: str) -> Conversion | None:
        """The stored conversion for ``key``, or None (nothing stored, or not trustworthy)."""
        entry = self._entry(CACHE_PREFIX + key)
        if entry is None:
            return None
        try:
            return self._read(key, entry)
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def _read(self, key: str, entry: Any) -> Conversion | None:
        if not isinstance(entry, dict) or entry.get("schema") != ENTRY_SCHEMA:
            return None
        if entry.get("version") != ENTRY_VERSION or entry.get("key") != key:
            return None
        for name, kinds in _ENTRY_FIELDS.items():
            if not isinstance(entry.get(name), kinds):
                return None
        for name, kinds in _OPTIONAL_FIELDS.items():
            if not isinstance(entry.get(name), kinds):
                return None
        if not (
            _is_number_map(entry.get("timings"), (int, float))
            and _is_number_map(entry.get("returncodes"), (int,))
        ):
            return None
        status = Status.parse(entry["status"]) if entry["status"] is not None else None
        if status is not None and status not in ANSWER_STATUSES:
            return None
        outputs = None
        if status is None:
            outputs = _read_arrays(self._folder(key), entry["outputs"])
            if not outputs:
                return None
        return Conversion(
            job_id=entry["job_id"],
            status=status,
            outputs=outputs,
            error=entry["error"],
            signature=entry["signature"],
            log_excerpt=entry["log_excerpt"],
            timings=dict(entry["timings"]),
            returncodes=dict(entry["returncodes"]),
            peak_rss_mb=entry["peak_rss_mb"],
            toolkit=entry["toolkit"],
            cached=True,
            stored_outputs=list(entry["outputs"]) if outputs else None,
            fp16_layers=_layers(entry["fp16_layers"]),
            placement=entry["placement"],
            shapes=entry.get("shapes"),
        )

    def put(self, key: str, conversion: Conversion) -> None:
        """Store a cacheable conversion (others, and everything under --rknn-no-cache, not)."""
        if self.cache is None or not conversion.cacheable:
            return
        digests: list[str] = []
        try:
            if conversion.status is None:
                digests = _write_arrays(self._folder(key), conversion.outputs or [])
        except OSError:
            return
        entry = {
            "schema": ENTRY_SCHEMA,
            "version": ENTRY_VERSION,
            "key": key,
            "job_id": conversion.job_id,
            "status": conversion.status.value if conversion.status is not None else None,
            "error": conversion.error,
            "signature": conversion.signature,
            "log_excerpt": conversion.log_excerpt,
            "timings": conversion.timings,
            "returncodes": conversion.returncodes,
            "peak_rss_mb": conversion.peak_rss_mb,
            "toolkit": conversion.toolkit,
            "outputs": digests,
            "fp16_layers": conversion.fp16_layers,
            "placement": conversion.placement,
        }
        if conversion.shapes is not None:
            entry["shapes"] = conversion.shapes
        self.cache.set(CACHE_PREFIX + key, entry)
        if conversion.status is None:
            conversion.stored_outputs = digests


def _layers(value: Any) -> list[dict[str, str]] | None:
    """Stored fp16 layers, or None when absent; ValueError when not a list of name/op pairs."""
    if value is None:
        return None
    if not all(
        isinstance(x, dict)
        and set(x) == {"name", "op"}
        and all(isinstance(v, str) for v in x.values())
        for x in value
    ):
        raise ValueError("malformed fp16_layers")
    return [dict(x) for x in value]


def _read_arrays(folder: Path, digests: Any) -> list[np.ndarray] | None:
    """``output<i>.npy`` of ``folder``, each checked against its sha256 (None: any mismatch);
    the array is the bytes that were checked, whatever the file holds by then."""
    if not isinstance(digests, list):
        return None
    arrays = []
    for i, digest in enumerate(digests):
        data = (folder / f"output{i}.npy").read_bytes()
        if not isinstance(digest, str) or hashlib.sha256(data).hexdigest() != digest:
            return None
        arrays.append(np.load(io.BytesIO(data), allow_pickle=False))
    return arrays


def _write_arrays(folder: Path, arrays: list[np.ndarray]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    return [_write_npy(folder / f"output{i}.npy", np.asarray(a)) for i, a in enumerate(arrays)]


def _write_npy(path: Path, array: np.ndarray) -> str:
    """Save ``array`` atomically and return the file's sha256."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        data = Path(tmp).read_bytes()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return hashlib.sha256(data).hexdigest()
