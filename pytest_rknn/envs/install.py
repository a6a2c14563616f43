"""The installer steps of building an environment, and their failures in one line.

Owns running those subprocesses (uv's or pip's) with their output in a log file and a
heartbeat while they are silent, reading their output (and pip's ``--log`` debug log) for the
cause of a failure (a package registry that cannot be reached, a full disk, the installer's
own first error line), and reading package versions inside an environment without importing
the packages.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

STEP_TIMEOUT = 1800.0
HEARTBEAT = 30.0
# Lines of pip's and uv's output that say how far an install has come.
PROGRESS = ("Collecting ", "Installing collected", "Building", "Resolved ", "Prepared ")
PROGRESS_UV = ("Installed ", "Downloading ", "Downloaded ", "Built ")
_TAIL_LINES = 300
_PIP_LOG_TAIL = 512 * 1024

# Innermost causes of a network failure as urllib3/requests word them, and how to say them.
_NETWORK_CAUSES = (
    ("tunnel error: failed to create underlying", "cannot connect to the proxy"),
    ("Cannot connect to proxy", "cannot connect to the proxy"),
    ("Tunnel connection failed", "the proxy refused the tunnel"),
    ("ProxyError", "proxy error"),
    ("Name or service not known", "host name not resolved"),
    ("Temporary failure in name resolution", "host name not resolved"),
    ("nodename nor servname", "host name not resolved"),
    ("Network is unreachable", "network unreachable"),
    ("Connection refused", "connection refused"),
    ("Connection reset", "connection reset"),
    ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
    ("SSLError", "TLS error"),
    ("ConnectTimeoutError", "connection timed out"),
    ("ReadTimeoutError", "read timed out"),
    ("timed out", "timed out"),
)
_FETCH = re.compile(r"Could not fetch URL (\S+?):? (?:connection error|timed out)(.*)")
_RETRY = re.compile(r"Retrying \(.*?\) after connection broken by '(.*)': (\S+)")
_OSERROR = re.compile(r"Could not install packages due to an OSError: (.*)")
_UV_FETCH = re.compile(r"Failed to fetch: `?(\S+?)`?$")
# uv's "cause:" lines that mean the request never got an answer.
_UV_NETWORK = ("dns error", "tcp connect error", "client error (Connect)", "tunnel error")


class BuildError(RuntimeError):
    """One step of building an environment failed; the message is one line naming the cause.

    ``no_space`` says the disk is full: trying another installer would not help.
    """

    def __init__(self, message: str, no_space: bool = False) -> None:
        super().__init__(message)
        self.no_space = no_space


def _uv_registry_failure(text: str) -> str | None:
    """``URL (cause)`` from uv's ``error: Failed to fetch: URL`` and its ``cause:`` lines."""
    if not any(needle in text for needle in _UV_NETWORK):
        return None
    url = next((m.group(1) for ln in text.splitlines() if (m := _UV_FETCH.search(ln))), "")
    cause = next((c for needle, c in _NETWORK_CAUSES if needle in text), "network error")
    return f"{url} ({cause})" if url else cause


def registry_failure(text: str) -> str | None:
    """``URL (cause)`` if pip's output shows it could not reach a package index, else None."""
    for line in text.splitlines():
        for pattern in (_FETCH, _RETRY, _OSERROR):
            match = pattern.search(line)
            if not match:
                continue
            url = next((g for g in match.groups() if g.startswith(("http", "file:"))), "")
            for needle, cause in _NETWORK_CAUSES:
                if needle in line:
                    return f"{url} ({cause})" if url else cause
    return _uv_registry_failure(text)


def failure_reason(step: str, code: int, lines: Sequence[str], pip_log: Path | None) -> str:
    """One line saying why ``step`` failed, with the fix when the cause is known."""
    text = "\n".join(lines)
    if pip_log is not None and pip_log.is_file():
        with pip_log.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - _PIP_LOG_TAIL))
            text += "\n" + handle.read().decode("utf-8", "replace")
    network = registry_failure(text)
    if network:
        return (
            f"cannot reach the package registry: {network}; check network/proxy or pip config "
            "(pip config list)"
        )
    if no_space(text):
        return (
            f"no space left on device during {step}; free some disk space or point "
            "--rknn-envs at another disk"
        )
    return f"{step} failed (exit {code}): {first_error(lines)[:300]}"


def no_space(text: str) -> bool:
    return "No space left on device" in text or "[Errno 28]" in text or "os error 28" in text


def first_error(lines: Sequence[str]) -> str:
    """pip's first ``ERROR:`` line, or uv's ``error:`` line with the cause under it."""
    for index, line in enumerate(lines):
        if line.startswith("ERROR:"):
            return line.strip()
        if line.startswith("error:"):
            detail = [ln.strip(" ╰─▶") for ln in lines[index + 1 : index + 3] if ln.strip()]
            return " ".join([line.strip(), *detail[:1]])
    return next((ln.strip() for ln in reversed(lines) if ln.strip()), "")


def run_logged(
    cmd: Sequence[str],
    log: IO[str],
    step: str,
    on_line: Callable[[str], None] | None = None,
    pip_log: Path | None = None,
    timeout: float = STEP_TIMEOUT,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    heartbeat: Callable[[str], None] | None = None,
) -> None:
    """Run ``cmd`` with its output appended to ``log``; raise :class:`BuildError` on failure.

    ``on_line`` hears the installer's progress lines (``Collecting ...``, ``Resolved ...``);
    ``heartbeat`` hears ``STEP: still running (N s)`` every :data:`HEARTBEAT` seconds.
    """
    log.write(f"\n$ {shlex.join(str(c) for c in cmd)}\n")
    log.flush()
    try:
        proc = subprocess.Popen(
            list(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=env,
            cwd=os.fspath(cwd) if cwd else None,
        )
    except OSError as exc:
        raise BuildError(f"{step} could not start: {exc}") from None
    expired = threading.Event()
    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while heartbeat is not None and not done.wait(HEARTBEAT):
            heartbeat(f"{step}: still running ({time.monotonic() - started:.0f} s)")

    threading.Thread(target=beat, daemon=True, name="rknn-env-heartbeat").start()

    def stop() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, stop)
    timer.start()
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip())
            if on_line and line.startswith(PROGRESS + PROGRESS_UV):
                on_line(line.strip())
        code = proc.wait()
    finally:
        done.set()
        timer.cancel()
        log.flush()
    if code != 0:
        if expired.is_set():
            raise BuildError(f"{step} did not finish within {timeout:.0f} s and was stopped")
        reason = failure_reason(step, code, list(tail), pip_log)
        raise BuildError(reason, no_space=reason.startswith("no space left"))


_INSPECT = """
import json, sys
from importlib import metadata
from pathlib import Path
root = Path(sys.argv[1]).resolve()
out = {"python": sys.version.split()[0], "packages": {}, "dist_info": {}}
for name in sys.argv[2:]:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        continue
    out["packages"][name] = dist.version
    for f in dist.files or []:
        if f.name == "METADATA" and f.parent.name.endswith(".dist-info"):
            path = Path(dist.locate_file(f)).resolve()
            if path.is_relative_to(root):
                out["dist_info"][name] = str(path.relative_to(root))
            break
print(json.dumps(out))
"""


def inspect_packages(python: Path, env_path: Path, names: Sequence[str]) -> dict[str, Any]:
    """Versions and METADATA paths (relative to ``env_path``) of ``names`` in an environment."""
    cmd = [str(python), "-I", "-c", _INSPECT, str(env_path), *names]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BuildError(f"cannot read package versions with {python}: {last}")
    return json.loads(proc.stdout)
