"""A toolkit worker's process tree as the operating system sees it.

Owns what a worker inherits from the host (:data:`PASSED_ENV`, :func:`worker_env`), how much
memory its tree holds (:class:`MemoryWatch`), how a worker that ended mid-job ended
(:func:`describe_exit`), and how the tree is killed so that its memory is free again
(:func:`kill_tree`). The conversation with the worker is :mod:`~pytest_rknn.toolkit.supervisor`'s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import psutil

# Polls between two look-ups of a worker's descendants (each one scans all of /proc).
CHILDREN_EVERY = 8

# Host variables a worker inherits; anything else (tokens, the host's PYTHONPATH, ...) stays out.
PASSED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "LD_LIBRARY_PATH",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
PASSED_ENV_PREFIXES = ("LC_",)


def worker_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a worker: the allow-listed host variables, ours, and ``extra``.

    A worker writes its environment's bytecode whatever the host's ``PYTHONDONTWRITEBYTECODE``:
    importing the toolkit (torch and onnx with it) from source takes 3.7 s, from bytecode
    1.8 s, and every worker start pays it."""
    env = {
        k: v for k, v in os.environ.items() if k in PASSED_ENV or k.startswith(PASSED_ENV_PREFIXES)
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def tree_rss(proc: psutil.Process, children: list[psutil.Process] | None = None) -> int:
    """RSS of ``proc`` and its ``children`` (default: all its descendants, looked up now)."""
    try:
        total = proc.memory_info().rss
        for child in proc.children(recursive=True) if children is None else children:
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total
    except psutil.Error:
        return 0


class MemoryWatch:
    """The RSS of a worker's process tree, cheaply: the list of its descendants (a scan of
    /proc) every :data:`CHILDREN_EVERY` polls, and every poll while it has none (a job's fork
    is found at once). A forking worker's job is its fork's tree: the worker itself waits,
    its pages shared with the fork and counted there once."""

    def __init__(self, proc: psutil.Process, forking: bool = False) -> None:
        self.proc = proc
        self.forking = forking
        self.polls = 0
        self.children: list[psutil.Process] = []

    def rss(self) -> int:
        if not self.children or self.polls % CHILDREN_EVERY == 0:
            with contextlib.suppress(psutil.Error):
                self.children = self.proc.children(recursive=True)
        self.polls += 1
        if self.forking and self.children:
            return sum(tree_rss(child, []) for child in self.children)
        return tree_rss(self.proc, self.children)


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill the worker ``proc`` and everything it started, and wait until all of it has exited:
    its descendants first (a job's fork holds the job's memory, and it is free once the
    worker, still alive, has reaped it), then its whole process group."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    for child in tree:
        with contextlib.suppress(psutil.Error):
            child.kill()
    _wait_gone(tree)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_gone(procs: list[psutil.Process], timeout: float = 2.0) -> None:
    """Wait (at most ``timeout``) until the killed ``procs`` are reaped: a job's fork is reaped
    by the worker, which waits for it, and only then is all of its memory free again."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        while time.monotonic() < deadline and proc.is_running():
            time.sleep(0.005)


def describe_exit(code: int) -> str:
    """How a worker that ended mid-job ended (``code``: its exit code, negative for a signal)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker died with {name}"
    return f"worker exited with code {code} in the middle of a job"
