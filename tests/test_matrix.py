"""Tests of the matrix document: cells, files, load errors, journal, merge, diff and views."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from pytest_rknn.results import journal as durable
from pytest_rknn.results.cell import CellRecord as Cell
from pytest_rknn.results.compare import diff, merge
from pytest_rknn.results.journal import Journal
from pytest_rknn.results.matrix import Matrix, MatrixError, _first_error, _part, schema
from pytest_rknn.verdict.metrics import compute_metrics
from pytest_rknn.verdict.signatures import classify
from pytest_rknn.verdict.tolerance import Bounds
from pytest_rknn.views.markdown import to_markdown
from pytest_rknn.views.tally import version_key
from pytest_rknn.views.text import summary_text

LOGS = Path(__file__).parent / "data" / "logs"
VARIANTS = [
    {"form": "manual", "batch": 1, "num_heads": 8, "q_len": 128, "kv_len": 128, "head_dim": 64},
    {"form": "torch-sdpa", "batch": 1, "num_heads": 4, "q_len": 1, "kv_len": 256, "head_dim": 64},
    {"form": "mha-block", "batch": 2, "num_heads": 8, "q_len": 64, "kv_len": 64, "head_dim": 32},
    {"form": "model", "path": "/data/models/encoder.onnx", "sha256": "3f1c"},
]


def vid(spec: dict[str, Any]) -> str:
    return "-".join(f"{k}{v}" for k, v in spec.items() if k not in ("path", "sha256"))


def make_cell(spec: dict[str, Any], platform: str, toolkit: str, status: str, **kw: Any) -> Cell:
    """A cell as a run records it, with a real signature and real metrics."""
    log = kw.pop("log", "")
    metrics = {}
    if status in ("pass", "tolerance-fail"):
        rng = np.random.default_rng(len(platform) + len(toolkit))
        y = rng.standard_normal((1, 4, 16, 32))
        noise = 3e-4 if status == "pass" else 0.2
        metrics["output0"] = compute_metrics(y, y + rng.standard_normal(y.shape) * noise).to_dict()
    error = "tolerance: rel_l2, max_abs" if status == "tolerance-fail" else kw.pop("error", None)
    return Cell(
        variant_id=vid(spec),
        variant=spec,
        platform=platform,
        toolkit=toolkit,
        quant=kw.pop("quant", "fp16"),
        status=status,
        signature=classify(log, error, status),
        reason=error,
        metrics=metrics,
        bounds=Bounds.for_mode("fp16").to_dict(),
        timings={"load": 0.05, "build": 0.21, "export": 0.01, "init": 0.02, "inference": 0.03},
        peak_rss_mb=612.5,
        log_excerpt=log[-400:] or None,
        **kw,
    )


def run_matrix(toolkit: str, started: str, finished: str) -> Matrix:
    """The matrix one CI job (one toolkit version) writes."""
    regtask = (LOGS / "issue_rknn-llm_417_regtask.txt").read_text()
    argb = (LOGS / "issue_rockchip-rknn-toolkit2_272_argb.txt").read_text()
    meta = {
        "pytest_rknn": "0.1.0",
        "started": started,
        "finished": finished,
        "host": {"name": f"ci-{toolkit}", "cpus": 2},
        "command": f"pytest cases/ --rknn-toolkits {toolkit}",
        "seed": 1234,
        "profile": "ci",
        "platforms": ["rk3566", "rk3588"],
        "quant": ["fp16"],
        "toolkits": [toolkit],
        "toolkit_envs": [{"version": toolkit, "python": "/envs/" + toolkit + "/bin/python"}],
    }
    m = Matrix(meta=meta)
    for spec in VARIANTS:
        m.add(make_cell(spec, "rk3566", toolkit, "pass", finished=finished))
        if spec["form"] == "torch-sdpa" and toolkit == "2.2.0":
            m.add(
                make_cell(spec, "rk3588", toolkit, "crash", log=regtask + argb, finished=finished)
            )
        elif spec["form"] == "mha-block":
            m.add(make_cell(spec, "rk3588", toolkit, "tolerance-fail", finished=finished))
        else:
            m.add(make_cell(spec, "rk3588", toolkit, "pass", finished=finished))
    return m


@pytest.fixture
def m232() -> Matrix:
    return run_matrix("2.3.2", "2026-11-25T07:00:00+00:00", "2026-11-25T07:10:00+00:00")


@pytest.fixture
def m220() -> Matrix:
    return run_matrix("2.2.0", "2026-11-25T06:55:00+00:00", "2026-11-25T07:20:00+00:00")


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


def test_closed_journal_refuses_appends(m232: Matrix, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.close()
    with pytest.raises(ValueError, match="is closed"):
        journal.append(m232.cells[0])


# --- merge and diff -----------------------------------------------------------------------------


def test_merge_of_two_per_version_matrices(m232: Matrix, m220: Matrix) -> None:
    merged = merge([m232, m220])
    assert len(merged) == len(m232) + len(m220)
    assert merged.meta["toolkits"] == ["2.3.2", "2.2.0"]
    assert len(merged.meta["toolkit_envs"]) == 2
    assert merged.meta["platforms"] == ["rk3566", "rk3588"]
    assert merged.meta["started"] == "2026-11-25T06:55:00+00:00"
    assert merged.meta["finished"] == "2026-11-25T07:20:00+00:00"
    assert merged.meta["conflicts"] == []
    assert [s["command"] for s in merged.meta["merged_from"]] == [
        "pytest cases/ --rknn-toolkits 2.3.2",
        "pytest cases/ --rknn-toolkits 2.2.0",
    ]
    Matrix.from_dict(json.loads(merged.dumps()))


def test_merge_conflict_keeps_the_later_result_and_records_it(m232: Matrix) -> None:
    rerun = run_matrix("2.3.2", "2026-11-25T08:00:00+00:00", "2026-11-25T08:05:00+00:00")
    flaky = rerun.cells[0]
    rerun.add(
        make_cell(
            flaky.variant, flaky.platform, "2.3.2", "timeout", finished="2026-11-25T08:04:00Z"
        )
    )
    for order in ([m232, rerun], [rerun, m232]):
        merged = merge(order)
        assert len(merged) == len(m232)
        assert merged.get(flaky.key).status == "timeout"
        (conflict,) = merged.meta["conflicts"]
        assert conflict["kept"]["status"] == "timeout"
        assert conflict["dropped"]["status"] == "pass"
        assert conflict["variant_id"] == flaky.variant_id


def test_merge_of_merged_matrices_keeps_history(m232: Matrix, m220: Matrix) -> None:
    m250 = run_matrix("2.5.0", "2026-11-25T07:01:00+00:00", "2026-11-25T07:09:00+00:00")
    twice = merge([merge([m232, m220]), m250])
    assert len(twice.meta["merged_from"]) == 3
    assert twice.meta["toolkits"] == ["2.3.2", "2.2.0", "2.5.0"]


def changed(old: Matrix) -> Matrix:
    """``old`` with one regression, one fix, one removed and one new cell (toolkit 2.3.2)."""
    passing = [c for c in old.cells if c.status == "pass"]
    failing = next(c for c in old.cells if c.status == "tolerance-fail")
    new = Matrix(meta=old.meta, cells=[c for c in old.cells if c.key != passing[1].key])
    new.add(make_cell(passing[0].variant, passing[0].platform, "2.3.2", "convert-fail"))
    new.add(make_cell(failing.variant, failing.platform, "2.3.2", "pass"))
    new.add(make_cell(VARIANTS[0], "rk3576", "2.3.2", "pass"))
    return new


def test_diff_lists_regressions_fixes_and_the_rest(m232: Matrix) -> None:
    passing = [c for c in m232.cells if c.status == "pass"]
    new = changed(m232)
    kinds = {c.kind: c for c in diff(m232, new)}
    assert set(kinds) == {"regression", "fix", "new", "removed"}
    assert kinds["regression"].key == passing[0].key
    assert kinds["fix"].old_status == "tolerance-fail" and kinds["fix"].new_status == "pass"
    assert kinds["removed"].key == passing[1].key
    assert kinds["new"].key[1] == "rk3576"
    assert kinds["regression"].describe().startswith("regression ")
    assert diff(m232, m232) == []


def test_diff_reports_a_different_failure_as_changed(m220: Matrix) -> None:
    crashed = next(c for c in m220.cells if c.status == "crash")
    new = Matrix(meta=m220.meta, cells=m220.cells)
    new.add(make_cell(crashed.variant, crashed.platform, "2.2.0", "oom"))
    (change,) = diff(m220, new)
    assert change.kind == "changed"
    assert change.old_signature == "failed to config argb mode layer"
    assert change.new_signature == "memory cap exceeded"


# --- views --------------------------------------------------------------------------------------


def test_summary_text_shows_the_platform_by_toolkit_table(m232: Matrix, m220: Matrix) -> None:
    text = summary_text(merge([m232, m220]))
    lines = text.splitlines()
    assert lines[0] == "16 cells: 13 pass, 3 fail (crash 1, tolerance-fail 2)"
    header = next(line for line in lines if line.strip().startswith("platform"))
    assert header.split() == ["platform", "2.2.0", "2.3.2"]
    assert next(line for line in lines if line.strip().startswith("rk3566")).split() == [
        "rk3566",
        "4/4",
        "4/4",
    ]
    assert next(line for line in lines if line.strip().startswith("rk3588")).split() == [
        "rk3588",
        "2/4",
        "3/4",
    ]
    signatures = lines[lines.index("most common failure signatures:") + 1 :]
    assert signatures[0].split()[:2] == ["2", "tolerance:"]
    assert "failed to config argb mode layer" in signatures[1]
    assert "[rk3588/2.2.0]" in signatures[1]


def test_summary_separates_quant_modes_and_unsupported(m232: Matrix) -> None:
    m232.add(make_cell(VARIANTS[0], "rv1106", "2.3.2", "unsupported", error="rv1106 needs int8"))
    m232.add(make_cell(VARIANTS[0], "rk3588", "2.3.2", "pass", quant="int8"))
    text = summary_text(m232)
    assert "rk3588 int8" in text and "rv1106 fp16" in text
    assert next(line for line in text.splitlines() if "rv1106" in line).split()[-1] == "unsupported"
    assert "1 unsupported" in text.splitlines()[0]


def test_markdown_report(m232: Matrix, m220: Matrix) -> None:
    text = to_markdown(merge([m232, m220]))
    assert "| platform | 2.2.0 | 2.3.2 |" in text
    assert "| rk3588 | 2/4 | 3/4 |" in text
    assert "## Failure signatures" in text and "`failed to config argb mode layer`" in text
    failing_rows = text.split("## Failing cells")[1].strip().splitlines()[2:]
    assert len(failing_rows) == 3
    for row in (r for r in failing_rows if "| tolerance-fail |" in r):
        cosine, rel_l2 = row.rstrip(" |").rsplit("| ", 1)[1].split(" / ")
        assert 0.0 < float(cosine) < 0.9999 and rel_l2.endswith("%"), row
    assert to_markdown(Matrix()).strip().endswith("No cells.")


def test_versions_sort_numerically() -> None:
    labels = ["2.10.0", "installed", "2.5.0", "2.2.0", "2.3.0b1", "2.3.0"]
    assert sorted(labels, key=version_key) == [
        "2.2.0",
        "2.3.0",
        "2.3.0b1",
        "2.5.0",
        "2.10.0",
        "installed",
    ]


def test_large_matrix_writes_and_loads_in_reasonable_time(tmp_path: Path) -> None:
    template = make_cell(VARIANTS[0], "rk3588", "2.3.2", "pass").to_dict()
    m = Matrix(meta={"started": "2026-11-25T07:00:00+00:00"})
    for i in range(1000):
        m.add(Cell.from_dict({**template, "variant_id": f"manual-q{i}"}))
    started = time.perf_counter()
    m.write(tmp_path / "big.json")
    loaded = Matrix.load(tmp_path / "big.json")
    assert len(loaded) == 1000 and loaded.get(("manual-q999", "rk3588", "2.3.2", "fp16"))
    assert time.perf_counter() - started < 10


def test_a_file_with_nan_literals_is_not_a_matrix(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(
        '{"schema": "pytest-rknn/matrix", "version": 1, "meta": {"x": NaN}, "cells": []}'
    )
    with pytest.raises(MatrixError, match="holds NaN, which is not JSON"):
        Matrix.load(path)
