"""The toolkit workers of one pytest process: one per toolkit version, kept between jobs.

Owns :class:`WorkerPool`: which interpreter runs each version, its worker started on first use
or ahead of it (:meth:`WorkerPool.prestart`, so that the toolkit imports while other cells
run), one job at a time per worker, every worker stopped at the end. How one worker is spawned
and watched is :mod:`~pytest_rknn.toolkit.supervisor`'s.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pytest_rknn.toolkit.protocol import Job, JobResult, Limits
from pytest_rknn.toolkit.supervisor import ToolkitWorker, WorkerStartError


@dataclass
class WorkerPool:
    """Workers by toolkit version, started on first use (or ahead of it, :meth:`prestart`)
    and replaced after a fault. One job at a time per worker; :meth:`prestart` may be called
    from another thread than :meth:`run`."""

    workdir: Path
    limits: Limits = field(default_factory=Limits)
    workers: dict[str, ToolkitWorker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[str, threading.Lock] = {}

    def add(self, version: str, python: Path, extra_env: dict[str, str] | None = None) -> None:
        """Say which interpreter runs ``version`` (a worker starts on its first job)."""
        with self._lock:
            held = self.workers.get(version)
            if held is not None and held.python == Path(python):
                return
            busy = self._busy.setdefault(version, threading.Lock())
        with busy:
            if held is not None:
                held.stop()
            worker = ToolkitWorker(
                python=Path(python),
                version=version,
                workdir=Path(self.workdir) / "workers",
                limits=self.limits,
                extra_env=dict(extra_env or {}),
            )
            with self._lock:
                self.workers[version] = worker

    def prestart(self, version: str) -> bool:
        """Spawn ``version``'s worker now, so that its toolkit imports before its first job
        (which then only reads its ``ready``); False when it is unknown, alive or busy."""
        with self._lock:
            worker = self.workers.get(version)
            busy = self._busy.get(version)
        if worker is None or busy is None or not busy.acquire(blocking=False):
            return False
        try:
            if worker.alive:
                return False
            worker.spawn()
            return True
        except WorkerStartError:
            return False  # its first job says so, as env-error
        finally:
            busy.release()

    def starting(self) -> list[str]:
        """The versions whose worker was spawned and has not answered ``ready`` yet."""
        with self._lock:
            return [v for v, w in self.workers.items() if w.starting and w.alive]

    def run(self, version: str, job: Job) -> JobResult:
        with self._lock:
            worker = self.workers.get(version)
            busy = self._busy.get(version)
        if worker is None or busy is None:
            known = ", ".join(sorted(self.workers)) or "none"
            raise KeyError(f"no toolkit environment for {version} (have: {known})")
        with busy:
            return worker.run(job)

    def close(self) -> None:
        with self._lock:
            workers = list(self.workers.items())
            self.workers.clear()
        for version, worker in workers:
            with self._busy.get(version) or contextlib.nullcontext():
                worker.ask_exit()
        for version, worker in workers:
            with self._busy.get(version) or contextlib.nullcontext():
                worker.stop()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
