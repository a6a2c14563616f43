"""What a run leaves for CI besides the matrix: JUnit properties and classnames, the Markdown
summary (``--rknn-markdown``, ``$GITHUB_STEP_SUMMARY``); and ``merge --history DIR``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fake_support import SELECTION, fake_suite
from matrix_support import make_cell, run_matrix

from pytest_rknn.cli import main
from pytest_rknn.results.matrix import Matrix


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return fake_suite(pytester, monkeypatch)


def test_junit_markdown_and_step_summary(suite: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_RKNN_MODES", "2.5.0=by-platform:rk3588=raise")
    summary = suite.path / "step-summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = suite.runpytest_subprocess(
        *SELECTION,
        "--rknn-matrix=m.json",
        "--rknn-markdown=report.md",
        "--junitxml=junit.xml",
        "-n",
        "2",
    )
    result.assert_outcomes(passed=6, failed=2)
    result.stdout.fnmatch_lines(["matrix: m.json (8 cells)", "markdown: report.md"])
    cases = ET.parse(suite.path / "junit.xml").getroot().iter("testcase")
    by_class: dict[str, list[dict[str, str]]] = {}
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        by_class.setdefault(case.get("classname"), []).append(props)
    assert set(by_class) == {
        f"rknn.{p}.{t}.fp16" for p in ("rk3566", "rk3588") for t in ("2_3_2", "2_5_0")
    }
    (failed, *_) = [p for p in by_class["rknn.rk3588.2_5_0.fp16"] if p["rknn.status"] != "pass"]
    assert failed["rknn.status"] == "convert-fail" and "IndexError" in failed["rknn.signature"]
    assert failed["rknn.platform"] == "rk3588" and failed["rknn.toolkit"] == "2.5.0"
    passing = by_class["rknn.rk3566.2_3_2.fp16"][0]
    (cosine,) = [v for k, v in passing.items() if k.endswith(".cosine")]  # by output name
    assert float(cosine) > 0.9999 and passing["rknn.quant"] == "fp16"
    assert "rknn_cell" not in passing, "the record itself stays out of the XML"

    report = (suite.path / "report.md").read_text()
    assert "| platform | 2.3.2 | 2.5.0 |" in report and "| rk3588 | 2/2 | 0/2 |" in report
    step = summary.read_text()
    assert step.startswith("earlier step\n") and step.endswith(report + "\n")
    matrix = Matrix.load(suite.path / "m.json")
    assert matrix.meta["cell_test"] == "test_rknn_cells.py::test_cell"


def test_markdown_path_must_differ_from_the_matrix(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess(
        *SELECTION, "--rknn-matrix=m.json", "--rknn-markdown=m.json"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --rknn-markdown m.json is the same file as --rknn-matrix*"]
    )


def _history(folder: Path) -> None:
    folder.mkdir()
    old = run_matrix("2.3.2", "2026-11-20T07:00:00+00:00", "2026-11-20T07:10:00+00:00")
    old.write(folder / "2026-11-20.json")
    new = run_matrix("2.3.2", "2026-11-25T07:00:00+00:00", "2026-11-25T07:10:00+00:00")
    first = new.cells[0]
    new.add(make_cell(first.variant, first.platform, "2.3.2", "crash", error="boom"))
    new.write(folder / "2026-11-25.json")


def test_merge_history_prints_rates_and_flips_and_fills_the_dashboard(
    tmp_path: Path, capsys
) -> None:
    _history(tmp_path / "runs")
    today = run_matrix("2.3.2", "2026-11-26T07:00:00+00:00", "2026-11-26T07:10:00+00:00")
    today.write(tmp_path / "today.json")
    args = ["merge", str(tmp_path / "today.json"), "--history", str(tmp_path / "runs")]
    code = main([*args, "-o", str(tmp_path / "out.json"), "--html", str(tmp_path / "d.html")])
    out = capsys.readouterr().out
    assert code == 0
    assert "history: 3 run(s), 2026-11-20 07:00 … 2026-11-26 07:00" in out
    assert "rk3566 / 2.3.2 / fp16: 4/4 → 3/4 → 4/4" in out
    assert "2 cell(s) flipped between consecutive runs" in out
    page = (tmp_path / "d.html").read_text()
    assert 'id="history"' in page and "2026-11-25 07:00" in page


def test_merge_history_bad_folder_is_one_line(tmp_path: Path, capsys) -> None:
    code = main(["merge", "--history", str(tmp_path / "nope"), "-o", str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "does not exist or is not a folder: give the folder" in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "junk.json").write_text("{}")
    code = main(["merge", "--history", str(tmp_path / "empty"), "-o", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert code == 2 and "holds no readable matrix" in err.splitlines()[-1]
