"""``pytest-rknn diff`` and ``merge``'s conflicts: counts, JSON, Markdown, exit codes, bad input."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from matrix_support import VARIANTS, changed, make_cell, run_matrix

from pytest_rknn.cli import main
from pytest_rknn.results.compare import compare, merge, toolkit_diff
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.views.markdown import diff_markdown, md_code, md_text


def _old_new() -> tuple[Matrix, Matrix]:
    old = run_matrix("2.3.2", "2026-11-25T07:00:00+00:00", "2026-11-25T07:10:00+00:00")
    return old, changed(old)


def test_compare_counts_every_kind_and_the_unchanged() -> None:
    old, new = _old_new()
    counts = compare(old, new).counts()
    assert counts == {
        "fixed": 1,
        "regressed": 1,
        "changed": 0,
        "new": 1,
        "removed": 1,
        "unchanged": len(old) - 3,
    }
    assert compare(old, old).counts()["unchanged"] == len(old)


def test_diff_cli_text_json_markdown_and_exit_codes(tmp_path: Path, capsys) -> None:
    old, new = _old_new()
    old.write(tmp_path / "old.json")
    new.write(tmp_path / "new.json")
    files = [str(tmp_path / "old.json"), str(tmp_path / "new.json")]

    assert main(["diff", *files]) == 1
    text = capsys.readouterr().out
    assert "1 fixed, 1 regressed, 1 new, 1 removed, 5 unchanged" in text.splitlines()[0]
    assert sum(line.lstrip().startswith("regression") for line in text.splitlines()) == 1

    assert main(["diff", "--json", *files]) == 1
    (report,) = json.loads(capsys.readouterr().out)["reports"]
    assert report["counts"]["regressed"] == 1
    assert {c["kind"] for c in report["changes"]} == {"fix", "regression", "new", "removed"}

    assert main(["diff", "--markdown", *files]) == 1
    markdown = capsys.readouterr().out
    assert "| comparison | fixed | regressed | changed | new | removed | unchanged |" in markdown
    assert markdown.index("| regression |") < markdown.index("| fix |")

    # No regression (only a fix): exit 0.
    assert main(["diff", files[1], files[1]]) == 0
    assert "0 fixed, 0 regressed" in capsys.readouterr().out


def test_toolkit_diff_per_platform_with_its_cells(tmp_path: Path, capsys) -> None:
    merged = merge(
        [
            run_matrix("2.2.0", "2026-11-25T06:55:00+00:00", "2026-11-25T07:20:00+00:00"),
            run_matrix("2.3.2", "2026-11-25T07:00:00+00:00", "2026-11-25T07:10:00+00:00"),
        ]
    )
    reports = {r.platform: r for r in toolkit_diff(merged, "2.2.0", "2.3.2")}
    assert (
        reports["rk3566"].headline() == "2.2.0 → 2.3.2 on rk3566: 0 fixed, 0 regressed, 4 unchanged"
    )
    (fix,) = reports["rk3588"].changes
    assert fix.kind == "fix" and fix.key[2] == "2.3.2" and fix.old_status == "crash"
    merged.write(tmp_path / "m.json")
    assert main(["diff", "--toolkits", "2.2.0", "2.3.2", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "2.2.0 → 2.3.2 on rk3588: 1 fixed, 0 regressed, 3 unchanged" in out
    assert main(["diff", "--toolkits", "2.3.2", "2.2.0", str(tmp_path / "m.json")]) == 1
    assert "1 regressed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["{dir}/absent.json", "{dir}/m.json"], "absent.json does not exist: check the path"),
        (["{dir}/bad.json", "{dir}/m.json"], "is not valid JSON"),
        (["{dir}/m.json"], "give OLD NEW (two matrices), or --toolkits A B MATRIX"),
        (["--toolkits", "2.3.2", "9.9.9", "{dir}/m.json"], "toolkit 9.9.9 has no cells"),
        (["--toolkits", "2.3.2", "2.3.2", "{dir}/m.json"], "names one version twice"),
        (["--toolkits", "2.3.2", "2.2.0", "{dir}/m.json", "{dir}/m.json"], "exactly one MATRIX"),
    ],
)
def test_diff_bad_input_is_one_line_with_the_fix(
    tmp_path: Path, capsys, args: list[str], expected: str
) -> None:
    run_matrix("2.3.2", "2026-11-25T07:00:00+00:00", "2026-11-25T07:10:00+00:00").write(
        tmp_path / "m.json"
    )
    (tmp_path / "bad.json").write_text('{"schema": "pytest-rknn/matrix", "ver')
    assert main(["diff", *[a.format(dir=tmp_path) for a in args]]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err, err


def test_markdown_escapes_table_cells() -> None:
    evil = "a|b <img src=x onerror=alert(1)> *bold* [link](http://x) `tick`\nsecond"
    assert md_text(evil) == (
        "a\\|b &lt;img src=x onerror=alert\\(1\\)&gt; \\*bold\\* \\[link\\]\\(http://x\\) "
        "\\`tick\\` second"
    )
    code = md_code("x`y|z")
    assert code == "``x`y\\|z``"
    old = Matrix(cells=[make_cell(VARIANTS[0], "rk3588", "2.3.2", "pass")])
    new = Matrix(
        cells=[make_cell(VARIANTS[0], "rk3588", "2.3.2", "convert-fail", error=evil, log=evil)]
    )
    table = diff_markdown([compare(old, new, "a|b")])
    rows = [line for line in table.splitlines() if line.startswith("| regression")]
    (row,) = rows
    assert "<img" not in table and row.count(" | ") == 6


def test_merge_prints_its_conflicts(tmp_path: Path, capsys) -> None:
    first = run_matrix("2.3.2", "2026-11-25T07:00:00+00:00", "2026-11-25T07:10:00+00:00")
    second = run_matrix("2.3.2", "2026-11-25T08:00:00+00:00", "2026-11-25T08:05:00+00:00")
    flaky = second.cells[0]
    second.add(
        make_cell(
            flaky.variant, flaky.platform, "2.3.2", "timeout", finished="2026-11-25T08:05:00Z"
        )
    )
    first.write(tmp_path / "a.json")
    second.write(tmp_path / "b.json")
    code = main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", "/dev/null"])
    out = capsys.readouterr().out
    assert code == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode), "written to, never replaced by a file"
    assert "1 conflict(s)" in out
    line = next(line for line in out.splitlines() if flaky.variant_id in line)
    assert "kept timeout (timeout)" in line and "dropped pass" in line
