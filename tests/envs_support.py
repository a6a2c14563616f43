"""Helpers shared by the environment tests: a cheap stand-in copy of a real environment, and
provisioning it while another process holds its build lock; pip without a network."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_rknn.envs import ExporterEnv, ManagedEnv, ToolkitEnv, provision
from pytest_rknn.envs.recipes import ToolkitRequest


def partial_copy(env: ManagedEnv, root: Path) -> ManagedEnv:
    """A copy of what verify() looks at (marker, interpreter link, dist-info METADATA files)."""
    if isinstance(env, ToolkitEnv):
        copy: ManagedEnv = ToolkitEnv(env.request, root, env.torch)
    else:
        assert isinstance(env, ExporterEnv)
        copy = ExporterEnv(root, env.torch)
    copy.path.mkdir(parents=True)
    shutil.copy2(env.marker_path, copy.marker_path)
    (copy.path / "bin").mkdir()
    (copy.path / "bin" / "python").symlink_to(env.python.resolve())
    for meta in env.marker["dist_info"].values():
        (copy.path / meta).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(env.path / meta, copy.path / meta)
    return copy


HOLDER = (
    "import sys, time; from pathlib import Path; from filelock import FileLock\n"
    "with FileLock(sys.argv[1]):\n"
    "    print('locked', flush=True); time.sleep(1.0)\n"
    "    Path(sys.argv[2]).write_bytes(Path(sys.argv[3]).read_bytes())\n"
)


def provision_while_another_builds(
    copy: ManagedEnv, requests: list[ToolkitRequest], exporter: bool = False
) -> tuple[list[ManagedEnv], float]:
    """Provision ``copy`` (its marker removed) while another process holds its build lock for
    a second and then puts the marker back, as a finishing build would; returns the
    environments and the seconds provision() took."""
    saved = copy.root / "marker.json"
    saved.write_bytes(copy.marker_path.read_bytes())
    copy.marker_path.unlink()
    copy.lock_path.parent.mkdir(parents=True, exist_ok=True)
    args = [str(copy.lock_path), str(copy.marker_path), str(saved)]
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *args], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    start = time.perf_counter()
    envs = provision(requests, root=copy.root, torch=copy.torch, exporter=exporter)
    waited = time.perf_counter() - start
    assert proc.wait(timeout=30) == 0
    return envs, waited


def cut_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route pip through a proxy port where nothing listens, without retries."""
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_RETRIES", "0")
