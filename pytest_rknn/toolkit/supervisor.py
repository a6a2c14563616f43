"""Spawning and supervising toolkit workers: one long-lived process per toolkit environment.

The host side of ``remote.py``: a :class:`ToolkitWorker` starts the worker script with an
environment's interpreter and a minimal environment (``process_tree.PASSED_ENV``), shakes hands
with it, hands it jobs over a pipe, and watches it while it works. The worker imports the
toolkit once and runs each job in a fork of itself (``fork``; ``PYTEST_RKNN_FORK=0`` runs jobs
in the worker itself): a fork that dies is that job's ``crash`` and the worker forks again for
the next one. A worker that exits, passes its memory cap or its timeout, or breaks the protocol
(see :mod:`~pytest_rknn.toolkit.protocol`) is killed with its whole process group
(:mod:`~pytest_rknn.toolkit.process_tree`); the job comes back as ``crash``, ``oom`` or
``timeout`` with the reason, and the next job gets a fresh worker. A worker that cannot even
start (the toolkit does not import) yields ``env-error``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pytest_rknn.results.status import Status
from pytest_rknn.toolkit.process_tree import (
    MemoryWatch,
    describe_exit,
    kill_tree,
    worker_env,
)
from pytest_rknn.toolkit.protocol import (
    MAX_MESSAGE_BYTES,
    MIN_MEMORY,
    PROTOCOL,
    Job,
    JobResult,
    Limits,
    ProtocolError,
    call_under_way,
    check_died,
    check_ready,
    check_result,
)

REMOTE = Path(__file__).with_name("remote.py")
LOG_HEAD = 16 * 1024
LOG_TAIL = 192 * 1024
_DEBUG_LINE = re.compile(rb"^D [^\n]*(?:\n|$)", re.MULTILINE)
"""A toolkit debug line (level ``D``): printed only when it is verbose."""


class WorkerOutOfMemory(RuntimeError):
    """A worker passed --rknn-max-memory while it imported its toolkit: the cap is too small
    for the worker, the environment is fine (its cells are ``oom``, never ``env-error``)."""


class WorkerStartError(RuntimeError):
    """The worker process did not come up: the toolkit environment is broken."""


@dataclass
class _Fault:
    status: Status
    detail: str
    death: bool = False
    """The process running the job ended by itself (not killed by this host, no protocol
    breach)."""


def read_log(path: str | Path, head: int = LOG_HEAD, tail: int = LOG_TAIL) -> str:
    """The toolkit's log for a job without its debug lines, its middle cut out when it is long.

    A verbose build's ``D`` lines (its layer and tensor tables: read from the whole file by
    :mod:`~pytest_rknn.verdict.placement`) are dropped first, so that they neither push the
    lines a person reads out of the kept head and tail nor reach the signatures.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return ""
    if b"\nD " in data or data.startswith(b"D "):
        data = _DEBUG_LINE.sub(b"", data)
    if len(data) > head + tail:
        cut = len(data) - head - tail
        data = data[:head] + f"\n[... {cut} bytes cut ...]\n".encode() + data[-tail:]
    return data.decode("utf-8", "replace").replace("\r\n", "\n")


@dataclass
class ToolkitWorker:
    """One worker process running in one toolkit environment's interpreter."""

    python: Path
    version: str
    workdir: Path
    limits: Limits = field(default_factory=Limits)
    max_jobs: int = 200
    extra_env: dict[str, str] = field(default_factory=dict)
    fork: bool = field(default_factory=lambda: os.environ.get("PYTEST_RKNN_FORK", "1") != "0")
    proc: subprocess.Popen | None = None
    info: dict[str, Any] = field(default_factory=dict)
    starts: int = 0
    jobs_done: int = 0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self._jobs_w: int | None = None
        self._results_r: int | None = None
        self._buffer = b""
        self._nonce: str | None = None
        self._spawned_at = 0.0
        self._peak = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def forking(self) -> bool:
        """Whether the running worker said, at start-up, that it runs each job in a fork."""
        return bool(self.info.get("fork"))

    @property
    def startup_log(self) -> Path:
        return self.workdir / f"worker-{self.version}-{self.starts}.log"

    @property
    def starting(self) -> bool:
        """Whether the worker was spawned and its ``ready`` is still to be read."""
        return self._nonce is not None

    def spawn(self) -> None:
        """Start the worker process and say hello, without waiting for its ``ready`` (the
        toolkit imports meanwhile); the next :meth:`start` or :meth:`run` reads it. Raises
        WorkerStartError when the process cannot even be created."""
        self.stop()
        self.info = {}
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        jobs_r, jobs_w = os.pipe()
        results_r, results_w = os.pipe()
        with open(self.startup_log, "wb") as log:
            try:
                self.proc = subprocess.Popen(
                    [str(self.python), str(REMOTE), "--jobs", str(jobs_r)]
                    + ["--results", str(results_w)],
                    pass_fds=(jobs_r, results_w),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=worker_env(self.extra_env),
                )
            except OSError as exc:
                for fd in (jobs_r, jobs_w, results_r, results_w):
                    os.close(fd)
                raise WorkerStartError(
                    f"cannot start toolkit {self.version} worker with {self.python}: {exc}; "
                    f"rebuild it with `pytest-rknn envs --rebuild --toolkits {self.version}`"
                ) from exc
        os.close(jobs_r)
        os.close(results_w)
        self._jobs_w, self._results_r, self._buffer = jobs_w, results_r, b""
        self.jobs_done = 0
        self._nonce = uuid.uuid4().hex
        self._spawned_at = time.monotonic()
        self._send({"op": "hello", "protocol": PROTOCOL, "nonce": self._nonce, "fork": self.fork})

    def start(self) -> dict[str, Any]:
        """Start the worker (unless it was spawned already) and wait for its ``ready``
        message; raise WorkerStartError if none comes within the start-up timeout (counted
        from the spawn)."""
        if not self.starting:
            self.spawn()
        nonce, self._nonce = self._nonce, None
        left = self.limits.startup_timeout - (time.monotonic() - self._spawned_at)
        message = self._await(max(left, 0.001))
        detail = None
        if isinstance(message, _Fault) and message.status is Status.OOM:
            self.kill()
            raise WorkerOutOfMemory(
                f"toolkit {self.version} worker passed --rknn-max-memory "
                f"{self.limits.max_memory >> 20}M while importing the toolkit (it needs about "
                f"{MIN_MEMORY >> 20}M at rest; measured by bench/worker_memory.py): raise "
                "--rknn-max-memory, e.g. to 8G; the environment is fine"
            )
        if isinstance(message, _Fault):
            detail = message.detail
        else:
            try:
                check_ready(message, nonce or "")
            except ProtocolError as exc:
                detail = str(exc)
            else:
                if not message.get("ok"):
                    detail = str(message.get("error"))
        if detail is not None:
            tail = read_log(self.startup_log, head=0, tail=2000).strip().splitlines()[-1:]
            self.stop()
            raise WorkerStartError(
                f"toolkit {self.version} worker failed to start ({detail}"
                + (f"; last log line: {tail[0]}" if tail else "")
                + f"); rebuild it with `pytest-rknn envs --rebuild --toolkits {self.version}`"
            )
        self.info = message
        return message

    def run(self, job: Job) -> JobResult:
        """Run one job; toolkit faults come back as statuses, never as exceptions."""
        if self.alive and not self.starting and self._out_of_sync():
            self.kill()
        if self.starting or not self.alive or self.jobs_done >= self.max_jobs:
            try:
                self.start()
            except WorkerOutOfMemory as exc:
                return JobResult(id=job.id, fault=Status.OOM, toolkit=self.version, error=str(exc))
            except WorkerStartError as exc:
                return JobResult(
                    id=job.id, fault=Status.ENV_ERROR, toolkit=self.version, error=str(exc)
                )
        Path(job.outdir).mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        self._send({"op": "job", "id": job.id, "job": job.to_wire()})
        message = self._await(self.limits.timeout)
        wall = round(time.perf_counter() - started, 6)
        log = read_log(job.log)

        def faulted(status: Status, detail: str, death: bool = False) -> JobResult:
            return JobResult(
                id=job.id,
                fault=status,
                toolkit=self.version,
                error=detail,
                timings={"wall": wall},
                peak_rss_mb=round(self._peak / 2**20, 1),
                log=log,
                log_path=job.log,
                died_in=call_under_way(job) if death else None,
            )

        if not isinstance(message, _Fault) and message.get("op") == "died" and self.forking:
            try:
                detail = check_died(message, job)
            except ProtocolError as exc:
                message = _Fault(Status.CRASH, f"protocol violation: {exc}; worker replaced")
            else:
                self.jobs_done += 1  # the fork died; the worker lives on
                return faulted(Status.CRASH, detail, death=True)
        if not isinstance(message, _Fault):
            try:
                result = check_result(message, job)
            except ProtocolError as exc:
                message = _Fault(Status.CRASH, f"protocol violation: {exc}; worker replaced")
        if isinstance(message, _Fault):
            self.kill()
            return faulted(message.status, message.detail, message.death)
        self.jobs_done += 1
        result.toolkit = self.info.get("toolkit") or self.version
        result.log = log
        result.log_path = job.log
        result.timings["wall"] = wall
        if result.peak_rss_mb is None:
            result.peak_rss_mb = round(self._peak / 2**20, 1)
        return result

    def _out_of_sync(self) -> bool:
        """Whether the worker said something nobody asked for (then it is not trusted)."""
        if self._buffer:
            return True
        assert self._results_r is not None
        return bool(select.select([self._results_r], [], [], 0)[0])

    def _send(self, message: dict[str, Any]) -> None:
        assert self._jobs_w is not None
        with contextlib.suppress(BrokenPipeError):
            os.write(self._jobs_w, (json.dumps(message) + "\n").encode())

    def _await(self, timeout: float) -> dict[str, Any] | _Fault:
        """Wait for the next message, watching the worker's memory and life while waiting."""
        assert self.proc is not None and self._results_r is not None
        deadline = time.monotonic() + timeout
        self._peak = 0
        try:
            watch: MemoryWatch | None = MemoryWatch(
                psutil.Process(self.proc.pid), forking=self.forking and not self.starting
            )
        except psutil.Error:
            watch = None
        while True:
            if b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                return _parse(line)
            if len(self._buffer) > MAX_MESSAGE_BYTES:
                return _Fault(
                    Status.CRASH,
                    f"protocol violation: a message of over {MAX_MESSAGE_BYTES} bytes; "
                    "worker replaced",
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _Fault(Status.TIMEOUT, f"no result within {timeout:g} s; worker killed")
            ready, _, _ = select.select(
                [self._results_r], [], [], min(self.limits.poll_interval, remaining)
            )
            if ready:
                chunk = os.read(self._results_r, 1 << 16)
                if chunk:
                    self._buffer += chunk
                    continue
                try:
                    code = self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    return _Fault(Status.CRASH, "worker closed its result channel mid-job")
                return _Fault(Status.CRASH, describe_exit(code), death=True)
            if self.proc.poll() is not None:
                while select.select([self._results_r], [], [], 0)[0]:
                    chunk = os.read(self._results_r, 1 << 16)
                    if not chunk:
                        break
                    self._buffer += chunk
                if b"\n" in self._buffer:
                    continue
                return _Fault(Status.CRASH, describe_exit(self.proc.returncode), death=True)
            if watch is not None:
                rss = watch.rss()
                self._peak = max(self._peak, rss)
                if rss > self.limits.max_memory:
                    return _Fault(
                        Status.OOM,
                        f"worker memory {rss / 2**30:.1f} GiB passed the cap of "
                        f"{self.limits.max_memory / 2**30:.1f} GiB; worker killed",
                    )

    def kill(self) -> None:
        """Kill the worker and everything it started, and wait until all of it has exited
        (a job's fork holds its memory: it is free again when this returns)."""
        self._nonce = None
        if self.proc is not None and self.proc.poll() is None:
            kill_tree(self.proc)
        self._close_pipes()

    def ask_exit(self) -> None:
        """Ask the worker to exit (:meth:`stop` then waits for it): several workers asked
        first wind down together."""
        if self.proc is not None and self.proc.poll() is None and self._jobs_w is not None:
            self._send({"op": "exit"})
            self._close_pipes()

    def stop(self, grace: float = 5.0) -> None:
        """Ask the worker to exit, then make sure it did."""
        if self.proc is not None and self.proc.poll() is None:
            self.ask_exit()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        self.kill()
        self.proc = None

    def _close_pipes(self) -> None:
        for name in ("_jobs_w", "_results_r"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)


def _parse(line: bytes) -> dict[str, Any] | _Fault:
    try:
        message = json.loads(line)
    except ValueError:
        shown = line[:80].decode("utf-8", "replace")
        return _Fault(
            Status.CRASH,
            f"protocol violation: a line that is not JSON ({shown!r}); worker replaced",
        )
    if not isinstance(message, dict):
        return _Fault(Status.CRASH, "protocol violation: a message that is not an object")
    return message


def __getattr__(name: str) -> Any:
    """``WorkerPool`` lived here; it is :mod:`~pytest_rknn.toolkit.pool`'s now."""
    if name == "WorkerPool":
        from pytest_rknn.toolkit.pool import WorkerPool

        return WorkerPool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
