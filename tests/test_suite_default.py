"""The default compatibility matrix, end to end with the real toolkits (what README line 1 runs).

One cold serial run of ``pytest cases/`` with the default options, a warm rerun on the same
cache, and a cold ``-n 2`` run: the matrix covers every form, both default platforms and the
four registry toolkits; the warm run reuses every cell whose status is a result (and re-runs
the accidents of one run, such as crashes); xdist agrees cell by cell.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_rknn.envs.recipes import KNOWN_VERSIONS
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import STATUSES as ALL_STATUSES
from pytest_rknn.results.status import Status
from pytest_rknn.variants.families import FORM as FAMILY_FORM
from pytest_rknn.variants.spec import FORMS

pytestmark = [pytest.mark.toolkit, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
STATUSES = set(ALL_STATUSES) - {"env-error"}


def run_cases(tmp: Path, name: str, *args: str) -> tuple[Matrix, float, str]:
    matrix = tmp / f"{name}.json"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "cases"), "-q", "-p", "no:randomly"]
        + ["-o", f"cache_dir={tmp / (name.split('-')[0] + '-cache')}"]
        + ["--rknn-matrix", str(matrix), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    return Matrix.load(matrix), seconds, proc.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Matrix, float, str]]:
    tmp = tmp_path_factory.mktemp("default-matrix")
    found = {"cold": run_cases(tmp, "serial-cold")}
    found["warm"] = run_cases(tmp, "serial-warm")
    found["xdist"] = run_cases(tmp, "xdist-cold", "-n", "2")
    return found


def statuses(matrix: Matrix) -> dict[tuple, str]:
    return {cell.key: cell.status for cell in matrix.cells}


def test_default_matrix_covers_forms_platforms_and_toolkits(runs) -> None:
    matrix, seconds, stdout = runs["cold"]
    cells = matrix.cells
    variants = {c.variant_id for c in cells}
    assert len(variants) >= 20
    assert {c.variant["form"] for c in cells} == {*FORMS, FAMILY_FORM}
    assert {c.platform for c in cells} == {"rk3566", "rk3588"}
    assert {c.toolkit for c in cells} == set(KNOWN_VERSIONS)
    assert len(cells) == len(variants) * 2 * len(KNOWN_VERSIONS)
    assert {c.status for c in cells} <= STATUSES, "no env-error: every toolkit env must work"
    for toolkit in KNOWN_VERSIONS:
        assert any(c.status == "pass" and c.toolkit == toolkit for c in cells)
    assert all(c.signature for c in cells if c.status not in ("pass", "unsupported"))
    assert "rknn compatibility matrix" in stdout
    toolkit_s = sum(float(c.timings.get("wall", 0) or 0) for c in cells)
    print(
        f"\ncold default matrix: {len(cells)} cells, {len(variants)} variants, "
        f"wall {seconds:.1f} s, summed toolkit time {toolkit_s:.1f} s"
    )


def test_warm_rerun_reuses_every_converted_cell(runs) -> None:
    cold, cold_s, _ = runs["cold"]
    warm, warm_s, _ = runs["warm"]
    assert statuses(warm) == statuses(cold)
    # unsupported and export-fail cells reach no conversion (export reuse: test_families_export)
    kept = [c for c in warm.cells if Status(c.status).ran and Status(c.status).cacheable]
    assert kept and all(c.cached for c in kept)
    redone = [c for c in warm.cells if not Status(c.status).cacheable]
    assert not any(c.cached for c in redone), "a run's accident must never be reused"
    print(f"\ncold {cold_s:.1f} s, warm {warm_s:.1f} s: {cold_s / warm_s:.1f}x")


def test_xdist_gives_the_same_status_for_every_cell(runs) -> None:
    serial, serial_s, _ = runs["cold"]
    parallel, parallel_s, _ = runs["xdist"]
    assert not any(c.cached for c in parallel.cells)
    assert statuses(parallel) == statuses(serial)
    print(f"\nserial {serial_s:.1f} s, -n 2 {parallel_s:.1f} s")
