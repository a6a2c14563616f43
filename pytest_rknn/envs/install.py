"""The pip and venv steps of building a toolkit environment, and their failures in one line.

Owns running those subprocesses with their output in a log file, reading pip's output (and its
``--log`` debug log) for the cause of a failure (a package registry that cannot be reached, a
full disk, pip's own first ``ERROR:`` line), the cache of downloaded toolkit wheels, and
reading package versions inside an environment without importing the packages.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from packaging.requirements import Requirement
from packaging.tags import sys_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

STEP_TIMEOUT = 1800.0
_TAIL_LINES = 300
_PIP_LOG_TAIL = 512 * 1024

# Innermost causes of a network failure as urllib3/requests word them, and how to say them.
_NETWORK_CAUSES = (
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


class BuildError(RuntimeError):
    """One step of building an environment failed; the message is one line naming the cause."""


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
    return None


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
    if "No space left on device" in text or "[Errno 28]" in text:
        return (
            f"no space left on device during {step}; free some disk space or point "
            "--rknn-envs at another disk"
        )
    errors = [ln.strip() for ln in lines if ln.startswith("ERROR:")]
    last = errors[0] if errors else next((ln.strip() for ln in reversed(lines) if ln.strip()), "")
    return f"{step} failed (exit {code}): {last[:300]}"


def run_logged(
    cmd: Sequence[str],
    log: IO[str],
    step: str,
    on_line: Callable[[str], None] | None = None,
    pip_log: Path | None = None,
    timeout: float = STEP_TIMEOUT,
) -> None:
    """Run ``cmd`` with its output appended to ``log``; raise :class:`BuildError` on failure.

    ``on_line`` hears pip's progress lines (``Collecting ...``, ``Installing ...``).
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
        )
    except OSError as exc:
        raise BuildError(f"{step} could not start: {exc}") from None
    expired = threading.Event()

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
            if on_line and line.startswith(("Collecting ", "Installing collected", "Building")):
                on_line(line.strip())
        code = proc.wait()
    finally:
        timer.cancel()
        log.flush()
    if code != 0:
        if expired.is_set():
            raise BuildError(f"{step} did not finish within {timeout:.0f} s and was stopped")
        raise BuildError(failure_reason(step, code, list(tail), pip_log))


def _cached_wheel(dest: Path, requirement: Requirement) -> Path | None:
    name = canonicalize_name(requirement.name)
    supported = set(sys_tags())
    for path in sorted(dest.glob("*.whl")):
        try:
            wheel_name, version, _build, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        if wheel_name == name and version in requirement.specifier and tags & supported:
            return path
    return None


def pip_download(
    python: Path, requirement: str, dest: Path, log: IO[str], pip_log: Path | None = None
) -> Path:
    """The wheel for ``requirement`` (no dependencies) in ``dest``, downloaded if not cached."""
    req = Requirement(requirement)
    dest.mkdir(parents=True, exist_ok=True)
    cached = _cached_wheel(dest, req)
    if cached is not None:
        log.write(f"\nusing cached {cached}\n")
        return cached
    cmd = [str(python), "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    cmd += ["--progress-bar", "off", "--dest", str(dest), requirement]
    if pip_log is not None:
        cmd[3:3] = ["--log", str(pip_log)]
    run_logged(cmd, log, f"pip download {requirement}", pip_log=pip_log)
    found = _cached_wheel(dest, req)
    if found is None:
        raise BuildError(f"pip download {requirement} left no matching wheel in {dest}")
    return found


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
