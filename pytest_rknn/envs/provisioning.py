"""Provisioning: the cache root, and building missing environments in parallel with progress.

Owns :func:`default_root`, :func:`provision` (build the missing or broken environments in
parallel, one file lock per environment, after a disk-space check; then the uv cache's path
and size, once), :func:`get_envs` (the plugin's entry point) and :func:`exporter_env`.
Checking a built environment only reads its marker and stats a few paths, so it never imports
the toolkit or torch, nor runs pip or uv.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from pytest_rknn.envs.base import (
    ENVS_ENV,
    REBUILT_AUTOMATICALLY,
    ManagedEnv,
    Phase,
    default_root,
)
from pytest_rknn.envs.exporter import ExporterEnv
from pytest_rknn.envs.in_use import EnvInUse, exclusive
from pytest_rknn.envs.install import BuildError
from pytest_rknn.envs.installers import (
    PipInstaller,
    cache_summary,
    choose_installer,
    tree_bytes,
    uv_cache,
)
from pytest_rknn.envs.recipes import ToolkitRequest, TorchSpec
from pytest_rknn.envs.toolkit import ToolkitEnv
from pytest_rknn.results.journal import free_space

if TYPE_CHECKING:  # rich is imported only when something is built
    from rich.console import Console

ENV_DISK_BYTES = 2 << 30
# With uv's shared cache, an environment after the first adds what it does not share (its
# toolkit, its onnx): about a quarter of the first.
SHARED_ENV_FRACTION = 0.25
# What an environment takes beyond the files it hard-links from the cache (venv, bytecode).
VENV_BYTES = 256 << 20
BUILD_TIMEOUT = 1800.0


class EnvError(RuntimeError):
    """Provisioning cannot start (e.g. no disk space); the message names the fix."""


def check_disk(root: Path, count: int, shared: bool = False) -> None:
    """Raise :class:`EnvError` unless ``root``'s disk has room for ``count`` environments
    (``shared``: filled from one hard-linked cache, so the later ones are smaller). What the
    cache under ``root`` already holds is not needed again (environments hard-link it): a
    retry after a build that filled the disk is not refused for the space its own cache took.
    """
    probe = root
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = count * ENV_DISK_BYTES
    if shared and count:
        need = int(ENV_DISK_BYTES * (1 + (count - 1) * SHARED_ENV_FRACTION))
    if free >= need:
        return
    cached = tree_bytes(uv_cache(root)) if shared and uv_cache(root).is_dir() else 0
    need = max(need - cached, count * VENV_BYTES)
    if free < need:
        held = f" besides the {cached / 2**30:.1f} GB its uv cache holds" if cached else ""
        raise EnvError(
            f"not enough disk space under {root}: {free / 2**30:.1f} GB free, about "
            f"{need / 2**30:.1f} GB needed for {count} environment(s){held}; free some space "
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
    rebuild: bool | Collection[str] = False,
    console: Console | None = None,
    torch: TorchSpec | None = None,
    exporter: bool = False,
) -> list[ManagedEnv]:
    """Verify every requested environment and build the missing or broken ones in parallel.

    ``rebuild``: True rebuilds every one, or name the labels to rebuild (``{"2.3.2"}``;
    ``"exporter"``). A build over an environment a running suite uses is refused (that
    environment ends ``failed`` with the reason, see :mod:`~pytest_rknn.envs.in_use`).
    Returns the :class:`ToolkitEnv` of each request in order, then, with ``exporter``, the
    :class:`ExporterEnv` (``kind == "exporter"``). Good environments cost a marker read. A
    build that fails leaves that environment in state ``failed`` with its reason; the others
    are still built.
    """
    envs = _make_envs(requests, root, torch, exporter)
    todo = [env for env in envs if _wanted(env, rebuild) or env.state in REBUILT_AUTOMATICALLY]
    if not todo:
        return envs
    root_path = envs[0].root
    try:
        (root_path / ".locks").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fix = (
            "free some space or point --rknn-envs / {} at another disk"
            if exc.errno == errno.ENOSPC
            else "point --rknn-envs / {} at a folder you can write"
        ).format(ENVS_ENV)
        raise EnvError(
            f"cannot write the environments folder {root_path} ({exc.strerror}; "
            f"{free_space(root_path)}): {fix}"
        ) from None
    try:
        shared = not isinstance(choose_installer(root_path), PipInstaller)
    except BuildError as exc:
        raise EnvError(str(exc)) from None
    check_disk(root_path, sum(1 for env in todo if env.builds_venv), shared)
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

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

        workers = max(1, min(jobs or 5, len(todo)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rknn-env") as pool:
            list(pool.map(build, todo))
    summary = cache_summary(root_path)
    if summary:
        console.print(summary, soft_wrap=True, highlight=False)
    return envs


def _wanted(env: ManagedEnv, rebuild: bool | Collection[str]) -> bool:
    """Whether ``rebuild`` (all, none, or the labels named: ``{"2.3.2", "exporter"}``) asks
    for ``env`` to be rebuilt even if it works."""
    if isinstance(rebuild, bool):
        return rebuild
    return env.label in rebuild


def _build_locked(env: ManagedEnv, rebuild: bool | Collection[str], phase: Phase) -> None:
    lock = FileLock(env.lock_path)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            phase("waiting for another process building it")
            lock.acquire(timeout=BUILD_TIMEOUT)
        try:
            if not _wanted(env, rebuild) and env.verify() not in REBUILT_AUTOMATICALLY:
                return
            with exclusive(env.use_path, env.label, env.path):
                env.create(phase)
        finally:
            lock.release()
    except Timeout:
        env.fail(f"another process held {env.lock_path} for too long")
    except EnvInUse as exc:
        env.fail(str(exc))
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
