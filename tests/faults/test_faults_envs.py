"""Faults in the environments under a running suite: a rebuild while a run uses one, a run that
starts while one is rebuilt, a rebuild of the exporter nobody asked for, a file edited in place
in uv's hard-linked cache, a retry after a full disk.

Everything here works on copies of what verification reads (``envs_support.partial_copy``) in
the test's own folder, or on a tiny made-up site-packages; the shared environments are only
read. Nothing is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from envs_support import partial_copy
from faults_support import TALLY

import pytest_rknn.envs.provisioning as provisioning
from pytest_rknn.cli.main import main
from pytest_rknn.envs import EnvError, EnvState, ToolkitEnv, check_disk, get_envs, provision
from pytest_rknn.envs.install import BuildError
from pytest_rknn.envs.installers import UvInstaller
from pytest_rknn.envs.recipes import KNOWN_VERSIONS, ToolkitRequest
from pytest_rknn.envs.record_check import damaged
from pytest_rknn.envs.registry import Toolkits

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_SH if sys.argv[2] == "shared" else fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[3]))
if len(sys.argv) > 4:  # a build finishing: its new marker
    open(sys.argv[4], "w").write(sys.argv[5])
"""


@pytest.fixture(scope="module")
def real_env() -> ToolkitEnv:
    envs = get_envs([ToolkitRequest(v) for v in KNOWN_VERSIONS], create=False)
    usable = [env for env in envs if env.usable and isinstance(env, ToolkitEnv)]
    if not usable:
        pytest.skip("no toolkit environment built in the default folder: pytest-rknn envs")
    return usable[0]


def _hold(path: Path, how: str, seconds: float, *then: str) -> subprocess.Popen:
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), how, str(seconds), *then],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_rebuild_while_a_run_uses_the_environment_is_refused(
    real_env: ToolkitEnv, tmp_path: Path
) -> None:
    copy = partial_copy(real_env, tmp_path)
    marker = copy.marker_path.read_bytes()
    run = _hold(copy.use_path, "shared", 30)
    try:
        TALLY.faults += 1
        (env,) = provision([copy.request], root=tmp_path, torch=copy.torch, rebuild=True)
    finally:
        run.kill()
        run.wait()
    assert env.state is EnvState.FAILED
    assert "is in use by a running suite" in env.reason and "--rknn-envs" in env.reason
    assert copy.marker_path.read_bytes() == marker, "the environment was left as it was"
    assert copy.python.exists()


def test_a_run_waits_for_a_rebuild_under_way_and_takes_the_new_identity(
    real_env: ToolkitEnv, tmp_path: Path
) -> None:
    copy = partial_copy(real_env, tmp_path)
    rebuilt = json.loads(copy.marker_path.read_text())
    rebuilt["created"] = "2099-01-01T00:00:00+00:00"
    build = _hold(copy.use_path, "exclusive", 1.5, str(copy.marker_path), json.dumps(rebuilt))
    try:
        TALLY.faults += 1
        toolkits = Toolkits([copy.request], tmp_path)
        start = time.monotonic()
        identity = toolkits.identity(copy.version)
        waited = time.monotonic() - start
    finally:
        build.wait(30)
    assert waited > 1.0, "the run did not wait for the rebuild"
    assert identity is not None and identity["created"] == "2099-01-01T00:00:00+00:00"
    # The run now holds it: a rebuild is refused until the run ends.
    (env,) = provision([copy.request], root=tmp_path, torch=copy.torch, rebuild=True)
    assert env.state is EnvState.FAILED and "in use by a running suite" in env.reason
    assert toolkits.identity(copy.version) == identity


@pytest.mark.parametrize(
    ("args", "rebuilt"),
    [
        (["--toolkits", "2.3.2", "--rebuild"], {"2.3.2"}),
        (["--toolkits", "2.3.2,2.5.0", "--rebuild"], {"2.3.2", "2.5.0"}),
        (["--toolkits", "2.3.2", "--rebuild", "--exporter"], {"2.3.2", "exporter"}),
        (["--toolkits", "none", "--rebuild"], {"exporter"}),
        (["--toolkits", "2.3.2"], set()),
    ],
)
def test_rebuild_rebuilds_only_what_was_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], rebuilt: set[str]
) -> None:
    asked: dict[str, object] = {}

    def fake_provision(requests, **kwargs):  # noqa: ANN001, ANN003, ANN202
        asked.update(kwargs)
        return []

    monkeypatch.setattr("pytest_rknn.cli.envs.provision", fake_provision)
    TALLY.bad_inputs += 1
    assert main(["envs", *args, "--rknn-envs", str(tmp_path)]) == 0
    assert asked["rebuild"] == rebuilt
    assert asked["exporter"] is True


def _site(root: Path) -> tuple[Path, Path]:
    """A made-up environment whose one distribution's file is hard-linked from a 'cache'."""
    site = root / "env" / "lib" / "python3.11" / "site-packages"
    (site / "pkg").mkdir(parents=True)
    (site / "demo-1.0.dist-info").mkdir()
    cache = root / "cache" / "demo" / "pkg" / "core.py"
    cache.parent.mkdir(parents=True)
    cache.write_text("VALUE = 1\n")
    os.link(cache, site / "pkg" / "core.py")
    import base64
    import hashlib

    digest = base64.urlsafe_b64encode(hashlib.sha256(b"VALUE = 1\n").digest()).rstrip(b"=")
    record = f"pkg/core.py,sha256={digest.decode()},10\ndemo-1.0.dist-info/RECORD,,\n"
    (site / "demo-1.0.dist-info" / "RECORD").write_text(record)
    return site, cache


def test_a_file_edited_in_place_is_found_and_its_cache_entry_cleaned(tmp_path: Path) -> None:
    site, cache = _site(tmp_path)
    env_path = tmp_path / "env"
    assert damaged(env_path) == {}
    with open(site / "pkg" / "core.py", "r+") as handle:  # in place: the cache's copy too
        handle.write("VALUE = 2\n")
    TALLY.faults += 1
    assert cache.read_text() == "VALUE = 2\n", "hard links: the cache was edited as well"
    assert damaged(env_path) == {"demo": ["pkg/core.py"]}

    cleaned: list[list[str]] = []
    installer = UvInstaller(Path("/usr/bin/uv"), tmp_path / "cache")
    installer.clean = lambda names, log: cleaned.append(list(names))  # type: ignore[method-assign]
    env = ToolkitEnv(ToolkitRequest("2.3.2"), tmp_path)
    env.installer = installer
    env.path.mkdir(parents=True)
    (env.path / "lib").symlink_to(env_path / "lib")
    log = (tmp_path / "log.txt").open("w")
    assert env._cache_damaged(log, lambda _text: None) is True
    assert cleaned == [["demo"]]
    with pytest.raises(BuildError) as info:
        env._cache_damaged(log, lambda _text: None, again=True)
    assert "cache clean" in str(info.value) and "demo" in str(info.value)


def test_a_retry_after_a_full_disk_counts_what_the_cache_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "envs"
    cache = root / "uv-cache"
    cache.mkdir(parents=True)
    (cache / "blob").write_bytes(os.urandom(4 << 20))
    free = 10 << 20
    monkeypatch.setattr(
        provisioning.shutil, "disk_usage", lambda _p: type("U", (), {"free": free})()
    )
    monkeypatch.setattr(provisioning, "ENV_DISK_BYTES", 12 << 20)
    monkeypatch.setattr(provisioning, "VENV_BYTES", 1 << 20)
    TALLY.faults += 1
    check_disk(root, 1, shared=True)  # 12 MB needed, 4 MB of it cached: 8 MB fit in 10
    with pytest.raises(EnvError) as info:
        check_disk(root, 1, shared=False)  # pip: no shared cache to count
    assert "not enough disk space" in str(info.value)
    (cache / "blob").unlink()
    with pytest.raises(EnvError):
        check_disk(root, 1, shared=True)
