"""One rknn-toolkit2 version's environment: where it lives, its recipe, how it is built and proved.

Owns :class:`ToolkitEnv`, a :class:`~pytest_rknn.envs.base.ManagedEnv` whose recipe is the
version's entry in :mod:`~pytest_rknn.envs.recipes`, built from the registry or a wheel file (or
the toolkit installed in this interpreter), and proved by a smoke conversion.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from pathlib import Path
from typing import IO, Any

from pytest_rknn.envs.base import (
    RECIPE_SCHEMA,
    EnvState,
    ManagedEnv,
    Phase,
    file_sha256,
    py_tag,
    python_version,
)
from pytest_rknn.envs.install import BuildError, inspect_packages
from pytest_rknn.envs.recipes import (
    DIST,
    ToolkitRequest,
    TorchSpec,
    derive_requirements,
    recipe_entry,
)

SMOKE_TIMEOUT = 180.0


class ToolkitEnv(ManagedEnv):
    """One toolkit version's environment: where it lives, whether it works, how to build it."""

    kind = "toolkit"
    shown_packages = ("torch", "onnx", "onnxruntime")
    smoke_name = "smoke conversion"
    stale_causes = "torch, pins, wheel or Python changed"

    def __init__(self, request: ToolkitRequest, root: Path, torch: TorchSpec | None = None):
        super().__init__(root, torch)
        self.request = request

    def __repr__(self) -> str:
        return f"ToolkitEnv({self.request}, state={self.state.value}, path={self.path})"

    @property
    def version(self) -> str:
        return self.request.version

    @property
    def label(self) -> str:
        return self.version

    @property
    def name(self) -> str:
        if self.request.installed:
            digest = hashlib.sha256(sys.executable.encode()).hexdigest()[:10]
            return f"installed-{self.version}-{digest}"
        return f"rknn-{self.version}-{py_tag()}"

    @property
    def path(self) -> Path:
        return Path(sys.prefix) if self.request.installed else self.root / self.name

    @property
    def python(self) -> Path:
        return Path(sys.executable) if self.request.installed else self.path / "bin" / "python"

    @property
    def marker_path(self) -> Path:
        if self.request.installed:
            return self.root / "installed" / f"{self.name}.json"
        return super().marker_path

    @property
    def builds_venv(self) -> bool:
        return not self.request.installed

    def recipe(self) -> dict[str, Any]:
        recipe: dict[str, Any] = {
            "schema": RECIPE_SCHEMA,
            "toolkit": self.version,
            "python": python_version(),
        }
        if self.request.installed:
            recipe["interpreter"] = sys.executable
            return recipe
        recipe["table"] = recipe_entry(self.version)
        recipe["torch"] = self.torch.key()
        if self.request.wheel is not None:
            recipe["wheel"] = file_sha256(self.request.wheel)
        return recipe

    def hint(self, rebuild: bool = False) -> str:
        flag = " --rebuild" if rebuild else ""
        return f"run `pytest-rknn envs{flag}{self.root_flag()} --toolkits {self.request}`"

    def verify(self) -> EnvState:
        if self.request.installed:
            return self._verify_installed()
        return super().verify()

    def _verify_installed(self) -> EnvState:
        import importlib.metadata

        try:
            found = importlib.metadata.version(DIST)
        except importlib.metadata.PackageNotFoundError:
            found = None
        if found != self.version:
            return self._set(
                EnvState.BROKEN,
                f"rknn-toolkit2 {self.version} is no longer installed in {sys.executable}",
            )
        marker = self._read_marker()
        self.marker = marker or {}
        if marker is None or marker.get("recipe_hash") != self.recipe_hash():
            return self._set(EnvState.UNVERIFIED, f"not smoke-tested yet; {self.hint()}")
        return self._verify_smoke(marker)

    def _packages(self) -> dict[str, str]:
        packages = super()._packages()
        if self.request.installed and not packages:
            return _local_versions()
        return packages

    def _source(self) -> str:
        return self.request.source

    def _marker_fields(self) -> dict[str, Any]:
        return {"toolkit": self.version}

    def _install(self, log: IO[str], report: Phase) -> tuple[list[str], dict[str, Any]]:
        if self.request.installed:
            return [], {"packages": _local_versions(), "dist_info": {}}
        self.fresh_venv(log, report)
        wheel = self.request.wheel
        report("installing rknn-toolkit2")
        source = str(wheel) if wheel is not None else f"{DIST}=={self.version}"
        self.pip_install(["--no-deps", source], log, "pip install rknn-toolkit2")
        requirements = derive_requirements(self.version, self.installed_metadata())
        report("installing requirements")
        self.pip_install(
            [*requirements, *self.torch.pip_args()], log, "pip install requirements", report
        )
        info = self.check_packages(report, (DIST, *self.shown_packages, "numpy"))
        return requirements, info

    def installed_metadata(self) -> str:
        """The METADATA text of the rknn-toolkit2 installed in the environment (the wheel's
        own, as installers copy it): where its declared requirements are read from."""
        info = inspect_packages(self.python, self.path, [DIST])
        meta = info["dist_info"].get(DIST)
        if meta is None:
            raise BuildError(f"{DIST} {self.version} is not installed in {self.path} after install")
        return (self.path / meta).read_text(encoding="utf-8")

    def _smoke(self, workdir: Path) -> dict[str, Any]:
        from pytest_rknn.envs.smoke import smoke_convert

        result = smoke_convert(self.python, workdir, timeout=SMOKE_TIMEOUT, version=self.version)
        return {"ok": result.ok, "detail": result.detail, "seconds": result.seconds}


def _local_versions() -> dict[str, str]:
    import importlib.metadata

    versions = {}
    for name in (DIST, *ToolkitEnv.shown_packages, "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions
