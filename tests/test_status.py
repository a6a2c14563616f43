"""The status vocabulary is the one source: schema, outcomes, cache policy, views read it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.matrix import Matrix, schema, shipped_schema
from pytest_rknn.results.status import STATUS_TABLE, STATUSES, Status
from pytest_rknn.views.dashboard import render

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_rknn"


def test_every_status_has_one_entry_and_the_schema_enum_is_the_vocabulary() -> None:
    assert set(STATUS_TABLE) == set(Status)
    enum = schema()["$defs"]["cell"]["properties"]["status"]["enum"]
    assert enum == list(STATUSES)
    assert shipped_schema()["$defs"]["cell"]["properties"]["status"]["enum"] == enum, (
        "matrix.schema.json as shipped must list the same statuses as results/status.py"
    )


def test_outcomes_and_cache_policy() -> None:
    assert {s for s in Status if s.outcome == "passed"} == {Status.PASS}
    # an export failure is the exporter's finding: skipped with its reason, never the toolkit's
    assert {s for s in Status if s.outcome == "skipped"} == {Status.UNSUPPORTED, Status.EXPORT_FAIL}
    assert all(s.failing == (s.outcome == "failed") for s in Status)
    transient = {s for s in Status if not s.cacheable}
    assert transient == {
        Status.CRASH,
        Status.TIMEOUT,
        Status.OOM,
        Status.ENV_ERROR,
        Status.REFERENCE_ERROR,
    }


def test_no_other_module_spells_the_status_names() -> None:
    owners = {PACKAGE / "results" / "status.py", PACKAGE / "results" / "matrix.schema.json"}
    quoted = [f'"{s.value}"' for s in Status if "-" in s.value or s in (Status.OOM, Status.CRASH)]
    offenders = [
        f"{path.relative_to(PACKAGE)}: {word}"
        for path in PACKAGE.rglob("*")
        if path.suffix in (".py", ".j2", ".json") and path not in owners
        for word in quoted
        if word in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_a_record_round_trips_and_refuses_unknown_statuses() -> None:
    cell = CellRecord("v", "rk3588", "2.3.2", "fp16", Status.REFERENCE_ERROR, {"form": "model"})
    again = CellRecord.from_dict(cell.to_dict())
    assert again == cell and again.status is Status.REFERENCE_ERROR
    with pytest.raises(ValueError, match="cell status 'passed' is not one of pass, convert-fail"):
        CellRecord.from_dict({**cell.to_dict(), "status": "passed"})


def test_the_dashboard_has_a_colour_for_every_status() -> None:
    cells = [
        CellRecord(f"v{i}", "rk3588", "2.3.2", "fp16", status, {"form": "manual"})
        for i, status in enumerate(Status)
    ]
    page = render(Matrix(meta={}, cells=cells))
    for status, info in STATUS_TABLE.items():
        assert f".{status.value} {{ background: {info.colour}; }}" in page


def test_cli_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    def matrix(status: Status) -> Matrix:
        return Matrix(
            meta={},
            cells=[
                CellRecord(f"v{i}", "rk3588", "2.3.2", "fp16", status, {"form": "manual"})
                for i in range(3000)
            ],
        )

    matrix(Status.PASS).write(tmp_path / "old.json")
    matrix(Status.CRASH).write(tmp_path / "new.json")
    command = f"{sys.executable} -m pytest_rknn.cli diff old.json new.json | head -n 1"
    proc = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert proc.stdout.startswith("old.json → new.json: 0 fixed, 3000 regressed")
    assert proc.stderr == ""
