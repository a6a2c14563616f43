"""Worker protocol and fault handling, against the FAKE toolkit in tests/fake_toolkit.

The fake stands in for rknn only here: it lets these tests make a worker crash, hang, hog memory,
print protocol-looking noise, or write garbage, a foreign result, a result naming the wrong job
or an endless line on its results channel. Real-toolkit faults are in test_worker_toolkit.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from pytest_rknn.results.status import Status
from pytest_rknn.toolkit import process_tree, supervisor
from pytest_rknn.toolkit.protocol import Job, Limits, parse_size
from pytest_rknn.toolkit.supervisor import ToolkitWorker, WorkerPool, read_log

FAKE = Path(__file__).with_name("fake_toolkit")


def fake_worker(tmp_path: Path, mode: str, fork: bool = True, **limits: float) -> ToolkitWorker:
    return ToolkitWorker(
        python=Path(sys.executable),
        version="fake",
        workdir=tmp_path / "workers",
        limits=Limits(**{"timeout": 20.0, "startup_timeout": 20.0, **limits}),
        extra_env={"PYTHONPATH": str(FAKE), "FAKE_RKNN_MODE": mode},
        fork=fork,
    )


def make_job(
    tmp_path: Path, name: str = "job", scale: float = 1.0, platform: str = "rk3588"
) -> Job:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really onnx; the fake only checks it exists")
    arrays = [
        np.arange(6, dtype=np.float32).reshape(2, 3) * scale,
        np.ones((1, 2, 3, 4), np.float32),
    ]
    return Job.create(model, platform, tmp_path / name, arrays)


def test_ok_job_round_trips_arrays_and_timings(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, "ok")
    try:
        job = make_job(tmp_path)
        result = worker.run(job)
    finally:
        worker.stop()
    assert result.ok and result.status is None and result.id == job.id, result
    outputs = result.load_outputs()
    np.testing.assert_array_equal(outputs[0], np.arange(6, dtype=np.float32).reshape(2, 3) * 2)
    assert outputs[1].shape == (1, 2, 3, 4)
    assert set(result.timings) >= {"config", "load_onnx", "build", "export_rknn", "inference"}
    assert Path(result.artifact).read_bytes() == b"FAKE-RKNN"
    assert Path(result.artifact).parent == Path(job.outdir)
    assert result.returncodes["build"] == 0
    assert result.peak_rss_mb and result.peak_rss_mb > 1


def test_each_job_has_its_own_folder(tmp_path: Path) -> None:
    first, second = make_job(tmp_path, "same"), make_job(tmp_path, "same")
    assert first.id != second.id and first.outdir != second.outdir
    assert all(Path(p).parent == Path(first.outdir) for p in first.inputs)


def test_toolkit_noise_on_stdout_is_captured_not_parsed(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, "noise")
    try:
        result = worker.run(make_job(tmp_path))
    finally:
        worker.stop()
    assert result.ok
    assert "this is toolkit noise" in result.log
    assert "C-level noise on fd 1" in result.log
    assert "C-level noise on fd 2" in result.log


def test_worker_gets_an_allow_listed_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PYTEST_RKNN_TEST_SECRET", "do-not-leak")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    worker = fake_worker(tmp_path, "env")
    try:
        result = worker.run(make_job(tmp_path))
    finally:
        worker.stop()
    names = next(line for line in result.log.splitlines() if line.startswith("ENV ")).split()
    assert "PYTEST_RKNN_TEST_SECRET" not in names
    # The worker writes its environment's bytecode: the toolkit imports in half the time.
    assert "PYTHONDONTWRITEBYTECODE" not in names
    assert {"PATH", "LC_ALL", "FAKE_RKNN_MODE", "PYTHONPATH"} <= set(names)
    assert set(names) - {"ENV"} <= (
        process_tree.PASSED_ENV
        | {n for n in names if n.startswith("LC_")}
        | {"FAKE_RKNN_MODE", "PYTHONPATH", "PYTHONUNBUFFERED"}
    )


@pytest.mark.parametrize(
    ("mode", "status", "error"),
    [
        ("build-fail", Status.CONVERT_FAIL, "build returned -1"),
        ("raise", Status.CONVERT_FAIL, "IndexError in build"),
        ("runtime-fail", Status.RUNTIME_FAIL, "init_runtime returned -1"),
    ],
)
def test_toolkit_failures_keep_the_worker(tmp_path: Path, mode: str, status: Status, error: str):
    worker = fake_worker(tmp_path, mode)
    try:
        first = worker.run(make_job(tmp_path, "a"))
        pid = worker.proc.pid
        second = worker.run(make_job(tmp_path, "b"))
        assert worker.proc.pid == pid, "a toolkit error must not cost a worker restart"
    finally:
        worker.stop()
    assert (first.status, second.status) == (status, status)
    assert first.outputs == [] and error in first.error
    if mode == "raise":
        assert "Traceback" in first.log and "IndexError" in first.log


def test_a_job_whose_fork_dies_is_a_crash_and_the_next_job_gets_a_new_fork(
    tmp_path: Path,
) -> None:
    """The worker imports the FAKE toolkit once; each job runs in a fork of it, so a job that
    kills its process costs a fork, and the next job starts from the same clean state."""
    marks = tmp_path / "marks"
    marks.mkdir()
    worker = fake_worker(tmp_path, "by-platform:rk3588=crash,rk3566=ok")
    worker.extra_env["FAKE_RKNN_MARKS"] = str(marks)
    try:
        crashed = worker.run(make_job(tmp_path, "a"))
        pid = worker.proc.pid if worker.proc else None
        after = worker.run(make_job(tmp_path, "b", platform="rk3566"))
        again = worker.run(make_job(tmp_path, "c"))
        alive = worker.alive
    finally:
        worker.stop()
    assert crashed.status is Status.CRASH and "worker died with SIGSEGV" in crashed.error
    assert crashed.died_in == "build", "the host knows which toolkit call the fork died in"
    assert after.ok and after.id != crashed.id and after.died_in is None, after
    assert again.status is Status.CRASH and worker.starts == 1 and alive
    assert worker.info["fork"] is True and worker.info["pid"] == pid
    forks = {int(name.split("-")[1]) for name in os.listdir(marks)}
    assert len(forks) == 3 and pid not in forks, "every job in a fork of its own"


def test_a_toolkit_that_leaves_threads_at_import_runs_its_jobs_without_forks(
    tmp_path: Path,
) -> None:
    """A fork would hold only the forking thread (a lock another held stays taken): the worker
    says it does not fork, and a crash then costs the worker, as without forks."""
    worker = fake_worker(tmp_path, "by-platform:rk3588=crash,rk3566=ok")
    worker.extra_env["FAKE_RKNN_IMPORT_THREAD"] = "1"
    try:
        ok = worker.run(make_job(tmp_path, "a", platform="rk3566"))
        forking = worker.info.get("fork")
        crashed = worker.run(make_job(tmp_path, "b"))
    finally:
        worker.stop()
    assert ok.ok and forking is False and worker.info.get("fork") is False
    assert crashed.status is Status.CRASH and "SIGSEGV" in crashed.error
    assert crashed.died_in == "build", "known without forks too"
    assert not worker.alive and worker.starts == 1


@pytest.mark.parametrize(
    ("mode", "status", "limits", "fork"),
    [
        ("crash", Status.CRASH, {}, False),
        ("hang", Status.TIMEOUT, {"timeout": 2.0}, True),
        ("hog", Status.OOM, {"max_memory": parse_size("600M")}, True),
        ("hog", Status.OOM, {"max_memory": parse_size("600M")}, False),
    ],
)
def test_worker_faults_are_statuses_and_the_next_job_gets_a_fresh_worker(
    tmp_path: Path, mode: str, status: Status, limits: dict, fork: bool
) -> None:
    worker = fake_worker(tmp_path, mode, fork=fork, **limits)
    try:
        result = worker.run(make_job(tmp_path, "a"))
        assert result.status is status, result
        assert not worker.alive
        worker.extra_env["FAKE_RKNN_MODE"] = "ok"
        after = worker.run(make_job(tmp_path, "b"))
    finally:
        worker.stop()
    assert after.ok
    assert worker.starts == 2
    if status is Status.CRASH:
        assert "SIGSEGV" in result.error and result.died_in == "build"
    else:
        assert result.died_in is None, "killed by the host: no death of its own"
    if status is Status.OOM:
        assert result.peak_rss_mb >= 600


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("garbage", "a line that is not JSON"),
        ("extra-line", "got a result for job 'someone-else' while waiting for"),
        ("forged-id", "does not name that job inside"),
        ("huge-line", "a message of over"),
    ],
)
def test_a_bad_line_on_the_results_channel_costs_the_worker_not_a_result(
    tmp_path: Path, mode: str, reason: str
) -> None:
    """Every job after the bad line gets its own answer: nothing shifts by one."""
    worker = fake_worker(tmp_path, mode)
    try:
        bad_job = make_job(tmp_path, "bad")
        bad = worker.run(bad_job)
        worker.extra_env["FAKE_RKNN_MODE"] = "ok"
        jobs = [make_job(tmp_path, f"next{i}", scale=i + 2.0) for i in range(3)]
        after = [worker.run(job) for job in jobs]
    finally:
        worker.stop()
    assert bad.status is Status.CRASH and bad.id == bad_job.id
    assert reason in bad.error and "worker replaced" in bad.error
    assert bad.outputs == []
    for i, (job, result) in enumerate(zip(jobs, after, strict=True)):
        assert result.ok and result.id == job.id
        first = result.load_outputs()[0]
        np.testing.assert_array_equal(first, np.arange(6).reshape(2, 3) * (i + 2.0) * 2)
    assert worker.starts == 2


@pytest.mark.parametrize("fork", [False, True])
def test_a_line_nobody_asked_for_replaces_the_worker_before_the_next_job(
    tmp_path: Path, fork: bool
) -> None:
    """Without forks the stray line of a job's thread replaces the worker; with forks the
    thread ends with its job's fork before it can write (the worker stays)."""
    worker = fake_worker(tmp_path, "late-line", fork=fork)
    try:
        first = worker.run(make_job(tmp_path, "a"))
        worker.extra_env["FAKE_RKNN_MODE"] = "ok"
        import time

        time.sleep(0.6)
        job = make_job(tmp_path, "b", scale=5.0)
        second = worker.run(job)
    finally:
        worker.stop()
    assert first.ok
    assert second.ok and second.id == job.id
    np.testing.assert_array_equal(second.load_outputs()[0], np.arange(6).reshape(2, 3) * 10.0)
    assert worker.starts == (1 if fork else 2)


def test_a_worker_of_another_protocol_is_an_env_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(supervisor, "PROTOCOL", 99)
    worker = fake_worker(tmp_path, "ok")
    result = worker.run(make_job(tmp_path))
    assert result.status is Status.ENV_ERROR
    assert "host speaks protocol 99" in result.error


def test_broken_environment_is_env_error_with_the_fix(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, "import-error")
    result = worker.run(make_job(tmp_path))
    assert result.status is Status.ENV_ERROR
    assert "fake toolkit told to fail its import" in result.error
    assert "pytest-rknn envs --rebuild --toolkits fake" in result.error


def test_missing_interpreter_is_env_error(tmp_path: Path) -> None:
    worker = ToolkitWorker(python=tmp_path / "nope" / "python", version="9.9", workdir=tmp_path)
    result = worker.run(make_job(tmp_path))
    assert result.status is Status.ENV_ERROR
    assert "--rebuild --toolkits 9.9" in result.error


def test_pool_names_unknown_versions(tmp_path: Path) -> None:
    pool = WorkerPool(tmp_path)
    pool.add("2.3.2", Path(sys.executable))
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


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -1.0])
def test_limits_refuse_non_finite_or_non_positive_timeouts(value: float) -> None:
    with pytest.raises(ValueError, match="finite number of seconds"):
        Limits(timeout=value)


def test_the_worker_script_and_the_host_agree_on_their_constants() -> None:
    """remote.py imports nothing of the host's: its copies must be the host's values."""
    from pytest_rknn.toolkit import protocol, remote

    assert (remote.PROTOCOL, remote.CALL_FILE) == (protocol.PROTOCOL, protocol.CALL_FILE)


class _FakeRknnThatReadsItsCall:
    """A FAKE stand-in for rknn's RKNN class, in-process: build records what the job's
    ``toolkit-call`` file says while it runs."""

    seen: list[str | None] = []

    def __init__(self, verbose: bool = False) -> None:
        self.folder = ""

    def config(self, **options: object) -> int:
        return 0

    def load_onnx(self, model: str) -> int:
        self.folder = os.path.dirname(model)
        return 0

    def build(self, **options: object) -> int:
        path = Path(self.folder) / "toolkit-call"
        self.seen.append(path.read_text() if path.is_file() else None)
        return -1

    def release(self) -> None:
        pass


@pytest.mark.parametrize("writable", [True, False])
def test_the_call_under_way_is_noted_and_a_note_that_cannot_be_written_fails_nothing(
    tmp_path: Path, writable: bool
) -> None:
    from pytest_rknn.toolkit import remote
    from pytest_rknn.toolkit.protocol import call_under_way

    job = make_job(tmp_path, "a")
    (Path(job.outdir) / "model.onnx").write_bytes(b"")
    if not writable:
        (Path(job.outdir) / "toolkit-call").mkdir()
    wire = {**job.to_wire(), "onnx": str(Path(job.outdir) / "model.onnx")}
    _FakeRknnThatReadsItsCall.seen = []
    result = remote.run_job(wire, _FakeRknnThatReadsItsCall)
    assert result["failed_phase"] == "build" and result["error"] == "build returned -1"
    if writable:
        assert _FakeRknnThatReadsItsCall.seen == ["build"]
        assert call_under_way(job) is None, "empty between calls"
    else:
        assert _FakeRknnThatReadsItsCall.seen == [None]
