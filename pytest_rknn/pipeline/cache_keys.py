"""What a cached value is keyed by: everything that went into it, hashed.

:func:`conversion_key` (a toolkit job's inputs, the environment's identity and the code that ran
the job and read its log), :func:`reference_key` (the subject, its model and inputs, the
reference code and the host's numpy and onnxruntime), :func:`verdict_key` (the outputs' hashes,
the reference's key and the bounds); :func:`code_digest` and :func:`array_digest` are the parts
they and the export folders are made of. :mod:`~pytest_rknn.pipeline.cache` stores under them.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

ENTRY_VERSION = 1
# The code whose change changes a cached answer: the worker scripts, the log readers and the
# rule that makes a death twice an answer.
_CODE = (
    "toolkit/remote.py",
    "toolkit/remote_fork.py",
    "toolkit/remote_hybrid.py",
    "toolkit/remote_shapes.py",
    "pipeline/reproduce.py",
    "verdict/signatures.py",
    "verdict/logtext.py",
    "verdict/placement.py",
    "toolkit/supervisor.py",
    "pipeline/cell_job.py",
)
# ... and a cached reference: the float64 attention and the user models' onnxruntime run.
_REFERENCE_CODE = ("variants/reference.py", "pipeline/subjects.py", "pipeline/user_models.py")


@lru_cache(maxsize=8)
def code_digest(names: tuple[str, ...] = _CODE) -> str:
    """A hash of the code that made a cached value."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in names:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


def array_digest(array: np.ndarray) -> str:
    data = np.ascontiguousarray(array)
    head = f"{data.dtype.str}{data.shape}".encode()
    return hashlib.sha256(head + data.tobytes()).hexdigest()[:32]


def _key(**parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def conversion_key(**parts: Any) -> str:
    """A stable hash of everything a conversion depends on (plus the code digest)."""
    return _key(entry=ENTRY_VERSION, code=code_digest(), **parts)


@lru_cache(maxsize=1)
def _host_versions() -> dict[str, str]:
    """The host libraries a reference depends on (onnxruntime's from its installed metadata:
    importing it would cost a warm run more than all its cells)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        onnxruntime = version("onnxruntime")
    except PackageNotFoundError:
        import onnxruntime as module

        onnxruntime = module.__version__
    return {"numpy": np.__version__, "onnxruntime": onnxruntime}


def verdict_key(
    outputs: list[str], reference: str, bounds: dict[str, Any], names: list[str] | None = None
) -> str:
    """The key of a judgement: which outputs (their files' sha256), against which reference,
    under which bounds, keyed by which output names."""
    return _key(
        entry=ENTRY_VERSION, outputs=outputs, reference=reference, bounds=bounds, names=names
    )


def reference_key(**parts: Any) -> str:
    """A stable hash of everything a reference depends on (plus code and host versions)."""
    return _key(
        entry=ENTRY_VERSION, code=code_digest(_REFERENCE_CODE), host=_host_versions(), **parts
    )
