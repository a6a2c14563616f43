"""Quantized cells with the real toolkit: int8 builds calibrate on N samples drawn like the
inputs, int8-kl and hybrid really convert, and a tolerance failure says where its error starts.

rv1106 has no float path, so its fp16 cells are ``unsupported`` (skipped with the reason) while
its int8 cells convert and are judged like any other; int8 metrics are those of a real w8a8
simulator run (cosine well below fp16's). The hybrid and analysis test uses one small causal
attention on rk3588 with 2.5.0, which fuses it into one ``exSDPAttention`` op: plain int8 loses
most of its accuracy there (cosine about 0.85, measured), hybrid keeps it in float16.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status

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


TIGHT = """
import pytest

@pytest.mark.rknn(min_cosine=0.99999999, max_rel_l2=1e-9)
def test_cell(rknn_cell):
    outcome = rknn_cell.check()
    assert outcome.status == "pass", outcome.message
"""


def test_int8_kl_and_hybrid_convert_and_failures_say_where_the_error_starts(
    rknn_pytester: pytest.Pytester,
) -> None:
    rknn_pytester.makepyfile(test_rknn_cells=TIGHT)
    result = rknn_pytester.runpytest_subprocess(
        "--rknn-toolkits=2.5.0",
        "--rknn-platforms=rk3588",
        "--rknn-quant=int8,int8-kl,hybrid",
        "--rknn-calibration=4",
        "--rknn-variant=manual-b1-h2kv2-q16kv16-d16-causal-f32-bshd",
        "--rknn-no-curated",
        "--rknn-examples=0",
        "--rknn-matrix=h.json",
    )
    cells = {c.quant: c for c in Matrix.load(rknn_pytester.path / "h.json").cells}
    assert set(cells) == {"int8", "int8-kl", "hybrid"}
    for mode, cell in cells.items():
        # Every cell converted and ran; the tight bound makes each a real tolerance failure.
        assert cell.status is Status.TOLERANCE_FAIL, (mode, cell.reason)
        dataset = Path(cell.artifact).parent / "dataset.txt"
        lines = dataset.read_text().splitlines()
        assert len(lines) == 4 and all(len(line.split()) == 3 for line in lines)
        origin = cell.error_origin
        assert origin and "error" not in origin, (mode, origin)
        assert origin["layers"] > 3 and 0.0 < origin["cosine"] <= 1.0
    int8, hybrid = cells["int8"], cells["hybrid"]
    assert int8.error_origin["op"] == "exSDPAttention"
    assert int8.error_origin["cosine"] < 0.95 < int8.error_origin["input_cosine"]
    result.stdout.fnmatch_lines(["*the error starts in exSDPAttention *"])
    ops = {layer["op"] for layer in hybrid.fp16_layers}
    assert "exSDPAttention" in ops and int8.fp16_layers is None
    cosine = {mode: cell.metrics["output0"]["cosine"] for mode, cell in cells.items()}
    assert cosine["int8"] < 0.95 and cosine["hybrid"] > 0.9999
