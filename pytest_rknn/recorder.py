"""The controller's matrix keeper: collects finished cells from reports and writes the matrix.

Registered as a plugin in the controlling process only (like junitxml's ``LogXML``). It holds
the lock on the matrix path for the whole run (a second run on the same path is refused), saves
the journal an earlier, killed run left there before starting its own, appends every cell that
arrives on a report to the journal (flushed and fsynced; its first line is the run's metadata),
and rewrites the matrix atomically at most once a second and at the end of the session.

A write that fails (a full disk, a folder made read-only) never stops the run and never
truncates the previous file: the cells stay in memory and in the journal, the end of the run
names the path and the free space in one line, and the exit status is non-zero. The journal is
removed only once the final matrix is written.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import socket
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pytest_rknn.pipeline.shard import shard_meta
from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.journal import (
    Journal,
    MatrixInUse,
    RunLock,
    atomic_write_text,
    free_space,
    journal_path,
)
from pytest_rknn.results.matrix import Matrix, MatrixError
from pytest_rknn.settings import Settings
from pytest_rknn.views.junit import junit_properties
from pytest_rknn.views.tally import status_line
from pytest_rknn.views.text import summary_text

WRITE_INTERVAL = 5.0
# At most this many seconds between two rewrites of the matrix per second one rewrite takes.
WRITE_SHARE = 40.0


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
        # The lock and the journal belong to the file itself, however it is named (a link,
        # ``./sub/../m.json``): two names of one matrix share one lock and one journal.
        real = Path(os.path.realpath(self.path))
        self.real = self.path if os.path.abspath(self.path) == str(real) else real
        self.journal_path = journal_path(self.real)
        self.matrix: Matrix | None = None
        self.journal: Journal | None = None
        self.envs: list[dict[str, Any]] = []
        self.started = _now()
        self.run_id = uuid.uuid4().hex
        self.clock = time.perf_counter()
        self.last_write = 0.0
        self.cost = 0.0
        self.errors: dict[Path, str] = {}
        self.notes: list[str] = []
        self.lock = RunLock(self.real, named=self.path)
        self.claimed = False
        self.refused: str | None = None
        self.quiet = False

    def claim(self) -> None:
        """Take the matrix path for this run and save what a killed earlier run left there.

        Called before the first cell runs (by the plugin, once it knows the run has cells);
        raises :class:`~pytest_rknn.results.journal.MatrixInUse` when another run holds it.
        """
        if self.claimed:
            return
        self.lock.acquire(f"pid {os.getpid()} on {socket.gethostname()}, since {self.started}")
        self.claimed = True
        if self.journal_path.exists():
            self._recover()

    def _recover(self) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        kept = self.real.with_name(f"{self.real.stem}.interrupted-{stamp}{self.real.suffix}")
        moved = kept.with_name(kept.name + ".journal")
        try:
            os.replace(self.journal_path, moved)
        except OSError as exc:
            raise pytest.UsageError(
                f"the journal {self.journal_path} of an interrupted run cannot be moved aside "
                f"({exc.strerror}): merge it (`pytest-rknn merge {self.journal_path} -o "
                f"{kept}`), then run again"
            ) from None
        try:
            recovered = Matrix.from_journal(moved)
            recovered.write(kept)
        except (OSError, MatrixError) as exc:
            self.note(
                f"an interrupted run's journal was kept as {moved} ({exc}); "
                f"`pytest-rknn merge {moved} -o {kept}` rebuilds its matrix"
            )
            return
        moved.unlink(missing_ok=True)
        self.note(f"recovered {len(recovered)} cells of an interrupted run into {kept}")

    def note(self, text: str) -> None:
        """Say it now (and again at the end of the run)."""
        self.notes.append(text)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"pytest-rknn: {text}")

    @property
    def count(self) -> int:
        return len(self.matrix) if self.matrix is not None else 0

    def meta(self) -> dict[str, Any]:
        s = self.settings
        return {
            "pytest_rknn": _version(),
            "toolkits": list(s.toolkit_names),
            "toolkit_envs": self.envs,
            "platforms": list(s.platforms),
            "quant": list(s.quant),
            "calibration": s.calibration,
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
            "args": list(self.config.invocation_params.args),
            "started": self.started,
            "run_id": self.run_id,
            **({"shard": shard_meta(s)} if s.shard else {}),
        }

    def describe_envs(self, envs: list[dict[str, Any]]) -> None:
        self.envs = envs
        if self.matrix is not None:
            self.matrix.meta["toolkit_envs"] = self.envs

    def _failed(self, path: Path, exc: OSError | MatrixError) -> None:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self.errors[path] = f"{why} ({free_space(path)})"

    def _to_cache_folder(self) -> None:
        """A run whose only cells are the ``rknn`` fixture's, with no option asking for a
        matrix file: the matrix goes to pytest's cache folder (``.pytest_cache/d/rknn``), not
        into the project, and the run prints no matrix section."""
        cache = getattr(self.config, "cache", None)
        if cache is not None:
            folder = Path(cache.mkdir("rknn"))
        else:  # -p no:cacheprovider
            factory = self.config._tmp_path_factory  # type: ignore[attr-defined]
            folder = factory.getbasetemp()
        self.path = folder / self.path.name
        self.journal_path = journal_path(self.path)
        self.lock = RunLock(self.path)
        self.quiet = True

    def add(self, cell: CellRecord, suite: bool = True) -> None:
        """Keep ``cell``; ``suite``: it is a matrix cell (not an ``rknn`` fixture's)."""
        fresh = not self.claimed and self.refused is None and self.matrix is None
        if fresh and not suite and not self.settings.matrix_asked:
            self._to_cache_folder()
        if not self.claimed and self.refused is None:
            try:
                self.claim()
            except (MatrixInUse, pytest.UsageError) as exc:
                self.refused = str(exc)
                self.errors[self.path] = f"not written: {exc}"
        if self.matrix is None:
            self.matrix = Matrix(meta=self.meta())
            try:
                if self.refused is None:
                    self.journal = Journal(self.journal_path, meta=self.matrix.meta)
            except OSError as exc:
                self._failed(self.journal_path, exc)
        self.matrix.add(cell)
        if self.journal is not None:
            try:
                self.journal.append(cell)
                self.errors.pop(self.journal_path, None)
            except OSError as exc:
                self._failed(self.journal_path, exc)
        # The journal has every cell already: the whole matrix is rewritten at most so often
        # that writing it takes a small share of the run.
        if time.perf_counter() - self.last_write >= max(WRITE_INTERVAL, WRITE_SHARE * self.cost):
            self.write()

    def write(self, finished: bool = False, exitstatus: int | None = None) -> bool:
        """Write the matrix; False (and the error kept for the end) when it cannot be."""
        if self.matrix is None:
            return True
        meta = self.matrix.meta
        meta["wall_s"] = round(time.perf_counter() - self.clock, 3)
        meta["toolkit_s"] = self.matrix.toolkit_seconds()
        if finished:
            meta["finished"] = _now()
            meta["exitstatus"] = exitstatus
            meta["complete"] = exitstatus not in (
                pytest.ExitCode.INTERRUPTED,
                pytest.ExitCode.INTERNAL_ERROR,
            )
        self.last_write = time.perf_counter()
        if self.refused is not None:
            return False
        try:
            self.matrix.write(self.path)
            self.cost = time.perf_counter() - self.last_write
        except (OSError, MatrixError) as exc:
            self._failed(self.path, exc)
            return False
        self.errors.pop(self.path, None)
        return True

    def summary(self) -> str:
        return summary_text(self.matrix) if self.matrix is not None else ""

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Record first: an interrupt while the terminal prints the report loses no cell."""
        target = dict(report.user_properties).get("rknn_test")
        for name, value in report.user_properties:
            if name == self.prop:
                data = json.loads(value) if isinstance(value, str) else value
                cell = CellRecord.from_dict(data)
                self.add(cell, suite=target is not None)
                self._note_test(target or report.nodeid, cell)
                junit_properties(self.config, report, cell)

    def _note_test(self, target: str, cell: CellRecord) -> None:
        """Keep the test that holds the cells (``cases/test_matrix.py::test_cell``, or the
        installed suite's ``pytest_rknn.cases.test_matrix::test_cell``): the dashboard's re-run
        command names the cell's item with it."""
        if self.matrix is not None and "cell_test" not in self.matrix.meta:
            suffix = f"[{cell.id}]"
            if target.endswith(suffix):
                self.matrix.meta["cell_test"] = target[: -len(suffix)]

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        try:
            self._finish(int(exitstatus))
        finally:
            self.lock.release()
        if self.errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _finish(self, exitstatus: int) -> None:
        if self.matrix is None:
            return
        written = self.write(finished=True, exitstatus=exitstatus)
        if self.settings.html is not None:
            from pytest_rknn.views.dashboard import write_dashboard

            try:
                write_dashboard(self.matrix, self.settings.html, previous=self._baseline())
            except OSError as exc:
                self._failed(self.settings.html, exc)
        self._write_markdown()
        if self.journal is None:
            return
        try:
            self.journal.flush()
        except OSError as exc:
            self._failed(self.journal_path, exc)
        self.journal.close()
        if written:
            self.journal_path.unlink(missing_ok=True)

    def _baseline(self) -> Matrix | None:
        """The ``--rknn-baseline`` matrix (the dashboard's "what changed" compares with it)."""
        if self.settings.baseline is None:
            return None
        try:
            return Matrix.load(self.settings.baseline)
        except MatrixError:
            return None

    def _write_markdown(self) -> None:
        """``--rknn-markdown PATH``, and an appended copy in ``$GITHUB_STEP_SUMMARY`` when set."""
        from pytest_rknn.views.markdown import to_markdown

        if self.matrix is None:
            return
        text = to_markdown(self.matrix)
        if self.settings.markdown is not None:
            try:
                atomic_write_text(self.settings.markdown, text)
            except OSError as exc:
                self._failed(self.settings.markdown, exc)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            try:
                with open(summary, "a", encoding="utf-8") as handle:
                    handle.write(text + "\n")
            except OSError as exc:
                self._failed(Path(summary), exc)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for note in self.notes:
            terminalreporter.write_line(f"pytest-rknn: {note}")
        if self.count and not self.quiet:
            terminalreporter.section("rknn compatibility matrix")
            for line in self.summary().splitlines():
                terminalreporter.write_line(line)
            if self.path in self.errors:
                shown = " not written (see below)"
            elif self.matrix is not None and self.matrix.meta.get("complete") is False:
                shown = f" ({self.count} cells; incomplete: the run was interrupted)"
            else:
                shown = f" ({self.count} cells)"
            terminalreporter.write_line(f"matrix: {self.path}{shown}")
            if self.settings.html is not None and self.settings.html not in self.errors:
                terminalreporter.write_line(f"dashboard: {self.settings.html}")
            if self.settings.markdown is not None and self.settings.markdown not in self.errors:
                terminalreporter.write_line(f"markdown: {self.settings.markdown}")
        for path, why in self.errors.items():
            terminalreporter.write_line(
                f"pytest-rknn: could not write {path}: {why}; {self._keeper(path)}", red=True
            )

    @pytest.hookimpl(wrapper=True, tryfirst=True, specname="pytest_terminal_summary")
    def pytest_rknn_headline_at_the_end(self, terminalreporter: Any) -> Any:
        """After pytest's short summary (its FAILED lines, which push the matrix section out of
        sight), the matrix's headline again, as the last line before pytest's own."""
        result = yield
        if self.count and not self.quiet and self.matrix is not None:
            failing = sum(c.status.failing for c in self.matrix.cells)
            if failing and not self.config.option.no_summary:
                headline = status_line(self.matrix.cells)
                where = "" if self.path in self.errors else f"; matrix: {self.path}"
                terminalreporter.write_line(f"rknn matrix: {headline}{where}", bold=True)
        return result

    def _keeper(self, path: Path) -> str:
        """Which file holds every finished cell, now that ``path`` could not be written."""
        if path != self.path and self.path not in self.errors:
            return f"the matrix {self.path} holds every finished cell"
        journal_whole = self.journal is not None and self.journal_path not in self.errors
        if path != self.journal_path and journal_whole:
            return f"the journal {self.journal_path} keeps every finished cell"
        return "no file holds every finished cell"


def baseline_failures(path: Path) -> dict[tuple[str, str, str, str], str]:
    """Cells that failed in an earlier matrix, by key, with what they showed: findings about
    the toolkit only (failing statuses that are cached, see ``results/status.py``). A crash,
    timeout, oom, env-error or reference-error is the harness's or the host's, may not recur,
    and never becomes an expectation (a strict xfail would fail a good run)."""
    try:
        matrix = Matrix.load(path)
    except MatrixError as exc:
        raise pytest.UsageError(f"--rknn-baseline: {exc}") from None
    return {
        cell.key: f"{cell.status.value} {cell.signature or ''}".strip()
        for cell in matrix.cells
        if cell.status.failing and cell.status.cacheable
    }
