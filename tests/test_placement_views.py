"""Placement in the views: summaries, the diff (and its exit status), JUnit properties.

The cells carry placements read from the real build logs in ``tests/data/placement`` (rk3566
runs the Softmax on the CPU, rk3588 fuses the attention), so the counts are those of real
tables.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from matrix_support import VARIANTS, make_cell

from pytest_rknn.cli.main import main
from pytest_rknn.results.compare import compare, toolkit_diff
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.verdict.placement import read_placement_file
from pytest_rknn.views.markdown import diff_markdown, to_markdown
from pytest_rknn.views.placement import (
    chip_comparison,
    fallback_ops,
    junit_properties,
    memory_ranges,
    npu_table,
)
from pytest_rknn.views.text import diff_text, summary_text

DATA = Path(__file__).parent / "data" / "placement"


def placed(toolkit: str, platform: str, model: str = "sdpa-causal") -> dict:
    return read_placement_file(DATA / f"{toolkit}-{platform}-fp16-{model}.log", model_bytes=4096)


def matrix(toolkit: str = "2.3.2", rk3588: str = "2.3.2") -> Matrix:
    """Two variants on both chips; rk3588's placement read from ``rk3588``'s log."""
    result = Matrix(meta={"started": "2026-12-08T01:00:00+00:00"})
    for spec, model in zip(VARIANTS[:2], ("sdpa-causal", "mha-padmask"), strict=True):
        for platform in ("rk3566", "rk3588"):
            source = rk3588 if platform == "rk3588" else toolkit
            cell = make_cell(
                spec, platform, toolkit, "pass", placement=placed(source, platform, model)
            )
            result.add(cell)
    return result


def test_the_npu_table_counts_cells_with_attention_fully_on_the_npu() -> None:
    cells = matrix().cells
    assert npu_table(cells) == [["platform", "2.3.2"], ["rk3566", "0/2"], ["rk3588", "2/2"]]
    # The mha layer's rk3566 table also puts a Transpose between its QK and PV products on the CPU.
    assert fallback_ops(cells) == [("exSoftmax13", 2), ("Transpose", 1)]
    (line,) = chip_comparison(cells)
    assert line.startswith("2.3.2 fp16: rk3566 vs rk3588: attention on the CPU in 2 of 2 vs 0 of 2")
    assert "exSoftmax13 2 vs 0" in line
    memory = memory_ranges(cells)
    assert memory[0] == ["platform", "internal", "weight", "model file", "cells"]
    assert [row[0] for row in memory[1:]] == ["rk3566", "rk3588"]


def test_a_cell_without_a_readable_table_is_left_out_of_the_counts() -> None:
    cells = matrix().cells
    cells[0].placement = {"error": "the log was cut inside the layer table"}
    cells[1].placement = None
    assert npu_table(cells)[1:] == [["rk3566", "0/1"], ["rk3588", "1/1"]]
    assert junit_properties(cells[0]) == [
        ("placement_error", "the log was cut inside the layer table")
    ]
    assert junit_properties(cells[1]) == []


def test_the_terminal_and_markdown_summaries_show_it() -> None:
    m = matrix()
    text = summary_text(m)
    block = text.split("attention fully on the NPU")[1]
    assert re.search(r"rk3566 +0/2\n +rk3588 +2/2", block)
    assert "attention ops on the CPU most often: exSoftmax13 (2), Transpose (1)" in text
    md = to_markdown(m)
    assert "## Where it runs: attention fully on the NPU" in md
    assert "| rk3566 | 0/2 |" in md and "| rk3588 | 2/2 |" in md
    assert "not a measurement on a board" in md


def test_junit_properties_name_the_placement() -> None:
    cell = matrix().cells[0]
    props = dict(junit_properties(cell))
    assert props["attention_on_npu"] == "false"
    assert int(props["cpu_ops"]) == cell.placement["cpu_ops"] > 0
    assert int(props["npu_ops"]) == cell.placement["npu_ops"]
    assert props["memory_model_bytes"] == "4096"
    assert int(props["memory_internal_bytes"]) == cell.placement["memory"]["internal_bytes"]


def test_attention_that_leaves_the_npu_is_a_placement_regression() -> None:
    # rk3588 cells of the "new" run carry rk3566's tables: the attention left the NPU.
    old, new = matrix(), matrix(rk3588="2.3.2")
    for cell in new.cells:
        if cell.platform == "rk3588":
            model = "sdpa-causal" if cell.variant_id == old.cells[0].variant_id else "mha-padmask"
            cell.placement = placed("2.3.2", "rk3566", model)
    report = compare(old, new)
    assert report.regressions == []  # the status did not change
    moved = report.placement
    assert moved.compared == 4 and moved.counts()["attention-to-cpu"] == 2
    assert len(moved.regressions) == 2
    assert "attention left the NPU in 2 cells" in diff_text([report])
    md = diff_markdown([report])
    assert "| attention-to-cpu |" in md
    assert report.to_dict()["placement"]["regressions"] == 2


def test_the_toolkit_diff_shows_placement_and_memory_changes() -> None:
    both = Matrix(meta={})
    for cell in (*matrix("2.3.2").cells, *matrix("2.5.0", rk3588="2.5.0").cells):
        both.add(cell)
    reports = {r.platform: r for r in toolkit_diff(both, "2.3.2", "2.5.0")}
    small = reports["rk3566"].placement
    assert small.compared == 2 and small.regressions == []
    # Real tables: 2.5.0's rk3588 SDPA core needs 262144 bytes of internal memory, 2.3.2's 229376.
    big = reports["rk3588"].placement
    assert big.internal_change is not None and big.internal_change > 0
    assert "internal memory" in big.headline()


@pytest.mark.parametrize("flag, code", [((), 0), (("--fail-on-placement",), 1)])
def test_diff_exits_non_zero_on_placement_only_with_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: tuple[str, ...], code: int
) -> None:
    old, new = matrix(), matrix()
    for cell in new.cells:
        if cell.platform == "rk3588":
            cell.placement = placed("2.3.2", "rk3566")
    old.write(tmp_path / "old.json")
    new.write(tmp_path / "new.json")
    assert (
        main(["diff", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--json", *flag])
        == code
    )
    data = json.loads(capsys.readouterr().out)
    assert data["reports"][0]["placement"]["counts"]["attention-to-cpu"] == 2
