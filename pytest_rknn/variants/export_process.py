"""Where an export batch runs: a process of its own, or the thread's shared export process.

:func:`run_export_script` runs an export script (``torch_export_script.py``,
``hf_export_script.py``) on a batch of jobs with the exporter's interpreter and returns the
results it wrote. By default each batch is ``python SCRIPT JOBS RESULTS`` in a process of its
own. Inside :func:`shared_exports` the thread's batches go to one ``export_server.py`` process
instead, started with the first of them, so torch is imported and warmed up once (a run's torch
batch and hf batch: 12 CPU seconds instead of 17, measured with torch 2.13). The models are the
same byte for byte: the server runs each script as ``__main__``, as its own process would.

A batch that outlives its timeout or kills the server ends the server; that thread's later
batches (e.g. the jobs of a failed batch retried one by one) run in processes of their own.
Every export process runs at a lower CPU priority (:data:`EXPORT_NICENESS`) and writes its
bytecode whatever the host says.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

EXPORT_NICENESS = 10
"""How much lower than the run's own an export batch's CPU priority is (``nice``)."""
_SERVER = Path(__file__).with_name("export_server.py")
_STOP_GRACE = 5.0


class TorchExportError(RuntimeError):
    """The torch exporter failed or could not run; the message is one line with the cause.
    ``environmental``: the machine failed it (no space, no memory), not the model: the export
    script says so from the exception's type; a message naming such a cause counts too."""

    _MACHINE = ("No space left on device", "Disk quota exceeded", "Cannot allocate memory")

    def __init__(self, message: str, machine: bool = False) -> None:
        super().__init__(message)
        self.machine = machine

    @property
    def environmental(self) -> bool:
        text = str(self)
        return self.machine or "MemoryError" in text or any(c in text for c in self._MACHINE)


class ExportProcessError(TorchExportError):
    """The export process itself failed: it could not start, ended before writing every
    job's result, or hung past its timeout (``hung``). No model's finding: a cell that meets
    it is a ``crash`` with this reason, and nothing of it is kept."""

    def __init__(self, message: str, hung: bool = False) -> None:
        super().__init__(message)
        self.hung = hung


def _export_environ() -> dict[str, str]:
    """The host's environment for an export batch, less ``PYTHONDONTWRITEBYTECODE``: the
    exporter writes its environment's bytecode (torch and transformers import in 4 s from
    bytecode, 13 s from source, and every batch pays it)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _yield_cpu(pid: int) -> None:
    """Lower an export process's CPU priority: it works ahead of the cells that need it, while
    the toolkit converts other cells (or, at a run's start, imports itself) on the same cores,
    so the scheduler lets those go first. Where that cannot be done it runs as it is."""
    with contextlib.suppress(AttributeError, OSError):
        own = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, pid, min(own + EXPORT_NICENESS, 19))


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["(no output)"])[-1][:300]


def _timed_out(payload: list[dict], timeout: float) -> ExportProcessError:
    return ExportProcessError(
        f"torch export of {len(payload)} job(s) timed out after {timeout:.0f} s", hung=True
    )


def _read_results(
    result_file: Path, payload: list[dict], python: Path, code: int | None, output: str
) -> list[dict]:
    try:
        results = json.loads(result_file.read_text())
    except (OSError, ValueError, RecursionError):
        results = []
    whole = isinstance(results, list) and all(isinstance(r, dict) for r in results)
    if not whole or len(results) < len(payload):
        how = ""
        if code is not None and code < 0:
            how = f" (killed by signal {-code})"
        elif code == 0:
            how = " without writing every job's result"
        raise ExportProcessError(
            f"torch export with {python} failed with code {code}{how}: {_last_error_line(output)}"
        )
    return results[: len(payload)]


class _ExportServer:
    """One ``export_server.py`` process: batches in turn, torch imported by the first."""

    def __init__(self, python: Path) -> None:
        self.python = python
        self.proc = subprocess.Popen(
            [str(python), str(_SERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_export_environ(),
        )
        _yield_cpu(self.proc.pid)

    def run(self, script: Path, payload: list[dict], timeout: float) -> list[dict]:
        """The batch's results; ExportProcessError (and the server ended) when it fails."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with tempfile.TemporaryDirectory(prefix="rknn-export-") as tmp:
            jobs_file, result_file = Path(tmp) / "jobs.json", Path(tmp) / "results.json"
            log = Path(tmp) / "output.log"
            jobs_file.write_text(json.dumps(payload))
            request = {"script": str(script), "argv": [str(jobs_file), str(result_file)]}
            try:
                with contextlib.suppress(OSError):  # a dead server: its end of file answers
                    self.proc.stdin.write(json.dumps({**request, "log": str(log)}).encode())
                    self.proc.stdin.write(b"\n")
                    self.proc.stdin.flush()
                answer = self._answer(timeout)
            except BaseException:
                self.stop(kill=True)
                raise
            output = log.read_text(errors="replace") if log.exists() else ""
            if answer is None:
                self.stop(kill=True)
                raise _timed_out(payload, timeout)
            if answer == b"":
                self.stop()
                code = self.proc.returncode
            else:
                try:
                    code = int(json.loads(answer)["code"])
                except (ValueError, KeyError, TypeError, OverflowError):
                    self.stop(kill=True)  # no longer a server that answers as it should
                    code = None
            return _read_results(result_file, payload, self.python, code, output)

    def _answer(self, timeout: float) -> bytes | None:
        """The server's answer line; b"" when it died; None past ``timeout``."""
        assert self.proc.stdout is not None
        fd, data = self.proc.stdout.fileno(), b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return b""
            data += chunk
        return data.split(b"\n", 1)[0]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, kill: bool = False) -> None:
        """End the server: at the end of its stdin, or killed (past the grace, or at once)."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        if not kill:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(_STOP_GRACE)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class _Shared(threading.local):
    def __init__(self) -> None:
        self.depth = 0
        self.servers: dict[Path, _ExportServer | None] = {}


_shared = _Shared()


@contextlib.contextmanager
def shared_exports() -> Iterator[None]:
    """Within this block, this thread's export batches share one process per interpreter,
    ended when the block is left."""
    _shared.depth += 1
    try:
        yield
    finally:
        _shared.depth -= 1
        if _shared.depth == 0:
            servers, _shared.servers = _shared.servers, {}
            for server in servers.values():
                if server is not None:
                    server.stop()


def _server_for(python: Path) -> _ExportServer | None:
    """The thread's shared export process for ``python``, started now if needed; None outside
    :func:`shared_exports` or after a batch ended that thread's server."""
    if _shared.depth == 0:
        return None
    if python not in _shared.servers:
        try:
            _shared.servers[python] = _ExportServer(python)
        except OSError:
            _shared.servers[python] = None
    server = _shared.servers[python]
    if server is not None and not server.alive:
        _shared.servers[python] = server = None
    return server


def run_export_script(
    script: Path, payload: list[dict], python: Path, timeout: float
) -> list[dict]:
    """Run an export ``script`` on ``payload`` (one dict per job) with ``python``; the
    results it wrote, one per job. ``ExportProcessError`` when the interpreter fails before
    writing them all, or hangs past ``timeout``."""
    server = _server_for(python)
    if server is not None:
        try:
            return server.run(script, payload, timeout)
        finally:
            if not server.alive:
                _shared.servers[python] = None
    return _run_alone(script, payload, python, timeout)


def _run_alone(script: Path, payload: list[dict], python: Path, timeout: float) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="rknn-export-") as tmp:
        jobs_file = Path(tmp) / "jobs.json"
        result_file = Path(tmp) / "results.json"
        log = Path(tmp) / "output.log"
        jobs_file.write_text(json.dumps(payload))
        cmd = [str(python), str(script), str(jobs_file), str(result_file)]
        # Output to a file, not a pipe: a program the script leaves running would hold a pipe
        # open, and waiting for its end would outlast the timeout.
        with log.open("wb") as output:
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=_export_environ(),
                )
            except OSError as exc:
                raise ExportProcessError(f"cannot run {python}: {exc}") from None
        _yield_cpu(proc.pid)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise _timed_out(payload, timeout) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        text = log.read_text(errors="replace")
        return _read_results(result_file, payload, python, proc.returncode, text)
