"""What every managed environment shares: its states, its marker, and the build steps.

Owns :class:`EnvState`, and :class:`ManagedEnv`, the base of the toolkit environments
(:class:`~pytest_rknn.envs.toolkit.ToolkitEnv`) and the exporter environment
(:class:`~pytest_rknn.envs.exporter.ExporterEnv`): where one lives under the cache root, its
recipe hash, the marker file a successful build ends with, the fast marker-only
:meth:`~ManagedEnv.verify`, :meth:`~ManagedEnv.describe`, and :meth:`~ManagedEnv.create`
(fresh venv and install by the chosen :mod:`~pytest_rknn.envs.installers` installer, uv with
pip as the fallback; package check; smoke run in one of two machine-wide smoke slots). A subclass
says what goes into its recipe, what it installs and what its smoke run proves. The smoke run is
the environment's job in small, so it also leaves the bytecode of what that job imports (the
workers and export batches write theirs): the first run after a build does not compile torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import IO, Any, ClassVar

import platformdirs

from pytest_rknn.envs.in_use import use_lock_path
from pytest_rknn.envs.install import BuildError, inspect_packages
from pytest_rknn.envs.installers import Installer, PipInstaller, UvInstaller, choose_installer
from pytest_rknn.envs.recipes import TorchSpec
from pytest_rknn.envs.record_check import damaged
from pytest_rknn.envs.slots import smoke_slot

MARKER = "pytest-rknn-env.json"
ENVS_ENV = "PYTEST_RKNN_ENVS"
RECIPE_SCHEMA = 1
Phase = Callable[[str], None]


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


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str | None:
    """The sha256 of a file's content (remembered per path, size and mtime), None if absent."""
    try:
        stat = Path(path).stat()
        return _sha256(str(path), stat.st_size, stat.st_mtime_ns)
    except OSError:
        return None


def default_root() -> Path:
    """``$PYTEST_RKNN_ENVS``, else the user cache directory's ``pytest-rknn/envs``."""
    configured = os.environ.get(ENVS_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return user_root()


def user_root() -> Path:
    """The user cache directory's ``pytest-rknn/envs``: where environments go by default."""
    return Path(platformdirs.user_cache_dir("pytest-rknn")) / "envs"


def py_tag() -> str:
    """``cp311`` for CPython 3.11: part of every environment's folder name."""
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


class ManagedEnv:
    """One virtual environment under the cache root that the suite builds, checks and lists."""

    kind: ClassVar[str] = ""
    shown_packages: ClassVar[tuple[str, ...]] = ()
    smoke_name: ClassVar[str] = "smoke run"
    stale_causes: ClassVar[str] = "torch, pins or Python changed"

    def __init__(self, root: Path, torch: TorchSpec | None = None):
        self.root = Path(root)
        self.torch = torch or TorchSpec.resolve()
        self.state = EnvState.MISSING
        self.reason = ""
        self.marker: dict[str, Any] = {}
        self.installer: Installer | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label}, state={self.state.value}, path={self.path})"

    @property
    def label(self) -> str:
        """Short name in progress lines and tables (a toolkit version, or ``exporter``)."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        """Folder name under the root; also names its log and lock files."""
        raise NotImplementedError

    @property
    def path(self) -> Path:
        return self.root / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def marker_path(self) -> Path:
        return self.path / MARKER

    @property
    def log_path(self) -> Path:
        return self.root / "logs" / f"{self.name}.log"

    @property
    def lock_path(self) -> Path:
        return self.root / ".locks" / f"{self.name}.lock"

    @property
    def use_path(self) -> Path:
        """The lock a run holds shared while it uses this environment (see ``in_use``)."""
        return use_lock_path(self.root / ".locks", self.name)

    @property
    def usable(self) -> bool:
        return self.state is EnvState.OK

    @property
    def builds_venv(self) -> bool:
        """Whether building it makes a venv (and so needs disk space)."""
        return True

    def recipe(self) -> dict[str, Any]:
        """Everything that decides this environment's contents."""
        raise NotImplementedError

    def recipe_hash(self) -> str:
        text = json.dumps(self.recipe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def hint(self, rebuild: bool = False) -> str:
        """The command that builds (or with ``rebuild``, rebuilds) this environment."""
        raise NotImplementedError

    def root_flag(self) -> str:
        """`` --rknn-envs DIR`` unless ``pytest-rknn envs`` would use this folder by itself."""
        if self.root.expanduser().absolute() == default_root().absolute():
            return ""
        return f" --rknn-envs {self.root}"

    def identity(self) -> dict[str, Any]:
        """What tells this built environment apart from any other: its recipe, where it is,
        when it was built and what got installed (from the marker; :meth:`verify` first)."""
        return {
            "kind": self.kind,
            "label": self.label,
            "recipe": self.recipe_hash(),
            "interpreter": str(self.python),
            "created": self.marker.get("created"),
            "installer": self.marker.get("installer", "pip"),
            "packages": self.marker.get("packages", {}),
        }

    def _set(self, state: EnvState, reason: str = "") -> EnvState:
        self.state, self.reason = state, reason
        return state

    def fail(self, reason: str) -> EnvState:
        """Record a build that could not run at all (lock timeout, unexpected error)."""
        return self._set(EnvState.FAILED, reason)

    def _read_marker(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.marker_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def verify(self) -> EnvState:
        """Check the environment from its marker and a few file stats; no import, no pip."""
        if not self.path.exists():
            return self._set(EnvState.MISSING, f"not created yet; {self.hint()}")
        marker = self._read_marker()
        self.marker = marker or {}
        if marker is None:
            return self._set(
                EnvState.INCOMPLETE, f"creation did not finish (interrupted?); {self.hint()}"
            )
        if marker.get("recipe_hash") != self.recipe_hash():
            return self._set(
                EnvState.STALE, f"built by another recipe ({self.stale_causes}); {self.hint()}"
            )
        if not self.python.exists():
            return self._set(
                EnvState.BROKEN, f"its interpreter {self.python} is gone; {self.hint(True)}"
            )
        for name, meta in marker.get("dist_info", {}).items():
            if not (self.path / meta).is_file():
                return self._set(
                    EnvState.BROKEN, f"{name} is no longer installed in it; {self.hint(True)}"
                )
        return self._verify_smoke(marker)

    def _verify_smoke(self, marker: dict[str, Any]) -> EnvState:
        smoke = marker.get("smoke") or {}
        if not smoke.get("ok"):
            detail = smoke.get("detail", "no result")
            return self._set(
                EnvState.SMOKE_FAILED, f"{self.smoke_name} failed: {detail}; {self.hint(True)}"
            )
        return self._set(EnvState.OK)

    def _packages(self) -> dict[str, str]:
        return self.marker.get("packages", {})

    def describe(self) -> dict[str, Any]:
        """Kind, label, interpreter, key package versions and state, from the marker."""
        packages = self._packages()
        row: dict[str, Any] = {
            "kind": self.kind,
            "version": self.label,
            "source": self._source(),
            "interpreter": str(self.python),
        }
        for name in self.shown_packages:
            row[name] = packages.get(name, "-")
        row.update(
            state=self.state.value,
            reason=self.reason,
            path=str(self.path),
            smoke=self.marker.get("smoke"),
            build_seconds=self.marker.get("build_seconds"),
            installer=self.marker.get("installer"),
        )
        return row

    def _source(self) -> str:
        return "registry"

    def create(self, on_phase: Phase | None = None) -> EnvState:
        """Build the environment afresh and smoke-test it; sets state and reason."""
        report = on_phase or (lambda _text: None)
        start = time.perf_counter()
        self.marker = {}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.log_path.open("w") as log:
                requirements, info = self._install_with_fallback(log, report)
                if self._cache_damaged(log, report):
                    requirements, info = self._install_with_fallback(log, report)
                    self._cache_damaged(log, report, again=True)
                smoke = self.smoke_test(report)
        except BuildError as exc:
            return self._set(EnvState.FAILED, f"{exc} (log: {self.log_path})")
        marker = {
            "recipe_hash": self.recipe_hash(),
            "recipe": self.recipe(),
            "kind": self.kind,
            **self._marker_fields(),
            "interpreter": str(self.python),
            "requirements": requirements,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(time.perf_counter() - start, 1),
            "installer": self.installer.describe()
            if self.builds_venv and self.installer
            else "none",
            "smoke": smoke,
            **info,
        }
        self.marker_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.marker_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(marker, indent=2))
        tmp.replace(self.marker_path)
        self.marker = marker
        return self._verify_smoke(marker)

    def _marker_fields(self) -> dict[str, Any]:
        return {}

    def _cache_damaged(self, log: IO[str], report: Phase, again: bool = False) -> bool:
        """Whether files installed from uv's hard-linked cache differ from their RECORD (one
        was edited in place in some environment, so in the cache too); if so, those
        distributions are cleaned from the cache, for the caller to install again. ``again``:
        it happened after a clean install, a ``BuildError`` naming the cure."""
        installer = self.installer
        if not (self.builds_venv and isinstance(installer, UvInstaller)):
            return False
        report("checking installed files against their RECORD")
        found = damaged(self.path)
        if not found:
            return False
        names = sorted(found)
        shown = "; ".join(f"{name}: {', '.join(files)}" for name, files in found.items())
        cure = f"{installer.binary} cache clean --cache-dir {installer.cache} {' '.join(names)}"
        if again:
            raise BuildError(
                f"files of {', '.join(names)} still differ from their RECORD after cleaning "
                f"them from the uv cache ({shown}): remove the cache with `{cure}` or "
                f"`rm -rf {installer.cache}`, then build again"
            )
        log.write(f"\n# installed files differ from their RECORD: {shown}\n# {cure}\n")
        report(f"{', '.join(names)} edited in place in the uv cache: cleaning, reinstalling")
        installer.clean(names, log)
        return True

    def _install(self, log: IO[str], report: Phase) -> tuple[list[str], dict[str, Any]]:
        """Make the environment with :attr:`installer`; returns its requirement list and
        :func:`inspect_packages`."""
        raise NotImplementedError

    def _install_with_fallback(
        self, log: IO[str], report: Phase
    ) -> tuple[list[str], dict[str, Any]]:
        """:meth:`_install` with uv when there is one; when uv fails for any reason but a full
        disk, the whole environment again with pip (both reasons kept if pip fails too)."""
        self.installer = choose_installer(self.root)
        try:
            return self._install(log, report)
        except BuildError as exc:
            if isinstance(self.installer, PipInstaller) or exc.no_space:
                raise
            first = str(exc)
        report("uv failed; building it again with pip")
        log.write(f"\n# uv failed: {first}\n# building the environment again with pip\n")
        self.installer = PipInstaller()
        try:
            return self._install(log, report)
        except BuildError as exc:
            raise BuildError(f"{exc} (uv had failed before: {first})", exc.no_space) from None

    @property
    def pip_log(self) -> Path:
        return self.log_path.with_suffix(".pip.log")

    def fresh_venv(self, log: IO[str], report: Phase) -> None:
        """Remove what is at :attr:`path` and create an empty venv there."""
        installer = self._installer()
        if self.path.exists():
            report("removing the old environment")
            shutil.rmtree(self.path)
        report(f"creating venv ({installer.name})")
        installer.create_venv(self.path, log)
        self.pip_log.unlink(missing_ok=True)

    def _installer(self) -> Installer:
        if self.installer is None:
            self.installer = choose_installer(self.root)
        return self.installer

    def pip_install(
        self, args: Sequence[str], log: IO[str], step: str, report: Phase | None = None
    ) -> None:
        """Install ARGS into the environment with its installer (uv or pip); pip's own debug
        log goes to :attr:`pip_log` so that a failure can be read into one line."""
        self._installer().install(self.python, args, log, step, report, pip_log=self.pip_log)

    def check_packages(self, report: Phase, names: Sequence[str]) -> dict[str, Any]:
        """Versions and METADATA paths of ``names``; every one of them must be installed."""
        self.pip_log.unlink(missing_ok=True)
        report("checking packages")
        info = inspect_packages(self.python, self.path, names)
        missing = [name for name in names if name not in info["packages"]]
        if missing:
            raise BuildError(f"{', '.join(missing)} not installed in {self.path} after pip install")
        return info

    def smoke_test(self, report: Phase | None = None) -> dict[str, Any]:
        """Run the smoke test in one of the machine's :data:`SMOKE_SLOTS` (across
        processes): ``{"ok", "detail", "seconds"}``; its exception is the environment's
        verdict."""
        report = report or (lambda _text: None)
        report(f"waiting to run the {self.smoke_name}")
        workdir = self.root / "tmp"
        workdir.mkdir(parents=True, exist_ok=True)
        with smoke_slot(self.root / ".locks"):
            report(self.smoke_name)
            start = time.perf_counter()
            try:
                return self._smoke(workdir)
            except Exception as exc:
                seconds = round(time.perf_counter() - start, 2)
                return {"ok": False, "detail": f"{type(exc).__name__}: {exc}", "seconds": seconds}

    def _smoke(self, workdir: Path) -> dict[str, Any]:
        """Prove the environment does its job: ``{"ok", "detail", "seconds"}``."""
        raise NotImplementedError
