"""Fault injection, end to end: whatever breaks, the matrix holds each finished cell once, its own.

Every test runs real pytest processes on a pytester suite with ``-p fake_toolkits`` (only the
toolkit is FAKE, see ``tests/fake_toolkit``: the workers, protocol, cache, recorder, journal and
matrix are the real ones), injects one kind of fault, and then checks the same invariants with
:func:`check`: the matrix parses and validates; every finished item's cell is in it exactly once
under its own id; no cell carries another job's result (its job folder ran its own model for its
own platform, its outputs have its variant's shape, its job id is its own, and in ``simulate``
mode, where the fake computes the right answer, every cell that was not faulted passes).

The faults: garbage, a foreign result, a result naming another job, an endless line and a late
line on a worker's results channel; SIGKILL of a worker mid-job; SIGKILL of pytest halfway (then
``pytest-rknn merge`` and the next run's recovery, through an unreadable and a torn journal
line); SIGINT halfway; a second writer on the same matrix; a tiny filesystem that fills up;
corrupt conversion-cache entries; identical models under two names; and bad inputs (non-finite or
tiny limits and tolerance bounds, colliding paths, model folders, corrupt baselines), each of
which must be one ``ERROR:`` line. The module's teardown prints the tally: faults injected,
bad inputs tried, cells lost, cells misattributed (the last two are 0 or a test has failed).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
from fake_support import FAKE_DIR, use_fake
from fake_support import SELECTION as FAKE_SELECTION
from process_support import interruptible

from pytest_rknn.results.cell import KEY_FIELDS, CellRecord
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status
from pytest_rknn.variants.spec import VariantSpec

CELLS = (Path(__file__).parent / "data" / "plugin" / "suite_cells.py").read_text()
# Like tests/data/plugin/suite_conftest.py, with the log file per run (runs overlap here).
CONFTEST = '''
"""Appends the node id of every finished item to the file FAULTS_FINISHED names."""
import os

import pytest


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and not report.passed):
        with open(os.environ["FAULTS_FINISHED"], "a", encoding="utf-8") as log:
            log.write(report.nodeid + "\\n")
'''
# Two toolkits, two platforms, two drawn manual variants: 8 cells (--rknn-examples=3: 12).
SELECTION = (*FAKE_SELECTION, "--rknn-timeout=60")
WAIT = 60.0


@dataclass
class Tally:
    faults: int = 0
    bad_inputs: int = 0
    lost: int = 0
    misattributed: int = 0

    def line(self) -> str:
        return (
            f"faults injected: {self.faults}, bad inputs tried: {self.bad_inputs}, "
            f"cells lost: {self.lost}, cells misattributed: {self.misattributed}"
        )


TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the tally once the module's tests are done."""
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\nfault suite: {TALLY.line()}", flush=True)


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    use_fake(monkeypatch)
    marks = pytester.path / "marks"
    marks.mkdir()
    monkeypatch.setenv("FAKE_RKNN_MARKS", str(marks))
    pytester.makepyfile(test_rknn_cells=CELLS)
    pytester.makeconftest(CONFTEST)
    return pytester


# ---------------------------------------------------------------------------------------------
# Runs that can be waited for, killed or interrupted
# ---------------------------------------------------------------------------------------------

_numbers = itertools.count()


@dataclass
class Run:
    """One pytest process on the suite; its output and finished items are files in the suite."""

    proc: subprocess.Popen
    folder: Path
    name: str

    def wait(self, timeout: float = 120.0) -> Run:
        self.proc.wait(timeout)
        return self

    @property
    def ret(self) -> int | None:
        return self.proc.poll()

    @property
    def out(self) -> str:
        return (self.folder / f"{self.name}.out").read_text(errors="replace")

    @property
    def err(self) -> str:
        return (self.folder / f"{self.name}.err").read_text(errors="replace")

    @property
    def finished(self) -> list[str]:
        """Cell ids of the items this run reported finished, in order."""
        log = self.folder / f"{self.name}.finished"
        lines = log.read_text().splitlines() if log.exists() else []
        return [line.split("test_cell[", 1)[1][:-1] for line in lines if "test_cell[" in line]

    def clean(self) -> None:
        text = self.out + self.err
        assert "INTERNALERROR" not in text and "Traceback" not in text, text[-3000:]


def start(suite: pytest.Pytester, *args: str, prefix: Iterable[str] = (), **env: str) -> Run:
    """Start pytest on the suite (``prefix``: a command it runs under, e.g. ``unshare``)."""
    name = f"run{next(_numbers)}"
    folder = suite.path
    command = [*prefix, sys.executable, "-m", "pytest", *SELECTION, f"--basetemp={name}-tmp"]
    environ = {**os.environ, "FAULTS_FINISHED": str(folder / f"{name}.finished"), **env}
    with (folder / f"{name}.out").open("wb") as out, (folder / f"{name}.err").open("wb") as err:
        proc = subprocess.Popen(
            [*command, *args],
            cwd=folder,
            stdout=out,
            stderr=err,
            env=environ,
            preexec_fn=interruptible,
        )
    return Run(proc, folder, name)


def run(suite: pytest.Pytester, *args: str, **env: str) -> Run:
    return start(suite, *args, **env).wait()


def marks(suite: pytest.Pytester) -> list[tuple[int, str, str]]:
    """(worker pid, platform, mode) of every job whose build the FAKE toolkit started."""
    found = []
    for path in sorted((suite.path / "marks").iterdir()):
        _, pid, platform, mode = path.name.split("-", 3)
        found.append((int(pid), platform, mode))
    return found


def wait_until(condition: Callable[[], bool], run: Run, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if run.ret is not None:
            pytest.fail(f"the run ended (exit {run.ret}) before {what}:\n{run.out[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {WAIT} s")
        time.sleep(0.02)


def kill_stray_workers(suite: pytest.Pytester) -> None:
    """SIGKILL the FAKE workers a killed run left behind (by pid, each checked to be ours)."""
    for pid in {pid for pid, _, _ in marks(suite)}:
        try:
            proc = psutil.Process(pid)
            if any("remote.py" in part for part in proc.cmdline()):
                proc.kill()
        except psutil.Error:
            pass


def merge(suite: pytest.Pytester, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest_rknn.cli", "merge", *args],
        cwd=suite.path,
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---------------------------------------------------------------------------------------------
# The invariants
# ---------------------------------------------------------------------------------------------


def _misattributed(
    cell: CellRecord, identities: dict[str, dict], fresh: Counter, faulty: bool
) -> list[str]:
    """Why ``cell`` may hold another job's result (empty: it is provably its own)."""
    why = []
    own_job = bool(cell.job_id) and not cell.cached
    if own_job and fresh[cell.job_id] > 1:
        why.append(f"job {cell.job_id} is held by {fresh[cell.job_id]} cells")
    if cell.artifact and Path(cell.artifact).parent.name != cell.job_id:
        why.append(f"artifact {cell.artifact} is not in job {cell.job_id}'s folder")
    identity = identities.get(cell.job_id or "") if own_job else None
    if identity is not None:
        ran = (identity["platform"], Path(identity["model"]).stem)
        if ran != (cell.platform, cell.variant_id):
            why.append(f"job {cell.job_id} converted {ran[1]} for {ran[0]}")
    elif own_job and cell.status is Status.PASS:
        why.append(f"no folder of job {cell.job_id} says what it converted")
    if cell.status in (Status.PASS, Status.TOLERANCE_FAIL):
        if cell.variant.get("form") != "model" and "output0" in cell.metrics:
            shape = VariantSpec.from_dict(cell.variant).output_shape()
            got = tuple(cell.metrics["output0"]["actual_shape"])
            if got != shape:
                why.append(f"outputs of shape {got}, its variant gives {shape}")
        if not faulty and cell.status is Status.TOLERANCE_FAIL:
            why.append("the FAKE toolkit simulated it right, yet its outputs are off")
    return why


def check(
    suite: pytest.Pytester,
    source: Path | Matrix,
    finished: Iterable[str],
    faulty: Callable[[CellRecord], bool] | None = None,
    complete: bool = True,
) -> dict[str, CellRecord]:
    """Check the invariants on a matrix file (or a matrix rebuilt from a journal).

    ``finished``: the cell ids of the items the run reported finished; each must be in the
    matrix exactly once (``complete=False``: at most once, for a file written before the end),
    and the matrix holds no other cell. ``faulty``: the cells a fault was injected into (None:
    none); every other cell must pass, as the FAKE toolkit simulates right. Lost and
    misattributed cells are counted in the tally before the assertions.
    """
    if isinstance(source, Matrix):
        matrix = source
        ids = [cell.id for cell in matrix.cells]
    else:
        matrix = Matrix.load(source)  # parses and validates against the schema
        raw = json.loads(source.read_text())
        ids = ["-".join(cell[k] for k in KEY_FIELDS) for cell in raw["cells"]]
    counts = Counter(ids)
    wanted = set(finished)
    lost = sorted(i for i in wanted if counts[i] != 1 and (complete or counts[i] > 1))
    strays = sorted(i for i in counts if i not in wanted)
    identities = {
        path.parent.name: json.loads(path.read_text())
        for path in suite.path.rglob("FAKE-identity.json")
    }
    fresh = Counter(c.job_id for c in matrix.cells if c.job_id and not c.cached)
    wrong = {}
    for cell in matrix.cells:
        why = _misattributed(cell, identities, fresh, faulty is not None and faulty(cell))
        if why:
            wrong[cell.id] = why
    TALLY.lost += len(lost)
    TALLY.misattributed += len(wrong)
    assert not lost, f"cells lost or duplicated: {lost}"
    assert not wrong, f"cells holding another job's result: {wrong}"
    assert not strays, f"cells no finished item stands for: {strays}"
    failed = {
        cell.id: (cell.status.value, cell.reason)
        for cell in matrix.cells
        if cell.status is not Status.PASS and not (faulty is not None and faulty(cell))
    }
    assert not failed, f"cells without a fault that did not pass: {failed}"
    return {cell.id: cell for cell in matrix.cells}


def at(toolkit: str, platform: str) -> Callable[[CellRecord], bool]:
    return lambda cell: (cell.toolkit, cell.platform) == (toolkit, platform)


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
    """12 cells: the journal (18 KB) fits in 48 KB, the journal and two matrices (22 KB) not."""
    good = run(suite, "--rknn-examples=3", "--rknn-no-cache", "--rknn-matrix=seed/m.json")
    assert good.ret == 0, good.out[-2000:]
    before = (suite.path / "seed" / "m.json").read_bytes()
    result = _tiny(suite, "48k", "seed")
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


# ---------------------------------------------------------------------------------------------
# Corrupt conversion-cache entries
# ---------------------------------------------------------------------------------------------


def _entries(suite: pytest.Pytester) -> list[Path]:
    folder = suite.path / ".pytest_cache" / "v" / "pytest-rknn" / "conversions"
    return sorted(folder.iterdir())


def _outputs(entry: Path) -> Path:
    root = entry.parents[3] / "d" / "pytest-rknn-outputs"
    return root / entry.name / "output0.npy"


def _edit(**changes: object) -> Callable[[Path, list[Path]], None]:
    def corrupt(entry: Path, entries: list[Path]) -> None:
        data = json.loads(entry.read_text())
        for name, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(name), dict):
                data[name] = {**data[name], **value}
            else:
                data[name] = value
        entry.write_text(json.dumps(data))

    return corrupt


def _text(text: str | bytes) -> Callable[[Path, list[Path]], None]:
    def corrupt(entry: Path, entries: list[Path]) -> None:
        entry.write_bytes(text if isinstance(text, bytes) else text.encode())

    return corrupt


def _other_entry(entry: Path, entries: list[Path]) -> None:
    other = entries[(entries.index(entry) + 1) % len(entries)]
    entry.write_bytes(other.read_bytes())


def _changed_outputs(entry: Path, entries: list[Path]) -> None:
    path = _outputs(entry)
    np.save(path, np.load(path) * 1.5)


def _deleted_outputs(entry: Path, entries: list[Path]) -> None:
    _outputs(entry).unlink()


def _truncated_outputs(entry: Path, entries: list[Path]) -> None:
    path = _outputs(entry)
    path.write_bytes(path.read_bytes()[:100])


def _swapped_outputs(entry: Path, entries: list[Path]) -> None:
    """Swap the outputs with another entry's whose bytes differ (another variant's)."""
    mine = _outputs(entry)
    other = next(_outputs(e) for e in entries if _outputs(e).read_bytes() != mine.read_bytes())
    data, theirs = mine.read_bytes(), other.read_bytes()
    mine.write_bytes(theirs)
    other.write_bytes(data)


def _folder(entry: Path, entries: list[Path]) -> None:
    entry.unlink()
    entry.mkdir()


CORRUPTIONS: dict[str, Callable[[Path, list[Path]], None]] = {
    "not-json": _text("{not json"),
    "not-utf8": _text(b'{"schema": "\xff\xfe"}'),
    "nested-deep": _text("[" * 100_000 + "]" * 100_000),
    "null": _text("null"),
    "a-list": _text("[1, 2]"),
    "empty": _text(""),
    "wrong-schema": _edit(schema="pytest-rknn/matrix"),
    "wrong-version": _edit(version=99),
    "another-key-inside": _other_entry,
    "job-id-a-number": _edit(job_id=12),
    "timing-a-string": _edit(timings={"wall": "fast"}),
    "returncode-a-float": _edit(returncodes={"build": 0.5}),
    "verdict-pass": _edit(status="pass", outputs=[]),
    "verdict-tolerance-fail": _edit(status="tolerance-fail", outputs=[]),
    "verdict-unsupported": _edit(status="unsupported", outputs=[]),
    "status-unknown": _edit(status="splendid"),
    "crash-cached": _edit(status="crash", outputs=[]),
    "no-outputs": _edit(outputs=[]),
    "digest-a-number": _edit(outputs=[7]),
    "changed-outputs": _changed_outputs,
    "deleted-outputs": _deleted_outputs,
    "truncated-outputs": _truncated_outputs,
    "swapped-outputs": _swapped_outputs,
    "a-folder": _folder,
}


def test_corrupt_cache_entries_are_converted_again_never_trusted(suite) -> None:
    twelve = "--rknn-examples=3"
    cold = run(suite, twelve, "--rknn-matrix=cold.json")
    assert cold.ret == 0, cold.out[-2000:]
    found = check(suite, suite.path / "cold.json", cold.finished)
    statuses = {key: cell.status for key, cell in found.items()}
    kinds = list(CORRUPTIONS.items())
    for round_number in range(0, len(kinds), 12):
        entries = _entries(suite)
        assert len(entries) == 12
        batch = kinds[round_number : round_number + 12]
        for entry, (_, corrupt) in zip(entries, batch, strict=False):
            corrupt(entry, entries)
        TALLY.faults += len(batch)
        name = f"corrupt{round_number}.json"
        result = run(suite, twelve, f"--rknn-matrix={name}")
        result.clean()
        found = check(suite, suite.path / name, result.finished)
        assert {k: c.status for k, c in found.items()} == statuses
        trusted = [cell.id for cell in found.values() if cell.cached]
        assert len(trusted) == 12 - len(batch), [b[0] for b in batch]
        folders = [entry for entry in _entries(suite) if entry.is_dir()]
        for entry in folders:  # pytest's cache cannot write over a folder; the cell still ran
            shutil.rmtree(entry)
    warm = run(suite, twelve, "--rknn-matrix=warm.json")
    found = check(suite, suite.path / "warm.json", warm.finished)
    again = [cell.id for cell in found.values() if not cell.cached]
    assert len(again) == len(folders), "every other entry was written again, and is trusted"


# ---------------------------------------------------------------------------------------------
# Identical models under two names
# ---------------------------------------------------------------------------------------------


def test_identical_models_under_two_names_are_two_cells_cold_and_warm(suite) -> None:
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "user",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    save(model, suite.path / "twin_a.onnx")
    (suite.path / "twin_b.onnx").write_bytes((suite.path / "twin_a.onnx").read_bytes())
    args = ("--rknn-examples=0", "--rknn-model=twin_a.onnx", "--rknn-model=twin_b.onnx")
    for name in ("cold.json", "warm.json"):
        result = run(suite, *args, f"--rknn-matrix={name}")
        TALLY.faults += 1
        found = check(suite, suite.path / name, result.finished)
        assert len(found) == 8
        for cell in found.values():
            stem = Path(cell.variant["path"]).stem
            assert cell.variant_id.startswith(f"model-{stem}-"), (cell.variant_id, stem)


# ---------------------------------------------------------------------------------------------
# Bad inputs: one ERROR: line each, exit 4, no traceback
# ---------------------------------------------------------------------------------------------


def _matrix_text(cells: list[dict]) -> str:
    return json.dumps({"schema": "pytest-rknn/matrix", "version": 1, "meta": {}, "cells": cells})


_CELL = CellRecord("v", "rk3588", "2.3.2", "fp16", Status.PASS, {"form": "model"}).to_dict()
# name: (content, what the error line says)
BASELINES: dict[str, tuple[str | bytes, str]] = {
    "not-json": ("{not json", "is not valid JSON"),
    "truncated": (_matrix_text([_CELL])[:-5], "the file looks truncated"),
    "empty": ("", "is not valid JSON"),
    "binary": (b"\xff\xfe\x00garbage", "cannot be read"),
    "nested-deep": ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
    "null": ("null", "is not a pytest-rknn matrix"),
    "version-2": (json.dumps({"schema": "pytest-rknn/matrix", "version": 2}), "version 2"),
    "unknown-status": (_matrix_text([{**_CELL, "status": "splendid"}]), "cells[0].status"),
    "twice-the-same-cell": (_matrix_text([_CELL, _CELL]), "appears more than once"),
    "timing-a-string": (_matrix_text([{**_CELL, "timings": {"wall": "NaN"}}]), "timings.wall"),
}
BAD_INPUTS = [
    *((f"--rknn-timeout={v}", "finite number of seconds > 0") for v in ("nan", "NaN", "inf")),
    *((f"--rknn-timeout={v}", "finite number of seconds > 0") for v in ("-inf", "1e999")),
    *((f"--rknn-timeout={v}", "finite number of seconds > 0") for v in ("0", "-1")),
    *((f"--rknn-max-memory={v}", "is below 256M") for v in ("0", "1", "255M", "100M", "0.2G")),
    ("--override-ini=rknn_bounds_fp16=max_abs=nan", "must be a finite number"),
    ("--override-ini=rknn_bounds_fp16=min_cosine=inf", "must be a finite number"),
    ("--override-ini=rknn_bounds_int8=max_rel=-1", "must be a finite number >= 0"),
    ("--rknn-html=m.json", "same file as --rknn-matrix"),
    ("--rknn-html=./sub/../m.json", "same file as --rknn-matrix"),
    ("--rknn-model=.", "is a folder"),
    ("--rknn-model=folder", "is a folder"),
    *((f"--rknn-baseline={name}.json", says) for name, (_, says) in BASELINES.items()),
    ("--rknn-config=optimisation_level=2", "no rknn-toolkit2 version's config() accepts it"),
    ("--rknn-config=target_platform=rk3588", "set by --rknn-platforms"),
    ("--rknn-quant=fp16+optimization_level", "is not key:value"),
]


@pytest.mark.parametrize(("option", "says"), BAD_INPUTS, ids=[o for o, _ in BAD_INPUTS])
def test_a_bad_input_is_one_error_line(suite, monkeypatch, option: str, says: str) -> None:
    monkeypatch.syspath_prepend(str(FAKE_DIR))
    (suite.path / "folder").mkdir()
    (suite.path / "sub").mkdir()
    for name, (text, _) in BASELINES.items():
        data = text if isinstance(text, bytes) else text.encode()
        (suite.path / f"{name}.json").write_bytes(data)
    TALLY.bad_inputs += 1
    result = suite.runpytest_inprocess(*SELECTION, "--rknn-matrix=m.json", option)
    text = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text[-2000:]
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, text[-2000:]
    assert says in errors[0], errors[0]
    assert "Traceback" not in text and "INTERNALERROR" not in text
    assert not (suite.path / "m.json").exists()
