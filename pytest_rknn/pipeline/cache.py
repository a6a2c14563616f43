"""What is reused between runs: the toolkit's answer to a conversion, never a cell's verdict.

A :class:`Conversion` is what one worker job produced (outputs, or the status and signature of
the failure, timings, the log excerpt). :class:`ConversionCache` keeps it in pytest's cache
under a key made of everything that went into the job (:func:`conversion_key`): the model's
bytes, the inputs, the toolkit environment's identity, the platform, the quantization mode
and every toolkit option, and the code that ran the job and read its log. The cell's record
(its identity, its verdict against the current reference and bounds) is made anew on every run,
so a hit can never carry another cell's id or another model's path.

Only statuses the vocabulary marks cacheable are stored; ``--rknn-no-cache`` neither reads nor
writes. An entry that is not exactly what this module writes (wrong schema, a field of the
wrong type, another key inside, an output file whose hash differs) is a miss, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pytest_rknn.results.status import Status

ENTRY_SCHEMA = "pytest-rknn/conversion"
ENTRY_VERSION = 1
CACHE_PREFIX = "pytest-rknn/conversions/"
OUTPUTS_DIR = "pytest-rknn-outputs"
# The code whose change changes a cached answer: the worker script and the log readers.
_CODE = ("toolkit/remote.py", "verdict/signatures.py", "verdict/logtext.py")


@lru_cache(maxsize=1)
def code_digest() -> str:
    """A hash of the code that ran the job and turned its log into a signature."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in _CODE:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


def array_digest(array: np.ndarray) -> str:
    data = np.ascontiguousarray(array)
    head = f"{data.dtype.str}{data.shape}".encode()
    return hashlib.sha256(head + data.tobytes()).hexdigest()[:32]


def conversion_key(**parts: Any) -> str:
    """A stable hash of everything a conversion depends on (plus the code digest)."""
    text = json.dumps(
        {"entry": ENTRY_VERSION, "code": code_digest(), **parts}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:40]


@dataclass
class Conversion:
    """The toolkit's answer to one job, wherever it came from (a worker now, or the cache).

    ``status`` is None when the model converted and simulated (``outputs`` are to be judged);
    otherwise it is the status the answer decides by itself, with its ``signature``.
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

    @property
    def cacheable(self) -> bool:
        return self.status is None or self.status.cacheable


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
}


class ConversionCache:
    """Conversions in pytest's cache (``cache`` None: nothing is kept)."""

    def __init__(self, cache: Any | None, enabled: bool = True) -> None:
        self.cache = cache if enabled else None

    def folder(self, name: str) -> Path | None:
        """A folder of pytest's cache for other reusable files (None: nothing is kept)."""
        return Path(self.cache.mkdir(name)) if self.cache is not None else None

    def _folder(self, key: str) -> Path:
        assert self.cache is not None
        return Path(self.cache.mkdir(OUTPUTS_DIR)) / key

    def get(self, key: str) -> Conversion | None:
        """The stored conversion for ``key``, or None (nothing stored, or not trustworthy)."""
        if self.cache is None:
            return None
        try:
            entry = self.cache.get(CACHE_PREFIX + key, None)
        except RecursionError:  # JSON nested too deeply for the parser: not an entry of ours
            return None
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
            outputs = []
            folder = self._folder(key)
            for i, digest in enumerate(entry["outputs"]):
                data = (folder / f"output{i}.npy").read_bytes()
                if not isinstance(digest, str) or hashlib.sha256(data).hexdigest() != digest:
                    return None
                outputs.append(np.load(folder / f"output{i}.npy", allow_pickle=False))
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
        )

    def put(self, key: str, conversion: Conversion) -> None:
        """Store a cacheable conversion (others, and everything under --rknn-no-cache, not)."""
        if self.cache is None or not conversion.cacheable:
            return
        digests: list[str] = []
        try:
            if conversion.status is None:
                folder = self._folder(key)
                folder.mkdir(parents=True, exist_ok=True)
                for i, array in enumerate(conversion.outputs or []):
                    digests.append(_write_npy(folder / f"output{i}.npy", np.asarray(array)))
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
        }
        self.cache.set(CACHE_PREFIX + key, entry)


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
