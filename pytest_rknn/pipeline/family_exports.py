"""The ``hf`` form's models: exported once, checked against torch, kept on disk.

:class:`FamilyExports` turns an hf subject and its inputs into the exported ONNX model, or the
reason it has none. Every hf subject of the run that is not on disk yet goes to the exporter
in one batch the first time any of them is needed. Each export is checked on the host:
onnxruntime must load the graph and agree with the torch model's own eager output on the same
inputs (:func:`~pytest_rknn.variants.hf_export.cross_check`); otherwise the export is the
exporter's failure (:class:`ExportFailed`), never the toolkit's. Finished exports and
exporter failures are kept under ``<export root>/hf/`` (a folder per exporter interpreter and
export code), named by spec id and input digest, so a warm run exports nothing. A failure of
the exporter process itself (a crash, a timeout) is not kept: it is a model's own failure only
when that model's export alone fails so, not for want of memory, while another's alone does
not; otherwise it is the exporter's (:class:`ExportProcessError`: the cell's ``crash``), met
once per run. A kept model
is used only while its seal holds (:mod:`~pytest_rknn.pipeline.export_seal`); a damaged one
is exported again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock

from pytest_rknn.pipeline.cache_keys import code_digest
from pytest_rknn.pipeline.export_seal import discard, seal, unsealed
from pytest_rknn.results.journal import atomic_write_text
from pytest_rknn.variants.export_process import ExportProcessError
from pytest_rknn.variants.families import FamilySpec
from pytest_rknn.variants.hf_export import (
    ExportFailed,
    FamilyExport,
    cross_check,
    export_families,
    read_export,
)
from pytest_rknn.variants.torch_export import (
    TorchExportError,
    interpreter_stamp,
    require_python,
)
from pytest_rknn.verdict.logtext import normalise

EXPORT_VERSION = "1"
_EXPORT_CODE = (
    "variants/hf_export_script.py",
    "variants/export_registry.py",
    "variants/export_server.py",
    "variants/hf_export.py",
    "variants/families.py",
)
"""The code that decides what an export holds: a change to it exports again."""


def _digest(inputs: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(inputs):
        array = np.ascontiguousarray(inputs[name])
        h.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()[:16]


@dataclass
class FamilyExports:
    """The run's hf exports. ``torch_python`` gives the exporter's interpreter (or None);
    ``pending`` lists the run's hf specs, exported together with the first one needed."""

    root: Path
    torch_python: Callable[[], Path | None]
    inputs_of: Callable[[FamilySpec], dict[str, np.ndarray]]
    pending: list[FamilySpec] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _failed: dict[Path, ExportProcessError] = field(default_factory=dict)

    def get(self, spec: FamilySpec, inputs: dict[str, np.ndarray]) -> FamilyExport:
        """The checked export of ``spec`` on ``inputs``; raises NotBuildable (no exporter
        here), ExportFailed, ExportProcessError or OSError (the machine's: not kept)."""
        python = self._python()
        folder = self._folder(python)
        base = self._base(folder, spec, inputs)
        for _attempt in range(2):
            folder.mkdir(parents=True, exist_ok=True)
            # One exporter at a time (threads and processes): no half-written export is read.
            with self._lock, FileLock(str(folder / ".export.lock")):
                if base in self._failed:  # this run's exporter failed it: met once
                    raise self._failed[base]
                if not _kept(base):
                    transient = self._export(spec, inputs, folder, python)
                    if base in transient:
                        raise transient[base]
            failed = self._recorded_failure(base)
            if failed is not None:
                raise failed
            if _sealed(base):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    return read_export(base)
            # Damaged since (or from before seals): the next pass, under the lock, exports again.
        raise ExportFailed("export left no model", f"the export of {spec.id} wrote no model")

    def _python(self) -> Path:
        return require_python(
            self.torch_python,
            "no exporter interpreter for the hf form: run `pytest-rknn envs` (it builds "
            "the exporter environment, transformers included) or set "
            "PYTEST_RKNN_TORCH_PYTHON to a python with torch and transformers",
        )

    def _folder(self, python: Path) -> Path:
        code = code_digest(_EXPORT_CODE)
        stamp = f"{interpreter_stamp(python)}:{EXPORT_VERSION}:{code}"
        return self.root / "hf" / hashlib.sha256(stamp.encode()).hexdigest()[:12]

    @staticmethod
    def _base(folder: Path, spec: FamilySpec, inputs: dict[str, np.ndarray]) -> Path:
        return folder / f"{spec.id}.{_digest(inputs)}.onnx"

    @staticmethod
    def _recorded_failure(base: Path) -> ExportFailed | None:
        error = base.with_suffix(".error")
        if not error.exists():
            return None
        try:
            data = json.loads(error.read_text())
            return ExportFailed(str(data["signature"]), str(data["reason"]))
        except (OSError, ValueError, KeyError, TypeError):
            error.unlink(missing_ok=True)  # cut short (a full disk) or damaged: export again
            return None

    def _export(
        self, spec: FamilySpec, inputs: dict[str, np.ndarray], folder: Path, python: Path
    ) -> dict[Path, Exception]:
        """Export ``spec`` and every pending spec not on disk yet; the failures that belong
        to this run's exporter process or to the machine (``OSError``: no space, no memory)
        rather than to a model (not kept)."""
        todo: dict[Path, tuple[FamilySpec, dict[str, np.ndarray]]] = {}
        for other in dict.fromkeys([spec, *self.pending]):
            try:
                given = inputs if other == spec else self.inputs_of(other)
            except Exception:  # noqa: BLE001 - that spec's own cell reports why
                continue
            base = self._base(folder, other, given)
            if not _kept(base):
                todo[base] = (other, given)
        jobs = [(s, given, base) for base, (s, given) in todo.items()]
        for _s, _given, base in jobs:
            _discard(base)  # a damaged export's seal goes before its files are written again
        try:
            results = export_families(jobs, python)
        except ExportProcessError as exc:
            # A hang is not tried again model by model: each would take the timeout.
            results = [exc] * len(jobs) if exc.hung else self._one_by_one(jobs, python)
        transient: dict[Path, Exception] = {}
        for (s, given, base), result in zip(jobs, results, strict=True):
            if isinstance(result, ExportProcessError):
                transient[base] = self._failed[base] = result
            elif isinstance(result, ExportFailed):
                transient[base] = result
            elif isinstance(result, TorchExportError) and result.environmental:
                transient[base] = OSError(f"the export of {s.id} was not kept: {result}")
            else:
                self._keep(s, given, base, result)
        return transient

    @staticmethod
    def _one_by_one(
        jobs: list[tuple[FamilySpec, dict[str, np.ndarray], Path]], python: Path
    ) -> list[FamilyExport | TorchExportError | ExportFailed]:
        """After the batch's process failed: each job in a process of its own, so that one
        model that kills the exporter costs only its own cells. A job whose process fails is
        that model's failure only if another job's process did not fail, and not for want of
        memory or space (``environmental``: the machine's, a crash). When the first two
        fail so, the exporter fails whatever it exports (a hang would take its timeout once
        per job): every job keeps that ExportProcessError, and the rest are not tried."""
        results: list[FamilyExport | TorchExportError | ExportFailed] = []
        for i, job in enumerate(jobs):
            if i >= 2 and all(isinstance(r, ExportProcessError) for r in results):
                results += [results[-1]] * (len(jobs) - i)
                break
            try:
                results.extend(export_families([job], python))
            except ExportProcessError as exc:
                results.append(exc)
        if all(isinstance(r, ExportProcessError) for r in results):
            return results
        return [
            ExportFailed("exporter process failed", str(r))
            if isinstance(r, ExportProcessError) and not r.environmental
            else r
            for r in results
        ]

    @staticmethod
    def _keep(
        spec: FamilySpec,
        inputs: dict[str, np.ndarray],
        base: Path,
        result: FamilyExport | TorchExportError,
    ) -> None:
        error = base.with_suffix(".error")
        if isinstance(result, TorchExportError):
            first = str(result).partition(": ")[2] or str(result)
            signature = f"{spec.exporter} export failed: {normalise(first, 80)}"
            failed = ExportFailed(signature, str(result))
        else:
            try:
                with np.load(result.eager) as data:
                    eager = data["out"]
                cross_check(result.path, inputs, eager)
            except ExportFailed as exc:
                failed = exc
            except (OSError, ValueError, KeyError) as exc:
                failed = ExportFailed("export output unreadable", f"{result.eager.name}: {exc}")
            else:
                record = base.with_suffix(".json")
                atomic_write_text(record, json.dumps(result.to_dict()))
                seal(result.path, (record,))
                return
        record = {"signature": failed.signature, "reason": failed.reason}
        atomic_write_text(error, json.dumps(record))


def _sealed(base: Path) -> bool:
    """Whether the export at ``base`` and its record are as they were sealed."""
    return unsealed(base, (base.with_suffix(".json"),)) is None


def _kept(base: Path) -> bool:
    """Whether the export at ``base`` is on disk as sealed, or its failure is recorded."""
    return _sealed(base) or base.with_suffix(".error").exists()


def _discard(base: Path) -> None:
    """Remove the export at ``base`` with its seal, record and eager outputs."""
    discard(base)
    for suffix in (".json", ".eager.npz"):
        base.with_suffix(suffix).unlink(missing_ok=True)
