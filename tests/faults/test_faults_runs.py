"""Faults in a run: on a worker's results channel, a worker or pytest killed, an interrupt.

The faults: garbage, a foreign result, a result naming another job, an endless line and a late
line on a worker's results channel; SIGKILL of a worker mid-job; SIGKILL of pytest halfway (then
``pytest-rknn merge`` and the next run's recovery, through an unreadable and a torn journal
line); SIGINT halfway; a second writer on the same matrix; a tiny filesystem that fills up.
Each ends in a matrix that :func:`faults_support.check` finds whole (see there).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import time

import psutil
import pytest
from faults_support import (
    TALLY,
    WAIT,
    Run,
    at,
    check,
    kill_stray_workers,
    marks,
    merge,
    run,
    start,
    wait_until,
)

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status

# ---------------------------------------------------------------------------------------------
# Faults on the results channel, and a worker killed mid-job
# ---------------------------------------------------------------------------------------------

CHANNEL_FAULTS = {
    "garbage": "a line that is not JSON",
    "extra-line": "got a result for job 'someone-else'",
    "forged-id": "does not name that job inside",
    "huge-line": "a message of over",
}


@pytest.mark.parametrize("mode", list(CHANNEL_FAULTS))
def test_a_bad_line_on_the_results_channel_is_a_crash_of_that_cell_only(suite, mode) -> None:
    faulty = at("2.5.0", "rk3588")
    result = run(suite, "--rknn-matrix=m.json", FAKE_RKNN_MODES=f"2.5.0=by-platform:rk3588={mode}")
    result.clean()
    assert result.ret == 1, result.out[-2000:]
    found = check(suite, suite.path / "m.json", result.finished, faulty)
    hit = [cell for cell in found.values() if faulty(cell)]
    TALLY.faults += len(hit)
    assert len(found) == 8 and len(hit) == 2
    for cell in hit:
        assert cell.status is Status.CRASH, (cell.status, cell.reason)
        assert "protocol violation" in cell.reason and CHANNEL_FAULTS[mode] in cell.reason


def test_a_line_nobody_asked_for_never_becomes_a_result(suite) -> None:
    """A line after the answer may cost the job that is running when it arrives, nothing more."""
    result = run(suite, "--rknn-matrix=m.json", FAKE_RKNN_MODES="2.5.0=late-line+simulate")
    result.clean()
    late = [m for m in marks(suite) if m[2] == "late-line"]
    TALLY.faults += len(late)
    assert len(late) >= 4
    found = check(suite, suite.path / "m.json", result.finished, lambda c: c.toolkit == "2.5.0")
    assert len(found) == 8
    for cell in found.values():
        if cell.status is not Status.PASS:
            assert cell.toolkit == "2.5.0" and cell.status is Status.CRASH
            assert "protocol violation" in cell.reason, cell.reason


def test_a_worker_killed_mid_job_is_a_crash_and_the_next_cells_are_fine(suite) -> None:
    faulty = at("2.5.0", "rk3588")
    pending = start(suite, "--rknn-matrix=m.json", FAKE_RKNN_MODES="2.5.0=by-platform:rk3588=hang")
    killed: set[int] = set()
    deadline = time.monotonic() + WAIT
    while pending.ret is None and time.monotonic() < deadline:
        for pid, _, mode in marks(suite):
            if mode == "hang" and pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.02)
    result = pending.wait(10)
    TALLY.faults += len(killed)
    result.clean()
    assert result.ret == 1 and len(killed) == 2, (killed, result.out[-2000:])
    found = check(suite, suite.path / "m.json", result.finished, faulty)
    assert len(found) == 8
    for cell in found.values():
        if faulty(cell):
            assert cell.status is Status.CRASH and "worker died with SIGKILL" in cell.reason


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("where", ["fork", "worker"])
def test_a_job_ends_with_the_pytest_that_asked_for_it(suite, where) -> None:
    """pytest SIGKILLed (a CI timeout, the OOM killer) while a job hangs: the job's process and
    its worker end at once, rather than convert on with no memory cap and no timeout."""
    in_worker = {"PYTEST_RKNN_FORK": "0"} if where == "worker" else {}
    pending = start(suite, "--rknn-matrix=m.json", FAKE_RKNN_MODE="hang", **in_worker)
    wait_until(lambda: len(marks(suite)) >= 1, pending, "the first job started")
    ((job, _, _),) = marks(suite)
    worker = psutil.Process(job).ppid() if where == "fork" else job
    assert (worker != job) is (where == "fork")
    assert "remote.py" in " ".join(psutil.Process(worker).cmdline())
    pending.proc.kill()
    pending.wait(10)
    TALLY.faults += 1
    deadline = time.monotonic() + 10
    while not (_gone(job) and _gone(worker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in (job, worker) if not _gone(pid)]
    for pid in left:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    assert not left, f"still running 10 s after pytest was killed: {left}"


# ---------------------------------------------------------------------------------------------
# pytest killed or interrupted halfway, and two writers
# ---------------------------------------------------------------------------------------------


def _halfway(suite: pytest.Pytester, *args: str, jobs: int = 4) -> Run:
    """A slow run, caught while the FAKE toolkit holds its ``jobs``-th job (and every later
    one) until the file ``gate`` in the suite exists."""
    pending = start(
        suite,
        "--rknn-matrix=m.json",
        *args,
        FAKE_RKNN_MODE="slow",
        FAKE_RKNN_GATE=str(suite.path / "gate"),
        FAKE_RKNN_GATE_AT=str(jobs),
    )
    wait_until(lambda: len(marks(suite)) >= jobs, pending, f"job {jobs} started")
    return pending


def test_sigkill_of_pytest_leaves_a_journal_that_merge_and_the_next_run_recover(suite) -> None:
    killed = _halfway(suite)
    killed.proc.kill()
    killed.wait(10)
    kill_stray_workers(suite)
    finished = killed.finished
    assert len(finished) == 3, finished
    matrix, journal = suite.path / "m.json", suite.path / "m.json.journal"
    assert matrix.exists() and journal.exists()
    check(suite, matrix, finished, complete=False)
    # A line no parser can read, and what a writer killed mid-line leaves: a torn last line.
    last = journal.read_bytes().splitlines()[-1]
    with journal.open("ab") as handle:
        handle.write(b"[" * 100_000 + b"\n" + last[: len(last) // 2])
    TALLY.faults += 3

    merged = merge(suite, "m.json", "-o", "merged.json")
    assert merged.returncode == 0, merged.stderr
    check(suite, suite.path / "merged.json", finished)
    alone = merge(suite, "m.json.journal", "-o", "journal.json")
    assert alone.returncode == 0, alone.stderr
    check(suite, suite.path / "journal.json", finished)
    for name in ("merged.json", "journal.json"):
        meta = Matrix.load(suite.path / name).meta
        assert meta["seed"] == 0 and meta["toolkits"] == ["2.3.2", "2.5.0"]
        assert meta["platforms"] == ["rk3566", "rk3588"]

    again = run(suite, "--rknn-matrix=m.json")
    again.clean()
    assert again.ret == 0, again.out[-2000:]
    (kept,) = suite.path.glob("m.interrupted-*.json")
    assert f"recovered 3 cells of an interrupted run into {kept.name}" in again.out
    recovered = check(suite, kept, finished)
    assert Matrix.load(kept).meta["journal"]["skipped_lines"] == 2
    assert all(cell.status is Status.PASS for cell in recovered.values())
    assert not list(suite.path.glob("*.journal")), "the journal was rebuilt and removed"
    found = check(suite, matrix, again.finished)
    assert len(found) == 8 and Matrix.load(matrix).meta["complete"] is True


def test_sigint_halfway_writes_the_finished_cells_as_an_incomplete_matrix(suite) -> None:
    interrupted = _halfway(suite)
    interrupted.proc.send_signal(signal.SIGINT)
    interrupted.wait(30)
    TALLY.faults += 1
    assert interrupted.ret == pytest.ExitCode.INTERRUPTED, interrupted.out[-2000:]
    assert "(3 cells; incomplete: the run was interrupted)" in interrupted.out
    assert "INTERNALERROR" not in interrupted.out + interrupted.err
    finished = interrupted.finished
    assert len(finished) == 3, finished
    found = check(suite, suite.path / "m.json", finished)
    assert len(found) == 3
    meta = Matrix.load(suite.path / "m.json").meta
    assert meta["complete"] is False and meta["exitstatus"] == pytest.ExitCode.INTERRUPTED
    assert not (suite.path / "m.json.journal").exists()


def test_a_second_writer_is_refused_and_the_first_run_is_unharmed(suite) -> None:
    first = _halfway(suite, jobs=1)
    second = run(suite, "--rknn-matrix=m.json")
    TALLY.faults += 1
    (suite.path / "gate").touch()
    first.wait()
    assert second.ret == pytest.ExitCode.USAGE_ERROR, second.out[-2000:] + second.err
    errors = [line for line in (second.out + second.err).splitlines() if "ERROR:" in line]
    assert len(errors) == 1 and errors[0].startswith("ERROR: --rknn-matrix m.json is being")
    second.clean()
    assert second.finished == []
    first.clean()
    assert first.ret == 0, first.out[-2000:]
    found = check(suite, suite.path / "m.json", first.finished)
    assert len(found) == 8 and Matrix.load(suite.path / "m.json").meta["complete"] is True
    assert not (suite.path / "m.json.journal").exists()


# ---------------------------------------------------------------------------------------------
# A tiny filesystem that fills up
# ---------------------------------------------------------------------------------------------

# Mount a tmpfs of SIZE on DIR in a private mount namespace, put the files of SEED there, run
# the command, and copy what DIR holds to OUT before the namespace (and the tmpfs) is gone.
TMPFS = """
size=$1 dir=$2 seed=$3 out=$4
shift 4
mount -t tmpfs -o "size=$size" tmpfs "$dir" || { echo "cannot mount a tmpfs on $dir" >&2; exit 97; }
cp -a "$seed/." "$dir/" || exit 98
"$@"
status=$?
cp -a "$dir/." "$out/"
exit $status
"""


def _tiny(suite: pytest.Pytester, size: str, seed: str) -> Run:
    """A 12-cell run whose --rknn-matrix is on a tmpfs of ``size`` holding the files of seed."""
    for name in ("tiny", "out", seed):
        (suite.path / name).mkdir(exist_ok=True)
    unshare = shutil.which("unshare")
    assert unshare, "the full-filesystem fault needs util-linux unshare"
    prefix = [unshare, "-rm", "sh", "-c", TMPFS, "sh", size, "tiny", seed, "out"]
    result = start(suite, "--rknn-examples=3", "--rknn-matrix=tiny/m.json", prefix=prefix).wait()
    assert result.ret not in (97, 98), f"no tmpfs in a user namespace here: {result.err}"
    TALLY.faults += 1
    result.clean()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.out[-2000:]
    assert len(result.finished) == 12
    return result


def test_a_full_filesystem_keeps_the_journal_and_never_truncates_the_matrix(suite) -> None:
    """12 cells on a filesystem that holds the seed matrix and the run's journal, but not a
    second matrix beside them (its size follows the size of a cell's record)."""
    good = run(suite, "--rknn-examples=3", "--rknn-no-cache", "--rknn-matrix=seed/m.json")
    assert good.ret == 0, good.out[-2000:]
    before = (suite.path / "seed" / "m.json").read_bytes()
    result = _tiny(suite, f"{len(before) * 3 // 2 // 1024}k", "seed")
    finished = result.finished
    said = [line for line in result.out.splitlines() if "could not write" in line]
    assert len(said) == 1, result.out[-2000:]
    assert re.fullmatch(
        r"pytest-rknn: could not write tiny/m\.json: No space left on device \(\d+ MB free\); "
        r"the journal tiny/m\.json\.journal keeps every finished cell",
        said[0],
    ), said[0]
    out = suite.path / "out"
    check(suite, Matrix.from_journal(out / "m.json.journal"), finished)
    left = out / "m.json"
    if left.read_bytes() != before:  # replaced by a complete, earlier write of this run
        check(suite, left, finished, complete=False)
    assert merge(suite, "out/m.json", "-o", "merged.json").returncode == 0
    check(suite, suite.path / "merged.json", finished)


def test_a_filesystem_too_small_for_anything_ends_the_run_honestly(suite) -> None:
    """12 KB: neither the journal nor the matrix fits; what is there is still readable."""
    result = _tiny(suite, "12k", "nothing")
    said = [line for line in result.out.splitlines() if "could not write" in line]
    assert len(said) == 2, result.out[-2000:]
    assert all(line.endswith("; no file holds every finished cell") for line in said), said
    out = suite.path / "out"
    check(suite, Matrix.from_journal(out / "m.json.journal"), result.finished, complete=False)
    if (out / "m.json").exists():
        check(suite, out / "m.json", result.finished, complete=False)
