"""The per-process state of a run: toolkit environments, the worker pool, the result cache.

Each pytest process (the only one, or each xdist worker) has one :class:`RknnSession`. It
resolves toolkit environments lazily (creating a missing one under its file lock), keeps one
:class:`~pytest_rknn.workers.WorkerPool` for all its cells, writes each built ONNX model once,
and reads and writes cell results in pytest's cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from pytest_rknn.envs import EnvState, ToolkitEnv, exporter_env, get_envs
from pytest_rknn.settings import Settings
from pytest_rknn.toolkits import ToolkitRequest
from pytest_rknn.variants.forms import NotBuildable
from pytest_rknn.variants.spec import VariantSpec
from pytest_rknn.variants.torch_export import TorchExportError, export_many, find_torch_python
from pytest_rknn.workers import WorkerPool

HARNESS_VERSION = "1"
CACHE_PREFIX = "pytest-rknn/cells/"


@dataclass
class BuiltModel:
    path: Path
    model: onnx.ModelProto
    sha256: str


@dataclass
class RknnSession:
    """What one pytest process needs to run cells."""

    settings: Settings
    workdir: Path
    cache: pytest.Cache | None
    envs: dict[str, ToolkitEnv] = field(default_factory=dict)
    models: dict[str, BuiltModel | Exception] = field(default_factory=dict)
    export_specs: list[VariantSpec] = field(default_factory=list)
    input_memo: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    references: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _pool: WorkerPool | None = None

    def request(self, version: str) -> ToolkitRequest:
        for request in self.settings.toolkits:
            if request.version == version:
                return request
        return ToolkitRequest(version)

    def env(self, version: str, create: bool = False) -> ToolkitEnv:
        """The environment for ``version``; with ``create``, built if it is missing or stale."""
        env = self.envs.get(version)
        if env is None or (create and env.verify() != EnvState.OK):
            request = self.request(version)
            (env,) = get_envs([request], root=self.settings.envs_root, create=create)
            self.envs[version] = env
        return env

    def recipe_hash(self, version: str) -> str:
        return self.env(version).recipe_hash()

    def torch_python(self) -> Path | None:
        """Who runs the torch exporter: ``$PYTEST_RKNN_TORCH_PYTHON``, else the exporter
        environment, else a toolkit environment's torch (no onnxscript: ``torchscript`` only).
        """
        named = find_torch_python()
        if named is not None:
            return named
        exporter = exporter_env(self.settings.envs_root)
        if exporter.usable:
            return exporter.python
        for version in self.settings.toolkit_names:
            env = self.env(version)
            if env.verify() == EnvState.OK:
                return env.python
        return None

    @property
    def pool(self) -> WorkerPool:
        if self._pool is None:
            self._pool = WorkerPool({}, self.workdir, self.settings.limits)
        return self._pool

    def python_for(self, version: str) -> tuple[Path | None, str | None]:
        """The interpreter of a usable environment, or None and why it is not usable."""
        env = self.env(version, create=True)
        state = env.verify()
        if state != EnvState.OK:
            return None, f"toolkit {version} environment is {state.value}: {env.reason}"
        self.pool.pythons[version] = env.python
        return env.python, None

    def built(self, subject: Any) -> BuiltModel:
        """Build and write a subject's model once per process; NotBuildable is remembered."""
        cached = self.models.get(subject.id)
        if cached is None:
            try:
                spec = getattr(subject, "spec", None)
                if spec is not None and spec.form == "torch-export":
                    model = self.torch_export(spec)
                else:
                    model = subject.build()
                data = model.SerializeToString()
                path = self.workdir / "models" / f"{subject.id}.onnx"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                cached = BuiltModel(path, model, hashlib.sha256(data).hexdigest())
            except Exception as exc:  # noqa: BLE001 - remembered and re-raised per cell
                cached = exc
            self.models[subject.id] = cached
        if isinstance(cached, Exception):
            raise cached
        return cached

    def inputs(self, subject: Any) -> dict[str, np.ndarray]:
        """A subject's inputs for the run's seed, made once per variant."""
        if getattr(subject, "given", None) is not None:
            return subject.inputs(self.settings.seed)
        if subject.id not in self.input_memo:
            self.input_memo[subject.id] = subject.inputs(self.settings.seed)
        return self.input_memo[subject.id]

    def reference(
        self, subject: Any, model: onnx.ModelProto, inputs: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        """A subject's reference outputs for those inputs, computed once per variant."""
        if getattr(subject, "given", None) is not None:
            return subject.reference(model, inputs)
        if subject.id not in self.references:
            self.references[subject.id] = subject.reference(model, inputs)
        return self.references[subject.id]

    def torch_export(self, spec: VariantSpec) -> onnx.ModelProto:
        """The real exporter's model for ``spec``, exported once per torch interpreter.

        All the run's torch-export variants go through one torch process the first time any
        of them is needed; models and exporter errors are kept in pytest's cache.
        """
        try:
            python = self.torch_python()
        except TorchExportError as exc:
            raise NotBuildable(str(exc)) from None
        if python is None:
            raise NotBuildable(
                "no torch interpreter: run `pytest-rknn envs` (it builds the exporter "
                "environment) or set PYTEST_RKNN_TORCH_PYTHON to a python that imports torch"
            )
        stamp = f"{python}:{python.stat().st_mtime_ns}:{HARNESS_VERSION}"
        root = self.cache.mkdir("pytest-rknn-exports") if self.cache else self.workdir / "exports"
        folder = root / hashlib.sha256(stamp.encode()).hexdigest()[:12]

        def done(s: VariantSpec) -> bool:
            return (folder / f"{s.id}.onnx").exists() or (folder / f"{s.id}.error").exists()

        if not done(spec):
            todo = [s for s in dict.fromkeys([spec, *self.export_specs]) if not done(s)]
            jobs = [(s, folder / f"{s.id}.onnx", s.exporter) for s in todo]
            try:
                results = export_many(jobs, python)
            except TorchExportError as exc:
                raise NotBuildable(str(exc)) from None
            for s, result in zip(todo, results, strict=True):
                if isinstance(result, TorchExportError):
                    (folder / f"{s.id}.error").write_text(str(result))
        error = folder / f"{spec.id}.error"
        if error.exists():
            raise NotBuildable(error.read_text())
        return onnx.load(str(folder / f"{spec.id}.onnx"))

    def cache_get(self, key: str) -> dict[str, Any] | None:
        if self.cache is None or not self.settings.use_cache:
            return None
        value = self.cache.get(CACHE_PREFIX + key, None)
        return value if isinstance(value, dict) else None

    def cache_set(self, key: str, value: dict[str, Any], outputs: list | None = None) -> None:
        if self.cache is None:
            return
        if outputs is not None:
            folder = self.cache.mkdir("pytest-rknn-outputs") / key
            folder.mkdir(exist_ok=True)
            for i, array in enumerate(outputs):
                np.save(folder / f"output{i}.npy", array)
            value = {**value, "outputs": len(outputs)}
        self.cache.set(CACHE_PREFIX + key, value)

    def cached_outputs(self, key: str, count: int) -> list[np.ndarray] | None:
        if self.cache is None:
            return None
        folder = self.cache.mkdir("pytest-rknn-outputs") / key
        try:
            return [np.load(folder / f"output{i}.npy") for i in range(count)]
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def cache_key(**parts: Any) -> str:
    """A stable hash of everything a cell's result depends on."""
    text = json.dumps({"harness": HARNESS_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
