"""The controller's matrix keeper: collects finished cells from reports and writes the matrix.

Registered as a plugin in the controlling process only (like junitxml's ``LogXML``). Every cell
that arrives on a report is appended to a journal beside the matrix (flushed and fsynced), and
the matrix itself is rewritten atomically at most once a second and at the end of the session,
so an interrupted run still leaves a valid matrix holding exactly the cells that finished.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pytest_rknn.matrix import Cell, Journal, Matrix, MatrixError, summary_text
from pytest_rknn.settings import Settings

WRITE_INTERVAL = 1.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-rknn")
    except PackageNotFoundError:
        return "unknown"


class Recorder:
    """Keeps the run's matrix in the controlling pytest process."""

    def __init__(self, config: pytest.Config, settings: Settings, prop: str) -> None:
        self.config = config
        self.settings = settings
        self.prop = prop
        self.path = Path(settings.matrix)
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self.matrix: Matrix | None = None
        self.journal: Journal | None = None
        self.envs: list[dict[str, Any]] = []
        self.started = _now()
        self.clock = time.perf_counter()
        self.last_write = 0.0
        self.dirty = False

    @property
    def count(self) -> int:
        return len(self.matrix.cells) if self.matrix is not None else 0

    def meta(self) -> dict[str, Any]:
        s = self.settings
        return {
            "pytest_rknn": _version(),
            "toolkits": list(s.toolkit_names),
            "toolkit_envs": self.envs,
            "platforms": list(s.platforms),
            "quant": list(s.quant),
            "seed": s.seed,
            "profile": s.profile,
            "examples": s.examples,
            "limits": {"timeout_s": s.limits.timeout, "max_memory_bytes": s.limits.max_memory},
            "host": {
                "name": socket.gethostname(),
                "user": getpass.getuser(),
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "system": platform.platform(),
                "cpus": os.cpu_count(),
            },
            "command": " ".join(["pytest", *self.config.invocation_params.args]),
            "started": self.started,
        }

    def describe_envs(self, envs: list[Any]) -> None:
        self.envs = [env.describe() for env in envs]
        if self.matrix is not None:
            self.matrix.meta["toolkit_envs"] = self.envs

    def add(self, record: dict[str, Any]) -> None:
        if self.matrix is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.matrix = Matrix(meta=self.meta())
            self.journal_path.unlink(missing_ok=True)
            self.journal = Journal(self.journal_path)
        cell = Cell.from_dict(record)
        assert self.journal is not None
        self.journal.append(cell)
        self.matrix.add(cell)
        self.dirty = True
        if time.perf_counter() - self.last_write >= WRITE_INTERVAL:
            self.write()

    def write(self, finished: bool = False, exitstatus: int | None = None) -> None:
        if self.matrix is None:
            return
        meta = self.matrix.meta
        meta["wall_s"] = round(time.perf_counter() - self.clock, 3)
        meta["toolkit_s"] = round(
            sum(float(c.timings.get("wall", 0) or 0) for c in self.matrix.cells if not c.cached), 3
        )
        if finished:
            meta["finished"] = _now()
            meta["exitstatus"] = exitstatus
            meta["complete"] = exitstatus not in (
                pytest.ExitCode.INTERRUPTED,
                pytest.ExitCode.INTERNAL_ERROR,
            )
        self.matrix.write(self.path)
        self.last_write = time.perf_counter()
        self.dirty = False

    def summary(self) -> str:
        return summary_text(self.matrix) if self.matrix is not None else ""

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == self.prop:
                self.add(json.loads(value) if isinstance(value, str) else value)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.matrix is None:
            return
        self.write(finished=True, exitstatus=int(exitstatus))
        if self.settings.html is not None:
            from pytest_rknn.dashboard import write_dashboard

            write_dashboard(self.matrix, self.settings.html)
        if self.journal is not None:
            self.journal.close()
        self.journal_path.unlink(missing_ok=True)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.count:
            return
        terminalreporter.section("rknn compatibility matrix")
        for line in self.summary().splitlines():
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"matrix: {self.path} ({self.count} cells)")
        if self.settings.html is not None:
            terminalreporter.write_line(f"dashboard: {self.settings.html}")


def baseline_failures(path: Path) -> dict[tuple[str, str, str, str], str]:
    """Cells that did not pass in an earlier matrix, by key, with what they showed."""
    try:
        matrix = Matrix.load(path)
    except MatrixError as exc:
        raise pytest.UsageError(f"--rknn-baseline: {exc}") from None
    failing = {}
    for cell in matrix.cells:
        if cell.status not in ("pass", "unsupported"):
            failing[cell.key] = f"{cell.status} {cell.signature or ''}".strip()
    return failing
