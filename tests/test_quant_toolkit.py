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
from pytest_rknn.verdict.judge import output_metrics

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
        assert 0.5 < output_metrics(int8.metrics, 0)["cosine"] < 0.99999
    fp16 = cells["rk3588", "fp16"]
    assert fp16.status == "pass"
    assert (
        output_metrics(fp16.metrics, 0)["cosine"]
        > output_metrics(cells["rk3588", "int8"].metrics, 0)["cosine"]
    )


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
        "--rknn-platforms=rk3588,rk3566",
        "--rknn-quant=int8,int8-kl,hybrid",
        "--rknn-calibration=4",
        "--rknn-variant=manual-b1-h2kv2-q16kv16-d16-causal-f32-bshd",
        "--rknn-no-curated",
        "--rknn-examples=0",
        "--rknn-matrix=h.json",
    )
    matrix = Matrix.load(rknn_pytester.path / "h.json")
    cells = {(c.platform, c.quant): c for c in matrix.cells}
    assert set(cells) == {
        (p, q) for p in ("rk3588", "rk3566") for q in ("int8", "int8-kl", "hybrid")
    }
    for key, cell in cells.items():
        # Every cell converted and ran; the tight bound makes each a real tolerance failure.
        assert cell.status is Status.TOLERANCE_FAIL, (key, cell.reason)
        dataset = Path(cell.artifact).parent / "dataset.txt"
        lines = dataset.read_text().splitlines()
        assert len(lines) == 4 and all(len(line.split()) == 3 for line in lines)
        assert cell.error_origin and "error" not in cell.error_origin, (key, cell.error_origin)
        assert cell.error_origin["layers"] > 3
    # rk3588 fuses the attention into one exSDPAttention; rk3566 into exMatMul (q.k^T with its
    # scale), the mask's Add, exSoftmax13 and exMatMul. int8 breaks at the fused attention op /
    # the softmax; hybrid keeps them in float16 and its output at fp16's accuracy.
    for platform, broken, kept in (
        ("rk3588", "exSDPAttention", {"exSDPAttention"}),
        ("rk3566", "exSoftmax13", {"exMatMul", "Add", "exSoftmax13"}),
    ):
        int8, hybrid = cells[platform, "int8"], cells[platform, "hybrid"]
        origin = int8.error_origin
        assert origin["op"] == broken and origin["cosine"] < 0.95 < origin["input_cosine"]
        ops = [layer["op"] for layer in hybrid.fp16_layers]
        assert kept <= set(ops) and int8.fp16_layers is None
        if platform == "rk3566":
            assert ops.count("exMatMul") == 2  # q.k^T and p.v, both
        assert output_metrics(int8.metrics, 0)["cosine"] < 0.95
        assert output_metrics(hybrid.metrics, 0)["cosine"] > 0.9999
    result.stdout.fnmatch_lines(["*the error starts in exSDPAttention *"])
