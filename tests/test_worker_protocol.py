"""Worker protocol and fault handling, against the FAKE toolkit in tests/fake_toolkit.

The fake stands in for rknn only here: it lets these tests make a worker crash, hang, hog memory
or print protocol-looking noise on demand. Real-toolkit faults are in test_worker_toolkit.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pytest_rknn.protocol import Job, Limits, parse_size
from pytest_rknn.workers import ToolkitWorker, WorkerPool, read_log

FAKE = Path(__file__).with_name("fake_toolkit")


def fake_worker(tmp_path: Path, mode: str, **limits: float) -> ToolkitWorker:
    return ToolkitWorker(
        python=Path(sys.executable),
        version="fake",
        workdir=tmp_path / "workers",
        limits=Limits(**{"timeout": 20.0, "startup_timeout": 20.0, **limits}),
        extra_env={"PYTHONPATH": str(FAKE), "FAKE_RKNN_MODE": mode},
    )


def make_job(tmp_path: Path, name: str = "job") -> Job:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really onnx; the fake only checks it exists")
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((1, 2, 3, 4), np.float32)]
    return Job.create(model, "rk3588", tmp_path / name, arrays)


def test_ok_job_round_trips_arrays_and_timings(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, "ok")
    try:
        result = worker.run(make_job(tmp_path))
    finally:
        worker.stop()
    assert result.status == "ok", result
    outputs = result.load_outputs()
    np.testing.assert_array_equal(outputs[0], np.arange(6, dtype=np.float32).reshape(2, 3) * 2)
    assert outputs[1].shape == (1, 2, 3, 4)
    assert set(result.timings) >= {"config", "load_onnx", "build", "export_rknn", "inference"}
    assert Path(result.artifact).read_bytes() == b"FAKE-RKNN"
    assert result.returncodes["build"] == 0
    assert result.peak_rss_mb and result.peak_rss_mb > 1


def test_toolkit_noise_on_stdout_is_captured_not_parsed(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, "noise")
    try:
        result = worker.run(make_job(tmp_path))
    finally:
        worker.stop()
    assert result.status == "ok"
    assert "this is toolkit noise" in result.log
    assert "C-level noise on fd 1" in result.log
    assert "C-level noise on fd 2" in result.log


@pytest.mark.parametrize(
    ("mode", "status", "error"),
    [
        ("build-fail", "convert-fail", "build returned -1"),
        ("raise", "convert-fail", "IndexError in build"),
        ("runtime-fail", "runtime-fail", "init_runtime returned -1"),
    ],
)
def test_toolkit_failures_keep_the_worker(tmp_path: Path, mode: str, status: str, error: str):
    worker = fake_worker(tmp_path, mode)
    try:
        first = worker.run(make_job(tmp_path, "a"))
        pid = worker.proc.pid
        second = worker.run(make_job(tmp_path, "b"))
        assert worker.proc.pid == pid, "a toolkit error must not cost a worker restart"
    finally:
        worker.stop()
    assert (first.status, second.status) == (status, status)
    assert error in first.error
    if mode == "raise":
        assert "Traceback" in first.log and "IndexError" in first.log


@pytest.mark.parametrize(
    ("mode", "status", "limits"),
    [
        ("crash", "crash", {}),
        ("hang", "timeout", {"timeout": 2.0}),
        ("hog", "oom", {"max_memory": parse_size("600M")}),
    ],
)
def test_worker_faults_are_statuses_and_the_next_job_gets_a_fresh_worker(
    tmp_path: Path, mode: str, status: str, limits: dict
) -> None:
    worker = fake_worker(tmp_path, mode, **limits)
    try:
        result = worker.run(make_job(tmp_path, "a"))
        assert result.status == status, result
        assert not worker.alive
        worker.extra_env["FAKE_RKNN_MODE"] = "ok"
        after = worker.run(make_job(tmp_path, "b"))
    finally:
        worker.stop()
    assert after.status == "ok"
    assert worker.starts == 2
    if status == "crash":
        assert "SIGSEGV" in result.error
    if status == "oom":
        assert result.peak_rss_mb >= 600


def test_broken_environment_is_env_error_with_the_fix(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, "import-error")
    result = worker.run(make_job(tmp_path))
    assert result.status == "env-error"
    assert "fake toolkit told to fail its import" in result.error
    assert "pytest-rknn envs --rebuild --toolkits fake" in result.error


def test_missing_interpreter_is_env_error(tmp_path: Path) -> None:
    worker = ToolkitWorker(python=tmp_path / "nope" / "python", version="9.9", workdir=tmp_path)
    result = worker.run(make_job(tmp_path))
    assert result.status == "env-error"
    assert "--rebuild --toolkits 9.9" in result.error


def test_pool_names_unknown_versions(tmp_path: Path) -> None:
    pool = WorkerPool({"2.3.2": Path(sys.executable)}, tmp_path)
    with (
        pool,
        pytest.raises(KeyError, match=r"no toolkit environment for 2\.0\.0 \(have: 2\.3\.2\)"),
    ):
        pool.run("2.0.0", make_job(tmp_path))


def test_long_logs_keep_head_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "toolkit.log"
    log.write_text("HEAD\n" + "x" * 5000 + "\nTAIL\n")
    text = read_log(log, head=100, tail=100)
    assert text.startswith("HEAD") and text.endswith("TAIL\n") and "bytes cut" in text
    assert len(text) < 300


@pytest.mark.parametrize(
    ("text", "size"), [("8G", 8 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29)]
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="use a number with K, M, G or T"):
        parse_size("lots")
