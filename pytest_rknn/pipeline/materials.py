"""What a cell is made of on the host: its ONNX file, its inputs and its reference outputs.

:class:`Materials` makes each once per subject and process and remembers failures: a model that
cannot be built here (:class:`~pytest_rknn.variants.forms.NotBuildable`, e.g. no torch
interpreter for the ``torch-export`` form), inputs larger than the memory the run allows, a
reference that cannot be computed (:class:`HostError`), an hf model the exporter could not make
faithfully (:class:`~pytest_rknn.variants.hf_export.ExportFailed`). All torch-export variants of
a run go through one torch process the first time any of them is needed, and so do all hf
models (:mod:`~pytest_rknn.pipeline.family_exports`); exported models and exporter errors are
kept in pytest's cache (one process exports at a time: a file lock beside them), a model only
under its seal (:mod:`~pytest_rknn.pipeline.export_seal`), an error only when the model caused
it (not a full disk). Its methods may be called from several threads (the prefetcher's and the
cells'): each subject's materials are made under that subject's lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from filelock import FileLock

from pytest_rknn.pipeline.cache import ResultCache
from pytest_rknn.pipeline.cache_keys import array_digest, code_digest, reference_key
from pytest_rknn.pipeline.calibration import CalibrationError, CalibrationSet, make_calibration
from pytest_rknn.pipeline.export_seal import discard, seal, unsealed
from pytest_rknn.pipeline.family_exports import FamilyExports
from pytest_rknn.pipeline.input_roles import InputRoleError
from pytest_rknn.pipeline.subjects import FamilySubject, Subject
from pytest_rknn.results.journal import atomic_write_text
from pytest_rknn.variants.export_process import ExportProcessError, shared_exports
from pytest_rknn.variants.families import FamilySpec
from pytest_rknn.variants.forms import NotBuildable
from pytest_rknn.variants.hf_export import ExportFailed
from pytest_rknn.variants.reference import float16_outputs
from pytest_rknn.variants.spec import VariantSpec
from pytest_rknn.variants.torch_export import (
    TorchExportError,
    export_many,
    interpreter_stamp,
    require_python,
)

EXPORT_VERSION = "1"
# The code that decides what a torch export holds: a change to it exports again.
_TORCH_EXPORT_CODE = (
    "variants/torch_export_script.py",
    "variants/export_registry.py",
    "variants/export_server.py",
)


class HostError(RuntimeError):
    """The host cannot make a cell's inputs or reference; the message says why."""


@dataclass
class BuiltModel:
    path: Path
    model: onnx.ModelProto
    sha256: str
    export: dict[str, Any] | None = None


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


@dataclass
class Materials:
    """Models, inputs and references of one process's cells, each made once per subject.

    ``torch_python`` finds the interpreter that runs the torch exporter (None: there is none);
    ``max_bytes`` bounds what making one subject's inputs and reference may allocate.
    """

    workdir: Path
    seed: int
    max_bytes: int
    torch_python: Callable[[], Path | None]
    export_root: Path
    cache: ResultCache
    export_specs: list[VariantSpec] = field(default_factory=list)
    family_specs: list[FamilySpec] = field(default_factory=list)
    _families: FamilyExports | None = None
    _models: dict[str, BuiltModel | Exception] = field(default_factory=dict)
    _inputs: dict[str, Any] = field(default_factory=dict)
    _references: dict[str, Any] = field(default_factory=dict)
    _emulations: dict[str, Any] = field(default_factory=dict)
    _digests: dict[str, Any] = field(default_factory=dict)
    _calibrations: dict[tuple[str, int], Any] = field(default_factory=dict)
    _failed_exports: dict[str, ExportProcessError] = field(default_factory=dict)
    _locks: dict[str, threading.RLock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def _lock(self, name: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(name, threading.RLock())

    def prepare_exports(self) -> None:
        """Make the run's torch exports now, then its hf exports (one batch each; e.g. on a
        background thread, while the toolkit converts the cells before them), in one export
        process (torch imported once)."""
        with shared_exports():
            for spec in self.export_specs[:1]:
                with contextlib.suppress(NotBuildable, ExportProcessError), self._lock(spec.id):
                    self._torch_export(spec)
            for family in self.family_specs[:1]:
                with contextlib.suppress(NotBuildable, ExportFailed, ExportProcessError, HostError):
                    self.model(FamilySubject(family))

    def model(self, subject: Subject) -> BuiltModel:
        """The subject's model, written to a file; NotBuildable is remembered and re-raised."""
        with self._lock(subject.id):
            return self._model(subject)

    def _model(self, subject: Subject) -> BuiltModel:
        cached = self._models.get(subject.id)
        if cached is None:
            try:
                if isinstance(subject, FamilySubject):
                    cached = self._family_export(subject)
                else:
                    cached = self._write(subject, self._build(subject))
            except (NotBuildable, ExportFailed, ExportProcessError, HostError) as exc:
                cached = exc
            self._models[subject.id] = cached
        if isinstance(cached, Exception):
            raise cached
        return cached

    def _build(self, subject: Subject) -> onnx.ModelProto:
        spec = getattr(subject, "spec", None)
        if spec is not None and spec.form == "torch-export":
            return self._torch_export(spec)
        return subject.build()

    def _write(
        self, subject: Subject, model: onnx.ModelProto, export: dict[str, Any] | None = None
    ) -> BuiltModel:
        data = model.SerializeToString()
        path = self.workdir / "models" / f"{subject.id}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return BuiltModel(path, model, hashlib.sha256(data).hexdigest(), export)

    def _family_export(self, subject: FamilySubject) -> BuiltModel:
        """The hf subject's checked export on the run's inputs (the same inputs the cell is
        converted and judged with)."""
        with self._guard:
            if self._families is None:
                self._families = FamilyExports(
                    root=self.export_root,
                    torch_python=self.torch_python,
                    inputs_of=self._pending_inputs,
                    pending=list(self.family_specs),
                )
        export = self._families.get(subject.spec, self.inputs(subject))
        try:
            model = onnx.load(str(export.path))
        except Exception as exc:  # noqa: BLE001 - a damaged export reads as any error
            raise ExportFailed("export unreadable", f"{export.path.name}: {exc}") from None
        return self._write(subject, model, export.to_dict())

    def _pending_inputs(self, spec: FamilySpec) -> dict[str, np.ndarray]:
        """Another hf subject's inputs for the export batch: the arrays its own cell will make
        (they are deterministic), made without its lock, which another thread may hold while
        it waits for the batch."""
        subject = FamilySubject(spec)
        if subject.host_bytes() > self.max_bytes:
            raise HostError(f"the inputs of {spec.id} are over --rknn-max-memory")
        return subject.inputs(self.seed)

    def inputs(self, subject: Subject) -> dict[str, np.ndarray]:
        """The subject's inputs for the run's seed; HostError when they would not fit."""
        return self._once(self._inputs, subject, lambda: self._make_inputs(subject))

    def reference(
        self, subject: Subject, built: BuiltModel, inputs: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        """The subject's reference outputs for ``inputs`` (from the cache when it has them);
        HostError when they cannot be had."""
        return self._once(
            self._references, subject, lambda: self._cached_reference(subject, built, inputs)
        )

    def fp16_emulation(
        self, subject: Subject, built: BuiltModel, inputs: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        """The subject's model run on ``inputs`` in float16 on the host (from the cache when
        it has it): what float16 arithmetic alone does to it; HostError when it cannot run."""

        def make() -> list[np.ndarray] | HostError:
            key = reference_key(
                kind="fp16-emulation",
                subject=subject.to_dict(),
                model=built.sha256,
                inputs=self.digests(subject, inputs),
            )
            with self.cache.reference_lock(key):
                found = self.cache.get_reference(key)
                if found is None:
                    try:
                        found = [np.asarray(o) for o in float16_outputs(built.model, inputs)]
                    except MemoryError:
                        return HostError("out of memory running the float16 emulation")
                    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many kinds
                        first = (str(exc).strip().splitlines() or [""])[0][:200]
                        return HostError(f"{type(exc).__name__}: {first}")
                    self.cache.put_reference(key, found)
            return found

        return self._once(self._emulations, subject, make)

    def digests(self, subject: Subject, inputs: dict[str, np.ndarray]) -> dict[str, str]:
        """The inputs' content hashes (made once per subject, like the inputs)."""
        return self._once(
            self._digests, subject, lambda: {n: array_digest(a) for n, a in inputs.items()}
        )

    def calibration(
        self, subject: Subject, inputs: dict[str, np.ndarray], names: list[str], n: int
    ) -> CalibrationSet:
        """``n`` calibration samples of the subject's inputs ``names`` (never its test input),
        written once per subject and process; HostError when they cannot be drawn."""
        memo = getattr(subject, "given", None) is None
        key = (subject.id, n)
        found = self._calibrations.get(key) if memo else None
        if found is None:
            folder = self.workdir / "calibration" / subject.id / f"n{n}-{uuid.uuid4().hex[:8]}"
            try:
                found = make_calibration(subject, self.seed, n, names, inputs, folder)
            except CalibrationError as exc:
                found = HostError(str(exc))
            except InputRoleError as exc:
                found = HostError(f"no calibration samples for {subject.id}: {exc}")
            except MemoryError:
                found = HostError(f"out of memory making the calibration set of {subject.id}")
            if memo:
                self._calibrations[key] = found
        if isinstance(found, HostError):
            raise found
        return found

    def reference_key(
        self, subject: Subject, built: BuiltModel, inputs: dict[str, np.ndarray]
    ) -> str:
        """What the subject's reference depends on, hashed (see the cache)."""
        return reference_key(
            subject=subject.to_dict(), model=built.sha256, inputs=self.digests(subject, inputs)
        )

    def _cached_reference(
        self, subject: Subject, built: BuiltModel, inputs: dict[str, np.ndarray]
    ) -> list[np.ndarray] | HostError:
        key = self.reference_key(subject, built, inputs)
        with self.cache.reference_lock(key):
            found = self.cache.get_reference(key)
            if found is None:
                found = self._make_reference(subject, built.model, inputs)
                if not isinstance(found, HostError):
                    self.cache.put_reference(key, found)
        return found

    def _once(self, store: dict[str, Any], subject: Subject, make: Callable[[], Any]) -> Any:
        """``make()`` once per subject (every time for inputs given by a test), HostError
        remembered and raised like the value is returned."""
        memo = getattr(subject, "given", None) is None
        with self._lock(subject.id):
            found = store.get(subject.id) if memo else None
            if found is None:
                found = make()
                if memo:
                    store[subject.id] = found
        if isinstance(found, HostError):
            raise found
        return found

    def _make_inputs(self, subject: Subject) -> dict[str, np.ndarray] | HostError:
        need = subject.host_bytes()
        if need > self.max_bytes:
            return HostError(
                f"the inputs and reference of {subject.id} need about {_gib(need)} on the "
                f"host, over --rknn-max-memory ({_gib(self.max_bytes)}): raise it or use "
                "smaller shapes"
            )
        try:
            return subject.inputs(self.seed)
        except InputRoleError as exc:
            return HostError(f"no inputs for {subject.id}: {exc}")
        except MemoryError:
            return HostError(f"out of memory making the inputs of {subject.id}")

    @staticmethod
    def _make_reference(
        subject: Subject, model: onnx.ModelProto, inputs: dict[str, np.ndarray]
    ) -> list[np.ndarray] | HostError:
        try:
            return [np.asarray(r) for r in subject.reference(model, inputs)]
        except MemoryError:
            return HostError(f"out of memory computing the reference of {subject.id}")
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many kinds
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            return HostError(f"the reference run failed: {type(exc).__name__}: {first}")

    def _torch_export(self, spec: VariantSpec) -> onnx.ModelProto:
        python = require_python(
            self.torch_python,
            "no torch interpreter: run `pytest-rknn envs` (it builds the exporter "
            "environment) or set PYTEST_RKNN_TORCH_PYTHON to a python that imports torch",
        )
        code = code_digest(_TORCH_EXPORT_CODE)
        stamp = f"{interpreter_stamp(python)}:{EXPORT_VERSION}:{code}"
        folder = self.export_root / hashlib.sha256(stamp.encode()).hexdigest()[:12]
        model_path, error = folder / f"{spec.id}.onnx", folder / f"{spec.id}.error"
        for _attempt in range(2):
            # Under the lock, so that no half-written export of another batch is read.
            folder.mkdir(parents=True, exist_ok=True)
            with self._lock("exports"), FileLock(str(folder / ".export.lock")):
                if spec.id in self._failed_exports:  # this run's exporter failed it: met once
                    raise self._failed_exports[spec.id]
                if not _export_kept(folder, spec):
                    self._export_batch(spec, folder, python)
            reason = _kept_error(error)
            if reason is not None:
                raise NotBuildable(reason)
            if unsealed(model_path) is None:
                with contextlib.suppress(Exception):
                    return onnx.load(str(model_path))
            # Damaged since (or from before seals): the next pass, under the lock, exports again.
        raise NotBuildable(f"the torch export of {spec.id} wrote no loadable model")

    def _export_batch(self, spec: VariantSpec, folder: Path, python: Path) -> None:
        todo = [s for s in dict.fromkeys([spec, *self.export_specs]) if not _export_kept(folder, s)]
        jobs = [(s, folder / f"{s.id}.onnx", s.exporter) for s in todo]
        for _s, model, _exporter in jobs:
            discard(model)  # a damaged export's seal goes before its files are written again
        try:
            results = export_many(jobs, python)
        except ExportProcessError as exc:
            # The whole batch's: a crash of each of its cells, this run only (once per run:
            # a batch that hangs takes its timeout once).
            self._failed_exports.update({s.id: exc for s in todo})
            raise
        failed: dict[VariantSpec, str] = {}
        for s, result in zip(todo, results, strict=True):
            model = folder / f"{s.id}.onnx"
            try:
                if not isinstance(result, TorchExportError):
                    seal(model)
                    continue
                discard(model)
                if result.environmental:  # the machine's fault (a full disk): not kept
                    failed[s] = str(result)
                else:
                    atomic_write_text(folder / f"{s.id}.error", str(result))
            except OSError as exc:
                discard(model)
                failed[s] = f"{type(exc).__name__}: {exc}"
        if spec in failed:
            raise OSError(f"the torch export of {spec.id} was not kept: {failed[spec]}")


def _export_kept(folder: Path, spec: VariantSpec) -> bool:
    """Whether the export of ``spec`` is on disk: as sealed, or its failure recorded."""
    model = folder / f"{spec.id}.onnx"
    return unsealed(model) is None or (folder / f"{spec.id}.error").exists()


def _kept_error(error: Path) -> str | None:
    """The recorded failure of an export, or None; an empty or unreadable record (a full disk
    cut it) is removed, so that the export runs again."""
    try:
        reason = error.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        reason = ""
    if not reason:
        error.unlink(missing_ok=True)
        return None
    return reason
