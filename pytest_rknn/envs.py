"""Toolkit environments: one virtual environment per rknn-toolkit2 version, under a cache root.

Owns :class:`ToolkitEnv` (create, verify, describe one environment), :func:`provision` (build
the missing ones in parallel with progress, one file lock per environment) and
:func:`get_envs` (the plugin's entry point). A successful build ends with a smoke conversion and
a marker file; checking an environment afterwards only reads that marker and stats a few paths,
so it never imports the toolkit or runs pip.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import platformdirs
from filelock import FileLock, Timeout
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pytest_rknn.pipsteps import BuildError, inspect_packages, pip_download, run_logged
from pytest_rknn.toolkits import (
    DIST,
    ToolkitRequest,
    TorchSpec,
    derive_requirements,
    recipe_entry,
    wheel_metadata,
)

ENVS_ENV = "PYTEST_RKNN_ENVS"
MARKER = "pytest-rknn-env.json"
RECIPE_SCHEMA = 1
ENV_DISK_BYTES = 2 << 30
BUILD_TIMEOUT = 1800.0
SMOKE_TIMEOUT = 180.0
SHOWN_PACKAGES = ("torch", "onnx", "onnxruntime")
_SMOKE_LOCK = threading.Lock()


class EnvState(str, Enum):
    """Where an environment stands: usable only when ``ok``."""

    OK = "ok"
    MISSING = "missing"
    INCOMPLETE = "incomplete"
    STALE = "stale"
    BROKEN = "broken"
    UNVERIFIED = "unverified"
    SMOKE_FAILED = "smoke-failed"
    FAILED = "failed"


# States provision() repairs on its own; the others need `--rebuild` (rebuilding would only
# repeat the same failure).
REBUILT_AUTOMATICALLY = frozenset(
    {EnvState.MISSING, EnvState.INCOMPLETE, EnvState.STALE, EnvState.BROKEN, EnvState.UNVERIFIED}
)


class EnvError(RuntimeError):
    """Provisioning cannot start (e.g. no disk space); the message names the fix."""


def default_root() -> Path:
    """``$PYTEST_RKNN_ENVS``, else the user cache directory's ``pytest-rknn/envs``."""
    configured = os.environ.get(ENVS_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("pytest-rknn")) / "envs"


def _py_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


class ToolkitEnv:
    """One toolkit version's environment: where it lives, whether it works, how to build it."""

    def __init__(self, request: ToolkitRequest, root: Path, torch: TorchSpec | None = None):
        self.request = request
        self.root = Path(root)
        self.torch = torch or TorchSpec.resolve()
        self.state = EnvState.MISSING
        self.reason = ""
        self.marker: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"ToolkitEnv({self.request}, state={self.state.value}, path={self.path})"

    @property
    def version(self) -> str:
        return self.request.version

    @property
    def name(self) -> str:
        if self.request.installed:
            digest = hashlib.sha256(sys.executable.encode()).hexdigest()[:10]
            return f"installed-{self.version}-{digest}"
        return f"rknn-{self.version}-{_py_tag()}"

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
        return self.path / MARKER

    @property
    def log_path(self) -> Path:
        return self.root / "logs" / f"{self.name}.log"

    @property
    def lock_path(self) -> Path:
        return self.root / ".locks" / f"{self.name}.lock"

    @property
    def usable(self) -> bool:
        return self.state is EnvState.OK

    def recipe(self) -> dict[str, Any]:
        """Everything that decides this environment's contents."""
        recipe: dict[str, Any] = {
            "schema": RECIPE_SCHEMA,
            "toolkit": self.version,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
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

    def recipe_hash(self) -> str:
        text = json.dumps(self.recipe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _hint(self, rebuild: bool = False) -> str:
        flag = " --rebuild" if rebuild else ""
        return f"run `pytest-rknn envs{flag} --toolkits {self.request}`"

    def _set(self, state: EnvState, reason: str = "") -> EnvState:
        self.state, self.reason = state, reason
        return state

    def _read_marker(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.marker_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def verify(self) -> EnvState:
        """Check the environment from its marker and a few file stats; no import, no pip."""
        if self.request.installed:
            return self._verify_installed()
        if not self.path.exists():
            return self._set(EnvState.MISSING, f"not created yet; {self._hint()}")
        marker = self._read_marker()
        self.marker = marker or {}
        if marker is None:
            return self._set(
                EnvState.INCOMPLETE, f"creation did not finish (interrupted?); {self._hint()}"
            )
        if marker.get("recipe_hash") != self.recipe_hash():
            return self._set(
                EnvState.STALE,
                f"built by another recipe (torch, pins, wheel or Python changed); {self._hint()}",
            )
        if not self.python.exists():
            return self._set(
                EnvState.BROKEN, f"its interpreter {self.python} is gone; {self._hint(True)}"
            )
        for name, meta in marker.get("dist_info", {}).items():
            if not (self.path / meta).is_file():
                return self._set(
                    EnvState.BROKEN, f"{name} is no longer installed in it; {self._hint(True)}"
                )
        return self._verify_smoke(marker)

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
            return self._set(EnvState.UNVERIFIED, f"not smoke-tested yet; {self._hint()}")
        return self._verify_smoke(marker)

    def _verify_smoke(self, marker: dict[str, Any]) -> EnvState:
        smoke = marker.get("smoke") or {}
        if not smoke.get("ok"):
            detail = smoke.get("detail", "no result")
            return self._set(
                EnvState.SMOKE_FAILED,
                f"smoke conversion failed: {detail}; {self._hint(True)}",
            )
        return self._set(EnvState.OK)

    def describe(self) -> dict[str, Any]:
        """Version, interpreter, key package versions and state, from the marker."""
        packages = self.marker.get("packages", {})
        if self.request.installed and not packages:
            packages = _local_versions()
        row: dict[str, Any] = {
            "version": self.version,
            "source": self.request.source,
            "interpreter": str(self.python),
        }
        for name in SHOWN_PACKAGES:
            row[name] = packages.get(name, "-")
        row.update(
            state=self.state.value,
            reason=self.reason,
            path=str(self.path),
            smoke=self.marker.get("smoke"),
            build_seconds=self.marker.get("build_seconds"),
        )
        return row

    def create(self, on_phase: Callable[[str], None] | None = None) -> EnvState:
        """Build the environment afresh (installed: only smoke-test it); sets state and reason."""
        report = on_phase or (lambda _text: None)
        start = time.perf_counter()
        self.marker = {}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.log_path.open("w") as log:
                if self.request.installed:
                    info = {"packages": _local_versions(), "dist_info": {}}
                    requirements: list[str] = []
                else:
                    requirements, info = self._install(log, report)
                smoke = self._smoke(report)
        except BuildError as exc:
            return self._set(EnvState.FAILED, f"{exc} (log: {self.log_path})")
        marker = {
            "recipe_hash": self.recipe_hash(),
            "recipe": self.recipe(),
            "toolkit": self.version,
            "interpreter": str(self.python),
            "requirements": requirements,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(time.perf_counter() - start, 1),
            "smoke": smoke,
            **info,
        }
        self.marker_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.marker_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(marker, indent=2))
        tmp.replace(self.marker_path)
        self.marker = marker
        return self._verify_smoke(marker)

    def _install(self, log: Any, report: Callable[[str], None]) -> tuple[list[str], dict]:
        if self.path.exists():
            report("removing the old environment")
            shutil.rmtree(self.path)
        report("creating venv")
        run_logged([sys.executable, "-m", "venv", str(self.path)], log, "python -m venv")
        pip_log = self.log_path.with_suffix(".pip.log")
        pip_log.unlink(missing_ok=True)
        wheel = self.request.wheel
        if wheel is None:
            report("downloading rknn-toolkit2")
            wheel = pip_download(
                self.python, f"{DIST}=={self.version}", self.root / "wheels", log, pip_log
            )
        requirements = derive_requirements(self.version, wheel_metadata(wheel))
        pip = [str(self.python), "-m", "pip", "--log", str(pip_log), "--no-input", "install"]
        pip += ["--progress-bar", "off"]
        report("installing rknn-toolkit2")
        run_logged([*pip, "--no-deps", str(wheel)], log, "pip install rknn-toolkit2")
        report("installing requirements")
        run_logged(
            [*pip, *requirements, *self.torch.pip_args()],
            log,
            "pip install requirements",
            on_line=lambda line: report(f"installing: {line}"),
            pip_log=pip_log,
        )
        pip_log.unlink(missing_ok=True)
        report("checking packages")
        info = inspect_packages(self.python, self.path, (DIST, *SHOWN_PACKAGES, "numpy"))
        if DIST not in info["packages"]:
            raise BuildError(f"{DIST} is not installed in {self.path} after pip install")
        return requirements, info

    def _smoke(self, report: Callable[[str], None]) -> dict[str, Any]:
        from pytest_rknn.smoke import smoke_convert

        report("waiting to run the smoke conversion")
        workdir = self.root / "tmp"
        workdir.mkdir(parents=True, exist_ok=True)
        with _SMOKE_LOCK, FileLock(self.root / ".locks" / "smoke.lock"):
            report("smoke conversion")
            start = time.perf_counter()
            try:
                result = smoke_convert(
                    self.python, workdir, timeout=SMOKE_TIMEOUT, version=str(self.request)
                )
            except Exception as exc:  # the smoke's own failure is the environment's verdict
                seconds = round(time.perf_counter() - start, 2)
                return {"ok": False, "detail": f"{type(exc).__name__}: {exc}", "seconds": seconds}
        return {"ok": result.ok, "detail": result.detail, "seconds": result.seconds}


def _local_versions() -> dict[str, str]:
    import importlib.metadata

    versions = {}
    for name in (DIST, *SHOWN_PACKAGES, "numpy"):
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
            f"{need / 2**30:.0f} GB needed for {count} toolkit environment(s); free some space "
            f"or point --rknn-envs / {ENVS_ENV} at another disk"
        )


def _make_envs(
    requests: Sequence[ToolkitRequest], root: Path | str | None, torch: TorchSpec | None
) -> list[ToolkitEnv]:
    root_path = Path(root).expanduser() if root else default_root()
    torch = torch or TorchSpec.resolve()
    envs = [ToolkitEnv(request, root_path, torch) for request in requests]
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
) -> list[ToolkitEnv]:
    """Verify every requested environment and build the missing or broken ones in parallel.

    Good environments cost a marker read. A build that fails leaves that environment in state
    ``failed`` with its reason; the others are still built.
    """
    envs = _make_envs(requests, root, torch)
    todo = [env for env in envs if rebuild or env.state in REBUILT_AUTOMATICALLY]
    if not todo:
        return envs
    root_path = envs[0].root
    (root_path / ".locks").mkdir(parents=True, exist_ok=True)
    check_disk(root_path, sum(1 for env in todo if not env.request.installed))
    console = console or Console(stderr=True)
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[env]:<8}"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        tasks = {id(env): progress.add_task("queued", total=1, env=env.version) for env in todo}

        def build(env: ToolkitEnv) -> None:
            task = tasks[id(env)]

            def phase(text: str) -> None:
                progress.update(task, description=text[:70])
                if not console.is_terminal and not text.startswith("installing: "):
                    console.print(f"{env.version}: {text}", soft_wrap=True)

            _build_locked(env, rebuild, phase)
            final = "ok" if env.usable else f"[red]{env.state.value}[/]"
            progress.update(task, description=final, completed=1)
            if not console.is_terminal:
                console.print(
                    f"{env.version}: {env.state.value} {env.reason}".rstrip(), soft_wrap=True
                )

        workers = max(1, min(jobs or 4, len(todo)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rknn-env") as pool:
            list(pool.map(build, todo))
    return envs


def _build_locked(env: ToolkitEnv, rebuild: bool, phase: Callable[[str], None]) -> None:
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
        env._set(EnvState.FAILED, f"another process held {env.lock_path} for too long")
    except Exception as exc:  # one env's surprise must not stop the others
        env._set(EnvState.FAILED, f"{type(exc).__name__}: {exc} (log: {env.log_path})")


def get_envs(
    requests: Sequence[ToolkitRequest],
    root: Path | str | None = None,
    create: bool = True,
    console: Console | None = None,
    torch: TorchSpec | None = None,
) -> list[ToolkitEnv]:
    """The environments for ``requests``: provisioned if ``create``, else only verified."""
    if create:
        return provision(requests, root=root, console=console, torch=torch)
    return _make_envs(requests, root, torch)
