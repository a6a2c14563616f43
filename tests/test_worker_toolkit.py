"""Worker faults with the REAL toolkit: memory blow-up, SIGKILL mid-job, timeout, recovery.

These convert real attention graphs with rknn-toolkit2 in its own environment (created on
demand); nothing here is faked.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest

from pytest_rknn.envs.smoke import tiny_attention
from pytest_rknn.toolkit.protocol import Job, Limits, parse_size
from pytest_rknn.toolkit.supervisor import ToolkitWorker

pytestmark = pytest.mark.toolkit


def attention_job(root: Path, name: str, shape: tuple[int, int, int, int], platform="rk3588"):
    model = tiny_attention(root / f"{name}.onnx", shape)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    return Job.create(model, platform, root / name, arrays)


def test_a_worker_writes_its_toolkits_bytecode_into_the_environment(
    tmp_path, toolkit_python, monkeypatch
):
    """Importing the toolkit takes 3.7 s from source and 1.8 s from bytecode, at every worker
    start: a worker writes the bytecode of what it imports, whatever the host says."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    python = toolkit_python("2.3.2")
    where = "import rknn.api.rknn as m, torch; print(m.__file__); print(torch.__file__)"
    sources = subprocess.run(
        [str(python), "-I", "-B", "-c", where], capture_output=True, text=True, check=True
    ).stdout.split()
    cached = [Path(importlib.util.cache_from_source(source)) for source in sources]
    cached[0].unlink(missing_ok=True)
    worker = ToolkitWorker(python, "2.3.2", tmp_path / "w", Limits(timeout=120))
    try:
        result = worker.run(attention_job(tmp_path, "small", (1, 2, 16, 32)))
    finally:
        worker.stop()
    assert result.ok, result.error
    assert [path.is_file() for path in cached] == [True, True], cached


def test_sigkill_mid_job_is_crash_and_the_next_job_succeeds(tmp_path, toolkit_python):
    worker = ToolkitWorker(toolkit_python("2.3.2"), "2.3.2", tmp_path / "w", Limits(timeout=120))
    try:
        worker.start()
        killer = threading.Timer(1.0, os.kill, (worker.proc.pid, signal.SIGKILL))
        killer.start()
        result = worker.run(attention_job(tmp_path, "long", (1, 8, 2048, 64)))
        killer.cancel()
        after = worker.run(attention_job(tmp_path, "small", (1, 2, 16, 32)))
    finally:
        worker.stop()
    assert result.status == "crash" and "SIGKILL" in result.error
    assert "rknn building" in result.log or "OpFusing" in result.log or result.log
    assert after.ok, after.error
    assert worker.starts == 2


def test_job_past_its_timeout_is_timeout_and_the_next_job_succeeds(tmp_path, toolkit_python):
    worker = ToolkitWorker(toolkit_python("2.3.2"), "2.3.2", tmp_path / "w", Limits(timeout=0.5))
    try:
        worker.start()
        result = worker.run(attention_job(tmp_path, "long", (1, 8, 2048, 64)))
        worker.limits = Limits(timeout=60)
        after = worker.run(attention_job(tmp_path, "small", (1, 2, 16, 32)))
    finally:
        worker.stop()
    assert result.status == "timeout", result
    assert "no result within 0.5 s" in result.error
    assert after.ok, after.error


def test_build_past_the_memory_cap_is_oom(tmp_path, toolkit_python):
    """A 4096-token build peaks near 2 GB: capped at 1.2 GB it must be stopped as oom."""
    worker = ToolkitWorker(
        toolkit_python("2.3.2"), "2.3.2", tmp_path / "w", Limits(max_memory=parse_size("1.2G"))
    )
    try:
        result = worker.run(attention_job(tmp_path, "big", (1, 8, 4096, 64)))
        after = worker.run(attention_job(tmp_path, "small", (1, 2, 16, 32)))
    finally:
        worker.stop()
    assert result.status == "oom", result
    assert 1200 <= result.peak_rss_mb < 2000
    assert after.ok


@pytest.mark.slow
def test_the_findings_19gb_blow_up_is_stopped_at_the_cap(tmp_path, toolkit_python):
    """FINDINGS: 2.2.0, rk3588, 1 head, 8192 tokens, head dim 32 grew past 19 GB and hung."""
    cap = parse_size("4G")
    available_before = psutil.virtual_memory().available
    worker = ToolkitWorker(
        toolkit_python("2.2.0"), "2.2.0", tmp_path / "w", Limits(timeout=300, max_memory=cap)
    )
    try:
        result = worker.run(attention_job(tmp_path, "blowup", (1, 1, 8192, 32)))
        available_after = psutil.virtual_memory().available
    finally:
        worker.stop()
    assert result.status == "oom", result
    assert result.peak_rss_mb * 2**20 <= cap * 1.25
    assert available_after > available_before - cap * 0.5
