"""Quantized cells with the real toolkit: int8 builds calibrate on the cell's inputs and run.

rv1106 has no float path, so its fp16 cells are ``unsupported`` (skipped with the reason) while
its int8 cells convert and are judged like any other; int8 metrics are those of a real w8a8
simulator run (cosine well below fp16's).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_rknn.results.matrix import Matrix

pytestmark = pytest.mark.toolkit

CASES = Path(__file__).resolve().parents[1] / "cases"


def test_int8_cells_convert_and_rv1106_fp16_is_unsupported(rknn_pytester: pytest.Pytester) -> None:
    rknn_pytester.makepyfile(
        test_rknn_cells=(CASES / "test_matrix.py").read_text(),
    )
    result = rknn_pytester.runpytest_subprocess(
        "--rknn-toolkits=2.3.2",
        "--rknn-platforms=rk3588,rv1106",
        "--rknn-quant=fp16,int8",
        "--rknn-variant=sdpa-b1-h8kv4-q77kv77-d8-none-f32-bshd",
        "--rknn-no-curated",
        "--rknn-examples=0",
        "--rknn-matrix=q.json",
        "-rs",
    )
    cells = {(c.platform, c.quant): c for c in Matrix.load(rknn_pytester.path / "q.json").cells}
    assert set(cells) == {(p, q) for p in ("rk3588", "rv1106") for q in ("fp16", "int8")}
    assert cells["rv1106", "fp16"].status == "unsupported"
    result.stdout.fnmatch_lines(["*unsupported: rv1106 has no float path*"])
    for platform in ("rk3588", "rv1106"):
        int8 = cells[platform, "int8"]
        assert int8.status in ("pass", "tolerance-fail"), int8.reason
        assert 0.5 < int8.metrics["output0"]["cosine"] < 0.99999
    fp16 = cells["rk3588", "fp16"]
    assert fp16.status == "pass"
    assert fp16.metrics["output0"]["cosine"] > cells["rk3588", "int8"].metrics["output0"]["cosine"]
