"""Toolkit environments and the exporter environment, under a cache root.

Owns :class:`ToolkitEnv` (one rknn-toolkit2 version's environment), :func:`exporter_env` (the
torch exporter's environment, :class:`~pytest_rknn.exporter_env.ExporterEnv`),
:func:`provision` (build the missing ones in parallel with progress, one file lock per
environment) and :func:`get_envs` (the plugin's entry point). A successful build ends with a
smoke run and a marker file; checking an environment afterwards only reads that marker and
stats a few paths, so it never imports the toolkit or torch, nor runs pip.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import platformdirs
from filelock import FileLock, Timeout
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pytest_rknn.envbase import (
    REBUILT_AUTOMATICALLY,
    RECIPE_SCHEMA,
    EnvState,
    ManagedEnv,
    Phase,
    py_tag,
    python_version,
)
from pytest_rknn.exporter_env import ExporterEnv
from pytest_rknn.pipsteps import pip_download
from pytest_rknn.toolkits import (
    DIST,
    ToolkitRequest,
    TorchSpec,
    derive_requirements,
    recipe_entry,
    wheel_metadata,
)

__all__ = [
    "ENVS_ENV",
    "EnvError",
    "EnvState",
    "ExporterEnv",
    "ManagedEnv",
    "REBUILT_AUTOMATICALLY",
    "ToolkitEnv",
    "check_disk",
    "default_root",
    "exporter_env",
    "get_envs",
    "provision",
]

ENVS_ENV = "PYTEST_RKNN_ENVS"
ENV_DISK_BYTES = 2 << 30
BUILD_TIMEOUT = 1800.0
SMOKE_TIMEOUT = 180.0


class EnvError(RuntimeError):
    """Provisioning cannot start (e.g. no disk space); the message names the fix."""


def default_root() -> Path:
    """``$PYTEST_RKNN_ENVS``, else the user cache directory's ``pytest-rknn/envs``."""
    configured = os.environ.get(ENVS_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("pytest-rknn")) / "envs"


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
            stat = self.request.wheel.stat() if self.request.wheel.is_file() else None
            recipe["wheel"] = [str(self.request.wheel), stat.st_size if stat else None]
        return recipe

    def hint(self, rebuild: bool = False) -> str:
        flag = " --rebuild" if rebuild else ""
        return f"run `pytest-rknn envs{flag} --toolkits {self.request}`"

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
        if wheel is None:
            report("downloading rknn-toolkit2")
            wheel = pip_download(
                self.python, f"{DIST}=={self.version}", self.root / "wheels", log, self.pip_log
            )
        requirements = derive_requirements(self.version, wheel_metadata(wheel))
        report("installing rknn-toolkit2")
        self.pip_install(["--no-deps", str(wheel)], log, "pip install rknn-toolkit2")
        report("installing requirements")
        self.pip_install(
            [*requirements, *self.torch.pip_args()], log, "pip install requirements", report
        )
        info = self.check_packages(report, (DIST, *self.shown_packages, "numpy"))
        return requirements, info

    def _smoke(self, workdir: Path) -> dict[str, Any]:
        from pytest_rknn.smoke import smoke_convert

        result = smoke_convert(self.python, workdir, timeout=SMOKE_TIMEOUT, version=self.version)
        return {"ok": result.ok, "detail": result.detail, "seconds": result.seconds}


def _local_versions() -> dict[str, str]:
    import importlib.metadata

    versions = {}
    for name in (DIST, *ToolkitEnv.shown_packages, "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def check_disk(root: Path, count: int) -> None:
    """Raise :class:`EnvError` unless ``root``'s disk has room for ``count`` environments."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = count * ENV_DISK_BYTES
    if free < need:
        raise EnvError(
            f"not enough disk space under {root}: {free / 2**30:.1f} GB free, about "
            f"{need / 2**30:.0f} GB needed for {count} environment(s); free some space "
            f"or point --rknn-envs / {ENVS_ENV} at another disk"
        )


def exporter_env(root: Path | str | None = None, torch: TorchSpec | None = None) -> ExporterEnv:
    """The exporter environment under ``root`` (default :func:`default_root`), verified.

    Verifying reads only its marker; build it with ``provision(..., exporter=True)`` (or
    ``pytest-rknn envs``). Use ``.python`` as ``PYTEST_RKNN_TORCH_PYTHON`` when ``.usable``.
    """
    env = ExporterEnv(Path(root).expanduser() if root else default_root(), torch)
    env.verify()
    return env


def _make_envs(
    requests: Sequence[ToolkitRequest],
    root: Path | str | None,
    torch: TorchSpec | None,
    exporter: bool,
) -> list[ManagedEnv]:
    root_path = Path(root).expanduser() if root else default_root()
    torch = torch or TorchSpec.resolve()
    envs: list[ManagedEnv] = [ToolkitEnv(request, root_path, torch) for request in requests]
    if exporter:
        envs.append(ExporterEnv(root_path, torch))
    for env in envs:
        env.verify()
    return envs


def provision(
    requests: Sequence[ToolkitRequest],
    root: Path | str | None = None,
    jobs: int | None = None,
    rebuild: bool = False,
    console: Console | None = None,
    torch: TorchSpec | None = None,
    exporter: bool = False,
) -> list[ManagedEnv]:
    """Verify every requested environment and build the missing or broken ones in parallel.

    Returns the :class:`ToolkitEnv` of each request in order, then, with ``exporter``, the
    :class:`ExporterEnv` (``kind == "exporter"``). Good environments cost a marker read. A
    build that fails leaves that environment in state ``failed`` with its reason; the others
    are still built.
    """
    envs = _make_envs(requests, root, torch, exporter)
    todo = [env for env in envs if rebuild or env.state in REBUILT_AUTOMATICALLY]
    if not todo:
        return envs
    root_path = envs[0].root
    (root_path / ".locks").mkdir(parents=True, exist_ok=True)
    check_disk(root_path, sum(1 for env in todo if env.builds_venv))
    console = console or Console(stderr=True)
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[env]:<8}"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        tasks = {id(env): progress.add_task("queued", total=1, env=env.label) for env in todo}

        def build(env: ManagedEnv) -> None:
            task = tasks[id(env)]

            def phase(text: str) -> None:
                progress.update(task, description=text[:70])
                if not console.is_terminal and not text.startswith("installing: "):
                    console.print(f"{env.label}: {text}", soft_wrap=True)

            _build_locked(env, rebuild, phase)
            final = "ok" if env.usable else f"[red]{env.state.value}[/]"
            progress.update(task, description=final, completed=1)
            if not console.is_terminal:
                console.print(
                    f"{env.label}: {env.state.value} {env.reason}".rstrip(), soft_wrap=True
                )

        workers = max(1, min(jobs or 4, len(todo)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rknn-env") as pool:
            list(pool.map(build, todo))
    return envs


def _build_locked(env: ManagedEnv, rebuild: bool, phase: Phase) -> None:
    lock = FileLock(env.lock_path)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            phase("waiting for another process building it")
            lock.acquire(timeout=BUILD_TIMEOUT)
        try:
            if not rebuild and env.verify() not in REBUILT_AUTOMATICALLY:
                return
            env.create(phase)
        finally:
            lock.release()
    except Timeout:
        env.fail(f"another process held {env.lock_path} for too long")
    except Exception as exc:  # one env's surprise must not stop the others
        env.fail(f"{type(exc).__name__}: {exc} (log: {env.log_path})")


def get_envs(
    requests: Sequence[ToolkitRequest],
    root: Path | str | None = None,
    create: bool = True,
    console: Console | None = None,
    torch: TorchSpec | None = None,
    exporter: bool = False,
) -> list[ManagedEnv]:
    """The environments for ``requests`` (and the exporter's, last, with ``exporter``):
    provisioned if ``create``, else only verified."""
    if create:
        return provision(requests, root=root, console=console, torch=torch, exporter=exporter)
    return _make_envs(requests, root, torch, exporter)
