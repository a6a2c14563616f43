"""Tests of the installers: pip's configured sources read as pip reads them and handed to uv,
the choice of installer, the pip fallback when uv fails, and the smoke slots."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from pytest_rknn.envs import EnvState, ManagedEnv
from pytest_rknn.envs.install import BuildError, failure_reason, first_error
from pytest_rknn.envs.installers import (
    INSTALLER_ENV,
    PipInstaller,
    UvInstaller,
    cache_summary,
    choose_installer,
    find_uv,
    tree_bytes,
)
from pytest_rknn.envs.pipconf import PipSources, pip_sources
from pytest_rknn.envs.slots import SMOKE_SLOTS, smoke_slot


def _environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_DIRS": str(tmp_path / "xdg"), **extra}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_pip_sources_follow_pips_order(tmp_path: Path) -> None:
    _write(
        tmp_path / "xdg" / "pip" / "pip.conf",
        "[global]\nindex-url = https://mirror.example/simple\nfind-links = /opt/a\n"
        "constraint = /etc/c.txt\ncert = /etc/ca.pem\n",
    )
    _write(
        tmp_path / "home" / ".config" / "pip" / "pip.conf",
        "[global]\nfind-links = /opt/wheels\nextra-index-url = file:///x/simple file:///y/simple\n"
        "[install]\ntrusted-host = mirror.example\n",
    )
    sources = pip_sources(_environ(tmp_path, PIP_FIND_LINKS="/opt/env-wheels /opt/more"))
    assert sources.index_url == "https://mirror.example/simple"
    assert sources.find_links == ("/opt/env-wheels", "/opt/more")
    assert sources.extra_index_urls == ("file:///x/simple", "file:///y/simple")
    assert sources.constraints == ("/etc/c.txt",)
    assert sources.trusted_hosts == ("mirror.example",)
    args = sources.uv_args()
    assert args[:2] == ["--index-strategy", "unsafe-best-match"]
    assert args[args.index("--index-url") + 1] == "https://mirror.example/simple"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--find-links"] == [
        "/opt/env-wheels",
        "/opt/more",
    ]
    assert "--constraint" in args and "--allow-insecure-host" in args


def test_pip_config_file_replaces_the_user_files(tmp_path: Path) -> None:
    _write(tmp_path / "home" / ".config" / "pip" / "pip.conf", "[global]\nfind-links = /user\n")
    named = _write(tmp_path / "named.conf", "[global]\nno-index = true\n")
    sources = pip_sources(_environ(tmp_path, PIP_CONFIG_FILE=str(named)))
    assert sources.find_links == () and sources.no_index
    assert "--no-index" in sources.uv_args()
    assert pip_sources(_environ(tmp_path, PIP_CONFIG_FILE="/dev/null")).find_links == ()


def test_pip_certificate_and_proxy_reach_uv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SSL_CERT_FILE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    sources = PipSources(cert="/etc/ca.pem", proxy="http://proxy:3128", timeout="60")
    env = UvInstaller(Path("uv"), tmp_path / "cache", sources).environment()
    assert env["SSL_CERT_FILE"] == "/etc/ca.pem"
    assert env["HTTPS_PROXY"] == env["HTTP_PROXY"] == "http://proxy:3128"
    assert env["UV_HTTP_TIMEOUT"] == "60"
    assert env["UV_CACHE_DIR"] == str(tmp_path / "cache")
    assert env["UV_LINK_MODE"] == "hardlink"


def test_installer_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INSTALLER_ENV, "pip")
    assert isinstance(choose_installer(tmp_path), PipInstaller)
    monkeypatch.setenv(INSTALLER_ENV, "conda")
    with pytest.raises(BuildError, match=r"PYTEST_RKNN_INSTALLER='conda' is not one of auto"):
        choose_installer(tmp_path)
    monkeypatch.setenv(INSTALLER_ENV, "auto")
    assert find_uv() is not None, "uv is a dependency of pytest-rknn: pip install uv"
    chosen = choose_installer(tmp_path)
    assert isinstance(chosen, UvInstaller)
    assert chosen.cache == tmp_path / "uv-cache"
    assert chosen.describe().startswith("uv 0.")


class FlakyEnv(ManagedEnv):
    """An environment whose install fails with uv (as told) and works with pip."""

    kind = "test"

    def __init__(self, root: Path, failure: BuildError) -> None:
        super().__init__(root)
        self.failure = failure
        self.tried: list[str] = []

    label = property(lambda self: "flaky")
    name = property(lambda self: "flaky-env")

    def recipe(self) -> dict[str, Any]:
        return {"kind": "test"}

    def hint(self, rebuild: bool = False) -> str:
        return "rebuild it"

    def _install(self, log: IO[str], report: Any) -> tuple[list[str], dict[str, Any]]:
        assert self.installer is not None
        self.tried.append(self.installer.name)
        if isinstance(self.installer, UvInstaller):
            raise self.failure
        self.path.mkdir(parents=True, exist_ok=True)
        return [], {"packages": {}, "dist_info": {}}

    def _smoke(self, workdir: Path) -> dict[str, Any]:
        return {"ok": True, "detail": "fine", "seconds": 0.0}


@pytest.fixture
def with_uv(monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_uv() is not None, "uv is a dependency of pytest-rknn: pip install uv"
    monkeypatch.setenv(INSTALLER_ENV, "uv")


def test_uv_failure_falls_back_to_pip(tmp_path: Path, with_uv: None) -> None:
    env = FlakyEnv(tmp_path, BuildError("uv pip install requirements failed (exit 2): error: x"))
    assert env.create() is EnvState.OK
    assert env.tried == ["uv", "pip"]
    assert env.marker["installer"] == "pip" and env.identity()["installer"] == "pip"
    assert "# uv failed: uv pip install requirements failed" in env.log_path.read_text()


def test_a_full_disk_is_not_retried_with_pip(tmp_path: Path, with_uv: None) -> None:
    env = FlakyEnv(tmp_path, BuildError("no space left on device during x", no_space=True))
    assert env.create() is EnvState.FAILED
    assert env.tried == ["uv"]
    assert env.reason.startswith("no space left on device during x (log: ")


def test_uv_full_disk_and_first_error_lines() -> None:
    lines = [
        "Resolved 24 packages in 2.19s",
        "error: Failed to install: torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl (torch)",
        "  cause: failed to hardlink file",
        "  cause: No space left on device (os error 28)",
    ]
    reason = failure_reason("uv pip install requirements", 2, lines, None)
    assert reason.startswith("no space left on device during uv pip install requirements; ")
    assert first_error(lines).startswith("error: Failed to install: torch-2.13.0+cpu")
    assert first_error(lines).endswith("(torch) cause: failed to hardlink file")


def test_tree_bytes_counts_hard_links_once(tmp_path: Path) -> None:
    cache = tmp_path / "uv-cache"
    _write(cache / "a" / "big", "x" * 100_000)
    (cache / "b").mkdir()
    (cache / "b" / "link").hardlink_to(cache / "a" / "big")
    one = tree_bytes(cache / "a")
    assert tree_bytes(cache) == one >= 100_000
    summary = cache_summary(tmp_path)
    assert summary is not None and summary.startswith(f"uv cache: {cache} (0.00 GB")
    assert cache_summary(tmp_path / "none") is None


def test_smoke_slots_let_two_run_at_once_and_no_more(tmp_path: Path) -> None:
    running: list[int] = []
    peak: list[int] = []
    lock = threading.Lock()

    def smoke() -> None:
        with smoke_slot(tmp_path):
            with lock:
                running.append(1)
                peak.append(len(running))
            time.sleep(0.3)
            with lock:
                running.pop()

    threads = [threading.Thread(target=smoke) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(peak) == SMOKE_SLOTS


@pytest.mark.toolkit
def test_uv_picks_the_torch_pip_would(tmp_path: Path) -> None:
    """The machine's trap: pip finds the CPU torch through its own configuration only; uv,
    given pip's sources, must pick the same build (not the registry's CUDA one)."""
    uv = find_uv()
    assert uv is not None, "uv is a dependency of pytest-rknn: pip install uv"
    report = tmp_path / "pip.json"
    pip = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q"]
    subprocess.run([*pip, "--report", str(report), "--no-deps", "torch==2.13.0"], check=True)
    (wanted,) = [item["metadata"]["version"] for item in json.loads(report.read_text())["install"]]
    installer = UvInstaller(uv, tmp_path / "uv-cache")
    cmd = [str(uv), "pip", "install", "--no-config", "--dry-run", "--python", sys.executable]
    cmd += [*installer.sources.uv_args(), "--reinstall", "torch==2.13.0"]
    out = subprocess.run(
        cmd, capture_output=True, text=True, env=installer.environment(), check=True
    )
    assert f"+ torch=={wanted}" in out.stderr
    if "+cpu" in wanted:
        assert "nvidia" not in out.stderr.lower()


def test_pip_installer_output_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as info:
        PipInstaller().install(
            Path(sys.executable),
            ["--no-index", "--find-links", str(tmp_path), "rknn-toolkit2==2.3.2"],
            io.StringIO(),
            "pip install rknn-toolkit2",
        )
    assert str(info.value).startswith("pip install rknn-toolkit2 failed (exit 1): ERROR: ")
