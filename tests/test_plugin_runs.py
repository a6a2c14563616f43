"""Runs of a cell suite under ``pytester`` with the real rknn-toolkit2 (2.3.2).

Each test copies a suite like ``cases/`` (``tests/data/plugin``) into a pytester folder and runs
pytest on it in a subprocess: the matrix JSON and its fields against pytest's outcomes, pytest-
xdist against a serial run, the result cache, the baseline's strict xfails, and Ctrl-C.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest
from process_support import interruptible

from pytest_rknn.envs import default_root
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import STATUSES
from pytest_rknn.variants.spec import FORMS
from pytest_rknn.verdict.judge import output_metrics

DATA = Path(__file__).parent / "data" / "plugin"
# Resolved now: pytester points HOME at its own folder, which would hide the user cache.
ENVS_ROOT = default_root()
# Every cell of the matrix carries these fields (issue 4, item 4).
CELL_FIELDS = {
    "variant_id",
    "variant",
    "platform",
    "toolkit",
    "quant",
    "status",
    "signature",
    "metrics",
    "timings",
    "peak_rss_mb",
    "cached",
    "log_excerpt",
}
METRICS = {"max_abs", "mean_abs", "max_rel", "cosine", "rel_l2"}
PYTEST_OUTCOME = {"pass": "passed", "unsupported": "skipped"}
KEY = ("variant_id", "platform", "toolkit", "quant")

pytestmark = pytest.mark.toolkit


def cell_args(
    *extra: str,
    platforms: str = "rk3588",
    forms: str = "manual",
    examples: int = 2,
    matrix: str = "m.json",
    toolkits: str = "2.3.2",
) -> list[str]:
    """Options selecting a few small drawn variants (no curated ones) for one toolkit."""
    return [
        f"--rknn-toolkits={toolkits}",
        f"--rknn-platforms={platforms}",
        f"--rknn-forms={forms}",
        f"--rknn-examples={examples}",
        "--rknn-no-curated",
        f"--rknn-matrix={matrix}",
        *extra,
    ]


@pytest.fixture
def suite(rknn_pytester: pytest.Pytester) -> pytest.Pytester:
    """A copy of ``cases/``: one test item per cell, environments provisioned at start."""
    rknn_pytester.makepyfile(test_rknn_cells=(DATA / "suite_cells.py").read_text())
    rknn_pytester.makeconftest((DATA / "suite_conftest.py").read_text())
    return rknn_pytester


def cell_id(cell) -> str:
    return f"{cell.variant_id}-{cell.platform}-{cell.toolkit}-{cell.quant}"


def expected_outcome(status: str) -> str:
    return PYTEST_OUTCOME.get(status, "failed")


def junit_outcomes(path: Path) -> dict[str, str]:
    """Cell id -> pytest outcome (passed, failed, skipped) from a ``--junitxml`` file."""
    found = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        cell = name[name.index("[") + 1 : -1]
        if case.find("failure") is not None or case.find("error") is not None:
            found[cell] = "failed"
        elif case.find("skipped") is not None:
            found[cell] = "skipped"
        else:
            found[cell] = "passed"
    return found


def statuses(matrix: Matrix) -> dict[str, str]:
    return {cell_id(c): c.status for c in matrix.cells}


def test_matrix_has_every_cell_with_its_fields_and_pytest_agrees(suite: pytest.Pytester) -> None:
    args = cell_args(
        "--junitxml=junit.xml",
        platforms="rk3588,rv1106",
        forms="manual,onnx-attention",
        examples=2,
    )
    result = suite.runpytest_subprocess(*args)
    matrix = Matrix.load(suite.path / "m.json")
    raw = json.loads((suite.path / "m.json").read_text())
    outcomes = junit_outcomes(suite.path / "junit.xml")

    assert len(matrix) == 4
    assert set(statuses(matrix)) == set(outcomes)
    for cell in raw["cells"]:
        assert set(cell) >= CELL_FIELDS, CELL_FIELDS - set(cell)
        assert cell["variant"]["form"] in FORMS
        assert cell["status"] in STATUSES
        assert cell["cached"] is False
    for cell in matrix.cells:
        assert outcomes[cell_id(cell)] == expected_outcome(cell.status), cell_id(cell)
        if cell.status == "unsupported":
            assert cell.platform == "rv1106"
            assert "quantized build" in cell.reason
            continue
        assert cell.timings["wall"] > 0
        assert cell.peak_rss_mb > 0
        if cell.status == "pass":
            assert cell.signature is None
            assert set(output_metrics(cell.metrics, 0)) >= METRICS
            assert output_metrics(cell.metrics, 0)["cosine"] > 0.99
        else:
            assert cell.signature
            assert cell.log_excerpt
    kinds = {expected_outcome(s) for s in statuses(matrix).values()}
    assert kinds == {"passed", "failed", "skipped"}, "the selection should give all three"

    counts = result.parseoutcomes()
    for kind in ("passed", "failed", "skipped"):
        assert counts.get(kind, 0) == sum(o == kind for o in outcomes.values())
    meta = matrix.meta
    assert meta["complete"] is True
    assert meta["toolkits"] == ["2.3.2"]
    assert meta["platforms"] == ["rk3588", "rv1106"]
    assert meta["seed"] == 0
    assert [env["version"] for env in meta["toolkit_envs"]] == ["2.3.2"]
    result.stdout.fnmatch_lines(
        ["*rknn compatibility matrix*", "*platform*2.3.2*", "matrix: m.json (4 cells)"]
    )

    failed = sorted(c for c, o in outcomes.items() if o == "failed")
    rerun = suite.runpytest_subprocess(*args, "--lf", "-v")
    rerun.assert_outcomes(failed=len(failed))
    rerun.stdout.fnmatch_lines([f"test_rknn_cells.py::test_cell[[]{c}[]] FAILED*" for c in failed])


def test_xdist_gives_the_serial_statuses_and_a_complete_matrix(suite: pytest.Pytester) -> None:
    selection = dict(platforms="rk3588,rv1106", forms="manual,onnx-attention", examples=4)
    serial = suite.runpytest_subprocess(
        *cell_args("--rknn-no-cache", "--junitxml=serial.xml", matrix="serial.json", **selection)
    )
    parallel = suite.runpytest_subprocess(
        *cell_args(
            "--rknn-no-cache", "-n=2", "-v", "--junitxml=n2.xml", matrix="n2.json", **selection
        )
    )
    one, two = Matrix.load(suite.path / "serial.json"), Matrix.load(suite.path / "n2.json")
    print("serial:", sorted(statuses(one).items()))
    print("-n 2:  ", sorted(statuses(two).items()))

    assert len(one) == 8
    assert statuses(two) == statuses(one)
    assert junit_outcomes(suite.path / "n2.xml") == junit_outcomes(suite.path / "serial.xml")
    assert two.meta["complete"] is True
    assert not any(c.cached for c in two.cells)
    assert parallel.parseoutcomes() == serial.parseoutcomes()
    parallel.stdout.fnmatch_lines(["*2 workers*", "matrix: n2.json (8 cells)"])
    ran_on = {w for w in ("gw0", "gw1") if any(f"[{w}]" in line for line in parallel.outlines)}
    assert ran_on == {"gw0", "gw1"}, "both xdist workers should run cells"


def test_warm_cache_reuses_results_and_no_cache_or_cache_clear_reconvert(
    suite: pytest.Pytester, record_property
) -> None:
    args = cell_args(platforms="rk3566,rk3588", examples=8)
    cold = suite.runpytest_subprocess(*args)
    cold_matrix = Matrix.load(suite.path / "m.json")
    warm = suite.runpytest_subprocess(*args)
    warm_matrix = Matrix.load(suite.path / "m.json")

    assert len(cold_matrix) == 16
    assert not any(c.cached for c in cold_matrix.cells)
    assert all(c.cached for c in warm_matrix.cells)
    assert statuses(warm_matrix) == statuses(cold_matrix)
    for cell in warm_matrix.cells:
        assert cell.metrics == cold_matrix.get(cell.key).metrics
    ratio = cold.duration / warm.duration
    toolkit_ratio = cold_matrix.meta["wall_s"] / warm_matrix.meta["wall_s"]
    print(
        f"16 cells: cold {cold.duration:.2f} s, warm {warm.duration:.2f} s, ratio {ratio:.1f}x "
        f"(matrix wall_s {cold_matrix.meta['wall_s']:.2f} vs {warm_matrix.meta['wall_s']:.2f}, "
        f"{toolkit_ratio:.1f}x)"
    )
    record_property("cache_ratio", round(ratio, 2))

    suite.runpytest_subprocess(*args, "--rknn-no-cache", "-k", "rk3588")
    no_cache = Matrix.load(suite.path / "m.json")
    assert len(no_cache) == 8
    assert {c.platform for c in no_cache.cells} == {"rk3588"}
    assert not any(c.cached for c in no_cache.cells)

    suite.runpytest_subprocess(*args, "--cache-clear", "-k", "rk3566")
    cleared = Matrix.load(suite.path / "m.json")
    assert len(cleared) == 8
    assert {c.platform for c in cleared.cells} == {"rk3566"}
    assert not any(c.cached for c in cleared.cells)
    assert statuses(cleared).items() <= statuses(cold_matrix).items()
    assert warm_matrix.meta["toolkit_s"] == 0, "no toolkit ran in the warm run"


def test_baseline_failures_become_strict_xfails(suite: pytest.Pytester) -> None:
    selection = dict(forms="manual,onnx-attention", examples=4)
    first = suite.runpytest_subprocess(*cell_args(matrix="base.json", **selection))
    base = Matrix.load(suite.path / "base.json")
    failing = [c for c in base.cells if c.failed]
    passing = [c for c in base.cells if c.status == "pass"]
    assert failing and len(passing) >= 2, "the selection should give failing and passing cells"
    assert first.ret == pytest.ExitCode.TESTS_FAILED

    again = suite.runpytest_subprocess(
        *cell_args("--rknn-baseline=base.json", "-rx", matrix="run2.json", **selection)
    )
    again.assert_outcomes(passed=len(passing), xfailed=len(failing))
    assert again.ret == pytest.ExitCode.OK
    again.stdout.fnmatch_lines([f"XFAIL*{cell_id(failing[0])}*failed in the baseline*"])
    assert statuses(Matrix.load(suite.path / "run2.json")) == statuses(base)

    edited = json.loads((suite.path / "base.json").read_text())
    fixed = cell_id(passing[0])
    for cell in edited["cells"]:
        if tuple(cell[k] for k in KEY) == passing[0].key:
            cell.update(status="convert-fail", signature="claimed by an edited baseline")
    (suite.path / "edited.json").write_text(json.dumps(edited))
    third = suite.runpytest_subprocess(
        *cell_args("--rknn-baseline=edited.json", matrix="run3.json", **selection)
    )
    third.assert_outcomes(passed=len(passing) - 1, xfailed=len(failing), failed=1)
    assert third.ret == pytest.ExitCode.TESTS_FAILED
    third.stdout.fnmatch_lines(
        [
            f"*test_cell[[]{fixed}[]]*",
            "[[]XPASS(strict)[]] failed in the baseline: convert-fail claimed by an edited*",
            f"FAILED test_rknn_cells.py::test_cell[[]{fixed}[]]*",
        ]
    )


def wait_for_cells(path: Path, count: int, proc: subprocess.Popen, timeout: float) -> int:
    """Poll the items the run has finished (the suite conftest's ``finished.txt`` beside the
    matrix; the matrix itself is rewritten only now and then) until there are ``count``."""
    finished = path.parent / "finished.txt"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            found = len(finished.read_text().split())
        except OSError:
            found = 0
        if found >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"the run did not finish {count} cells in {timeout:g} s")


def test_sigint_leaves_a_valid_matrix_of_exactly_the_finished_cells(
    suite: pytest.Pytester,
) -> None:
    """Ctrl-C mid-run: the matrix holds the cells whose items pytest finished, and no more.

    "Finished" is read from pytest itself: the suite's conftest logs the node id of every
    call report (``finished.txt``) right after pytest-rknn's recorder has taken that report.
    Only a SIGINT landing between those two hook calls (microseconds, against ~0.1 s per cell)
    could make them differ.
    """
    args = cell_args(platforms="rk3566,rk3588,rk3562,rk3576", examples=10)
    log = (suite.path / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args],
        cwd=suite.path,
        stdout=log,
        stderr=log,
        preexec_fn=interruptible,
    )
    try:
        wait_for_cells(suite.path / "m.json", 3, proc, timeout=120)
        workers = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (suite.path / "run.log").read_text(errors="replace")

    assert code == pytest.ExitCode.INTERRUPTED, output[-2000:]
    assert "KeyboardInterrupt" in output
    matrix = Matrix.load(suite.path / "m.json")
    finished = (suite.path / "finished.txt").read_text().split()
    ids = [n[n.index("[") + 1 : -1] for n in finished]
    print(f"Ctrl-C after {len(matrix)} of 40 cells; finished items: {len(ids)}")
    assert 3 <= len(matrix) < 40
    assert sorted(statuses(matrix)) == sorted(ids)
    assert matrix.meta["complete"] is False
    assert matrix.meta["exitstatus"] == pytest.ExitCode.INTERRUPTED
    assert not (suite.path / "m.json.journal").exists()
    assert workers, "a toolkit worker should have been running"
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"toolkit workers left running after Ctrl-C: {alive}"


def test_config_options_are_an_axis_the_real_toolkit_takes(suite: pytest.Pytester) -> None:
    args = cell_args(
        "--rknn-config=optimization_level=0|3",
        "--rknn-config=disable_rules=fuse_two_gather",
        examples=1,
        toolkits="2.2.0,2.5.0",
    )
    result = suite.runpytest_subprocess(*args)
    matrix = Matrix.load(suite.path / "m.json")
    found = {(c.toolkit, c.quant): c for c in matrix.cells}
    assert len(found) == 4, sorted(found)
    for (toolkit, quant), cell in found.items():
        assert quant.startswith("fp16+disable_rules:fuse_two_gather+optimization_level:")
        if toolkit == "2.2.0":
            assert cell.status == "unsupported" and "does not accept disable_rules" in cell.reason
        else:
            assert cell.status == "pass", cell.reason
    result.assert_outcomes(passed=2, skipped=2)
