"""What the fault-injection tests share: the suite, runs to kill, and the invariants.

The fault tests (``test_faults_*.py``) run real pytest processes on a pytester suite with
``-p fake_toolkits`` (only the toolkit is FAKE, see ``tests/fake_toolkit``: the workers,
protocol, cache, recorder, journal and matrix are the real ones), inject one kind of fault, and
then check the same invariants with :func:`check`: the matrix parses and validates; every
finished item's cell is in it exactly once under its own id; no cell carries another job's
result (its job folder ran its own model for its own platform, its outputs have its variant's
shape, its job id is its own, and in ``simulate`` mode, where the fake computes the right
answer, every cell that was not faulted passes). :data:`TALLY` counts faults injected, bad
inputs tried, cells lost, cells misattributed and wrong results cached (a cell of a status that
is never cached, taken from the cache); the last three are 0 or a test has failed.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from fake_support import SELECTION as FAKE_SELECTION
from process_support import interruptible

from pytest_rknn.results.cell import KEY_FIELDS, CellRecord
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status
from pytest_rknn.variants.spec import VariantSpec
from pytest_rknn.verdict.judge import output_metrics

CELLS = (Path(__file__).parent.parent / "data" / "plugin" / "suite_cells.py").read_text()
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
    wrong_cached: int = 0

    def line(self) -> str:
        return (
            f"faults injected: {self.faults}, bad inputs tried: {self.bad_inputs}, "
            f"cells lost: {self.lost}, cells misattributed: {self.misattributed}, "
            f"wrong results cached: {self.wrong_cached}"
        )


TALLY = Tally()


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
        if cell.variant.get("form") != "model" and cell.metrics:
            shape = VariantSpec.from_dict(cell.variant).output_shape()
            got = tuple(output_metrics(cell.metrics, 0)["actual_shape"])
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
    cached_wrong = [cell.id for cell in matrix.cells if cell.cached and not cell.status.cacheable]
    TALLY.lost += len(lost)
    TALLY.misattributed += len(wrong)
    TALLY.wrong_cached += len(cached_wrong)
    assert not lost, f"cells lost or duplicated: {lost}"
    assert not cached_wrong, f"cells of a status never cached, taken from the cache: {cached_wrong}"
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
