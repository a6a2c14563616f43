"""Tests of the matrix document: cells, files, load errors and the journal."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from matrix_support import VARIANTS, make_cell

from pytest_rknn.results import journal as durable
from pytest_rknn.results.cell import CellRecord as Cell
from pytest_rknn.results.journal import Journal
from pytest_rknn.results.matrix import Matrix, MatrixError, _first_error, _part, schema

# --- cells --------------------------------------------------------------------------------------


def test_cell_round_trip_and_key(m232: Matrix) -> None:
    for cell in m232.cells:
        again = Cell.from_dict(json.loads(json.dumps(cell.to_dict())))
        assert again == cell
        assert again.key == (cell.variant_id, cell.platform, "2.3.2", "fp16")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "passed"}, "cell status 'passed' is not one of pass, convert-fail"),
        ({"signiture": "x"}, r"unknown field\(s\) \['signiture'\]"),
        ({"platform": ""}, "cell lacks platform"),
    ],
)
def test_bad_cell_records_are_refused(m232: Matrix, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Cell.from_dict({**m232.cells[0].to_dict(), **change})


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"timings": {"build": "0.2 s"}}, "timings.build"),
        ({"variant": {"num_heads": 8}}, "variant"),
        ({"peak_rss_mb": "612 MB"}, "peak_rss_mb"),
    ],
)
def test_add_refuses_a_cell_that_does_not_fit_the_schema(
    m232: Matrix, change: dict[str, Any], where: str
) -> None:
    bad = Cell.from_dict({**m232.cells[0].to_dict(), **change})
    with pytest.raises(MatrixError, match=f"is invalid at {where}: .*: fix the record"):
        Matrix().add(bad)


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"status": "passed"},
        {"variant_id": ""},
        {"timings": {"build": True}},
        {"peak_rss_mb": -1},
        {"metrics": {"output0": {"cosine": "1"}}},
        {"bounds": None},
        {"unknown_field": 1},
        {"variant": {}},
        {"job_id": 7},
        {"finished": 1764000000},
    ],
)
def test_the_quick_schema_check_agrees_with_jsonschema(m232: Matrix, change: dict) -> None:
    """Cells are checked by fastjsonschema, and jsonschema only says why one is refused: the
    two must agree on which cells fit."""
    data = {**m232.cells[0].to_dict(), **change}
    expected = not list(jsonschema.Draft202012Validator(_part("cell")).iter_errors(data))
    assert (_first_error(data, "cell") is None) is expected
    whole = {**json.loads(m232.dumps()), "cells": [data]}
    expected = not list(jsonschema.Draft202012Validator(schema()).iter_errors(whole))
    assert (_first_error(whole, "document") is None) is expected


def test_add_replaces_the_same_key_and_stamps_finished(m232: Matrix) -> None:
    first = m232.cells[0]
    n = len(m232)
    rerun = make_cell(first.variant, first.platform, first.toolkit, "timeout")
    assert rerun.finished is None
    m232.add(rerun)
    assert len(m232) == n
    assert m232.get(first.key).status == "timeout"
    assert m232.get(first.key).finished is not None


# --- files --------------------------------------------------------------------------------------


def test_write_load_round_trip_validates_against_the_schema(m232: Matrix, tmp_path: Path) -> None:
    path = tmp_path / "out" / "matrix.json"
    m232.write(path)
    data = json.loads(path.read_text())
    jsonschema.Draft202012Validator(schema()).validate(data)
    assert data["schema"] == "pytest-rknn/matrix" and data["version"] == 1
    loaded = Matrix.load(path)
    assert loaded.meta == m232.meta
    assert [c.to_dict() for c in loaded.cells] == [c.to_dict() for c in m232.cells]
    assert {c["variant"]["form"] for c in data["cells"]} == {
        "manual",
        "torch-sdpa",
        "mha-block",
        "model",
    }
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_cells_are_written_in_key_order_whatever_the_finishing_order(m232: Matrix) -> None:
    shuffled = Matrix(meta=m232.meta, cells=reversed(m232.cells))
    assert shuffled.dumps() == m232.dumps()


def _file_state(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_failed_serialisation_leaves_the_old_file_intact(m232: Matrix, tmp_path: Path) -> None:
    path = tmp_path / "matrix.json"
    m232.write(path)
    before = path.read_bytes()
    broken = Matrix(meta=m232.meta, cells=m232.cells)
    broken.add(make_cell({"form": "manual", "bad": {1, 2}}, "rk3566", "2.3.2", "pass"))
    with pytest.raises(TypeError, match="not JSON serializable"):
        broken.write(path)
    assert path.read_bytes() == before
    assert _file_state(tmp_path) == ["matrix.json"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_write_leaves_the_old_file_and_no_temp_file(
    m232: Matrix, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "matrix.json"
    m232.write(path)
    before = path.read_bytes()
    m232.add(make_cell(VARIANTS[0], "rk3588", "2.3.2", "oom"))

    def boom(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(durable.os, failing, boom)
    with pytest.raises(OSError, match="No space left"):
        m232.write(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _file_state(tmp_path) == ["matrix.json"]


WRITER = """
import sys
from pytest_rknn.results.cell import CellRecord as Cell
from pytest_rknn.results.matrix import Matrix
path = sys.argv[1]
m = Matrix(meta={"started": "2026-11-25T07:00:00+00:00"})
i = 0
while True:
    for _ in range(50):
        m.add(Cell(f"v{i}", "rk3588", "2.3.2", "fp16", "pass", variant={"form": "manual"},
                   log_excerpt="x" * 2000))
        i += 1
    m.write(path)
    print(len(m), flush=True)
"""


def test_a_writer_killed_mid_write_leaves_a_loadable_matrix(tmp_path: Path) -> None:
    path = tmp_path / "matrix.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    written = [int(proc.stdout.readline()) for _ in range(3)]
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    loaded = Matrix.load(path)
    assert len(loaded) >= written[-1] and len(loaded) % 50 == 0


def test_load_errors_name_the_file_and_the_fix(m232: Matrix, tmp_path: Path) -> None:
    path = tmp_path / "matrix.json"
    with pytest.raises(MatrixError, match=f"matrix file {path} does not exist: check the path"):
        Matrix.load(path)

    m232.write(path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(MatrixError) as truncated:
        Matrix.load(path)
    message = str(truncated.value)
    assert "\n" not in message
    assert message.startswith(f"matrix file {path} is not valid JSON")
    assert "truncated" in message and "regenerate it" in message

    Journal(tmp_path / "matrix.json.journal").close()
    with pytest.raises(MatrixError, match="rebuild it from its journal with `pytest-rknn merge"):
        Matrix.load(path)

    path.write_text("")
    with pytest.raises(MatrixError, match="is not valid JSON"):
        Matrix.load(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(version=2), "schema version 2, this pytest-rknn reads version 1"),
        (lambda d: d.update(version="1"), "has \"version\": '1', a str; a matrix has the number 1"),
        (lambda d: d.pop("schema"), "is not a pytest-rknn matrix"),
        (lambda d: d["cells"][1].update(status="passed"), r"invalid at cells\[1\]\.status"),
        (lambda d: d["cells"][0]["variant"].pop("form"), r"invalid at cells\[0\]\.variant"),
        (lambda d: d["meta"].update(seed="1234"), r"invalid at meta\.seed"),
    ],
)
def test_invalid_documents_are_refused(
    m232: Matrix, tmp_path: Path, edit: Any, message: str
) -> None:
    data = m232.to_dict()
    edit(data)
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps(data))
    with pytest.raises(MatrixError, match=message) as error:
        Matrix.load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


# --- journal ------------------------------------------------------------------------------------


def test_journal_rebuilds_the_finished_cells_despite_a_truncated_last_line(
    m232: Matrix, tmp_path: Path
) -> None:
    path = tmp_path / "matrix.json.journal"
    with Journal(path, meta=m232.meta) as journal:
        for cell in m232.cells:
            journal.append(cell)
    complete = path.read_bytes()
    last = json.dumps({"cell": make_cell(VARIANTS[0], "rk3588", "2.5.0", "pass").to_dict()})
    path.write_bytes(complete + last[: len(last) // 2].encode())

    rebuilt = Matrix.from_journal(path)
    assert [c.to_dict() for c in rebuilt.cells] == [c.to_dict() for c in m232.cells]
    assert rebuilt.meta["journal"]["skipped_lines"] == 1
    assert rebuilt.meta["seed"] == 1234
    out = tmp_path / "matrix.json"
    rebuilt.write(out)
    assert len(Matrix.load(out)) == len(m232)


def test_journal_meta_argument_overrides_the_header(m232: Matrix, tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.append(m232.cells[0])
    rebuilt = Matrix.from_journal(path, meta={"started": "2026-11-25T07:00:00+00:00"})
    assert rebuilt.meta["started"] == "2026-11-25T07:00:00+00:00" and len(rebuilt) == 1
    with pytest.raises(MatrixError, match="journal .* does not exist"):
        Matrix.from_journal(tmp_path / "missing.jsonl")


def _append_many(path: str, toolkit: str, count: int) -> None:
    journal = Journal(path)
    for i in range(count):
        journal.append(Cell(f"v{i}", "rk3588", toolkit, "fp16", "pass", variant={"form": "x"}))
    journal.close()


def test_two_processes_append_to_one_journal_without_mixing_lines(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.journal")
    ctx = get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(path, t, 150)) for t in ("2.3.2", "2.5.0")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    rebuilt = Matrix.from_journal(path)
    assert len(rebuilt) == 300 and rebuilt.meta["journal"]["skipped_lines"] == 0


def test_journal_forces_fresh_cells_to_disk_and_not_cached_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(durable.os, "fsync", synced.append)
    path = tmp_path / "j"
    with Journal(path) as journal:
        fresh = make_cell(VARIANTS[0], "rk3588", "2.5.0", "pass")
        cached = make_cell(VARIANTS[1], "rk3588", "2.5.0", "pass")
        cached.cached = True
        journal.append(cached)
        assert synced == []
        journal.append(fresh)
        assert len(synced) == 1
    rebuilt = Matrix.from_journal(path)
    assert sorted(c.cached for c in rebuilt.cells) == [False, True]
    assert {c.variant_id: c.to_dict() for c in rebuilt.cells} == {
        c.variant_id: c.to_dict() for c in (cached, fresh)
    }


def test_closed_journal_refuses_appends(m232: Matrix, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.close()
    with pytest.raises(ValueError, match="is closed"):
        journal.append(m232.cells[0])


def test_a_write_through_a_link_replaces_the_file_it_names_and_keeps_the_link(
    m232: Matrix, tmp_path: Path
) -> None:
    (tmp_path / "shared").mkdir()
    target = tmp_path / "shared" / "m.json"
    target.write_text("old")
    link = tmp_path / "m.json"
    link.symlink_to(target)
    m232.write(link)
    assert link.is_symlink() and Matrix.load(target).cells == m232.cells


def test_a_write_to_a_pipe_or_device_writes_into_it_and_leaves_it_there(
    m232: Matrix, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    m232.write(fifo)
    reader.join(10)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert json.loads(got[0])["cells"] == json.loads(m232.dumps())["cells"]
