"""Who makes a venv and fills it: ``uv`` with one shared, hard-linked cache, or pip.

Owns :class:`Installer` and its two kinds, in the style of tox 4's installers:
:class:`UvInstaller` (``uv venv`` + ``uv pip install``; the cache is ``<envs root>/uv-cache``
with ``UV_LINK_MODE=hardlink``, so torch and every other wheel that several environments
share lies once on disk; pip's configured sources are passed on explicitly, see
:mod:`~pytest_rknn.envs.pipconf`) and :class:`PipInstaller` (``python -m venv`` + the
environment's own pip: the fallback when uv is absent or fails). :func:`choose_installer`
picks one (``PYTEST_RKNN_INSTALLER=auto|uv|pip``); :func:`cache_summary` says where the uv
cache is and how much it holds.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, ClassVar

from pytest_rknn.envs.install import BuildError, run_logged
from pytest_rknn.envs.pipconf import PipSources, pip_sources

INSTALLER_ENV = "PYTEST_RKNN_INSTALLER"
UV_CACHE = "uv-cache"
CHOICES = ("auto", "uv", "pip")

Phase = Callable[[str], None]


class Installer:
    """Makes an empty venv and installs requirements into it, with output in a log."""

    name: ClassVar[str] = ""

    def describe(self) -> str:
        """``uv 0.13.9`` or ``pip``: recorded in the environment's marker and identity."""
        return self.name

    def create_venv(self, path: Path, log: IO[str]) -> None:
        raise NotImplementedError

    def install(
        self,
        python: Path,
        args: Sequence[str],
        log: IO[str],
        step: str,
        report: Phase | None = None,
        pip_log: Path | None = None,
    ) -> None:
        raise NotImplementedError


class PipInstaller(Installer):
    """``python -m venv`` and the environment's own ``pip install`` (reads pip's config)."""

    name = "pip"

    def create_venv(self, path: Path, log: IO[str]) -> None:
        run_logged([sys.executable, "-m", "venv", str(path)], log, "python -m venv")

    def install(
        self,
        python: Path,
        args: Sequence[str],
        log: IO[str],
        step: str,
        report: Phase | None = None,
        pip_log: Path | None = None,
    ) -> None:
        cmd = [str(python), "-m", "pip", "--no-input"]
        if pip_log is not None:
            cmd += ["--log", str(pip_log)]
        cmd += ["install", "--progress-bar", "off", *args]
        on_line = (lambda line: report(f"installing: {line}")) if report else None
        run_logged(cmd, log, step, on_line=on_line, pip_log=pip_log, heartbeat=report)


class UvInstaller(Installer):
    """``uv venv`` and ``uv pip install`` with one cache under the environments folder."""

    name = "uv"

    def __init__(self, binary: Path, cache: Path, sources: PipSources | None = None) -> None:
        self.binary = Path(binary)
        self.cache = Path(cache)
        self.sources = sources if sources is not None else pip_sources()

    def describe(self) -> str:
        return f"uv {uv_version(str(self.binary))}"

    def environment(self) -> dict[str, str]:
        """The variables every uv call gets: the shared cache, hard links, no downloads of
        Python, and pip's certificate/proxy/timeout."""
        env = dict(os.environ)
        env.update(
            UV_CACHE_DIR=str(self.cache),
            UV_LINK_MODE="hardlink",
            UV_PYTHON_DOWNLOADS="never",
            UV_NO_PROGRESS="1",
        )
        env.update(self.sources.uv_environment())
        return env

    def clean(self, names: Sequence[str], log: IO[str]) -> None:
        """Remove ``names`` from the cache (their next install downloads them again)."""
        cmd = [str(self.binary), "cache", "clean", "--no-config", *names]
        run_logged(cmd, log, "uv cache clean", env=self.environment(), cwd=self.cache.parent)

    def create_venv(self, path: Path, log: IO[str]) -> None:
        cmd = [str(self.binary), "venv", "--no-config", "--no-project"]
        cmd += ["--python", sys.executable, str(path)]
        run_logged(cmd, log, "uv venv", env=self.environment(), cwd=path.parent)

    def install(
        self,
        python: Path,
        args: Sequence[str],
        log: IO[str],
        step: str,
        report: Phase | None = None,
        pip_log: Path | None = None,
    ) -> None:
        cmd = [str(self.binary), "pip", "install", "--no-config", "--python", str(python)]
        cmd += [*self.sources.uv_args(), *args]
        on_line = (lambda line: report(f"installing: {line}")) if report else None
        run_logged(
            cmd,
            log,
            step.replace("pip install", "uv pip install"),
            on_line=on_line,
            env=self.environment(),
            cwd=python.parent,
            heartbeat=report,
        )


@functools.lru_cache(maxsize=4)
def uv_version(binary: str) -> str:
    """``0.13.9`` for the uv binary at ``binary`` (``?`` if it does not answer)."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    parts = out.split()
    return parts[1] if len(parts) > 1 else "?"


def find_uv() -> Path | None:
    """The uv binary: the ``uv`` package's own (a dependency of pytest-rknn), else ``PATH``'s."""
    try:
        from uv import find_uv_bin

        return Path(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        return Path(found) if found else None


def installer_choice() -> str:
    """``$PYTEST_RKNN_INSTALLER`` (``auto``, ``uv`` or ``pip``), checked."""
    choice = os.environ.get(INSTALLER_ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise BuildError(
            f"{INSTALLER_ENV}={choice!r} is not one of {', '.join(CHOICES)}; unset it or pick one"
        )
    return choice


def uv_cache(root: Path) -> Path:
    """The one uv cache of all environments under ``root`` (on their filesystem, so that
    hard links work)."""
    return Path(root) / UV_CACHE


def choose_installer(root: Path) -> Installer:
    """uv when it is there (unless ``PYTEST_RKNN_INSTALLER=pip``), else pip."""
    choice = installer_choice()
    if choice == "pip":
        return PipInstaller()
    binary = find_uv()
    if binary is None:
        if choice == "uv":
            raise BuildError(
                f"{INSTALLER_ENV}=uv but no uv binary was found; `pip install uv` into "
                f"{sys.prefix} or set {INSTALLER_ENV}=pip"
            )
        return PipInstaller()
    return UvInstaller(binary, uv_cache(root))


def tree_bytes(path: Path) -> int:
    """Bytes under ``path``, each hard-linked file counted once (as ``du`` does)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                stat = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            key = (stat.st_dev, stat.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += stat.st_blocks * 512
    return total


def cache_summary(root: Path) -> str | None:
    """``uv cache: PATH (1.2 GB; environments hard-link into it)``, or None without a cache."""
    cache = uv_cache(root)
    if not cache.is_dir():
        return None
    size = tree_bytes(cache) / 2**30
    return f"uv cache: {cache} ({size:.2f} GB; the environments hard-link their files from it)"
