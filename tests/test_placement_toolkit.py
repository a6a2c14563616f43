"""Placement with the real toolkit: the matrix records where each op runs, and
``--rknn-require-npu`` makes it a verdict.

One small causal SDPA core (the torch-sdpa replica, 2 heads, 16 tokens, head dim 16) with 2.5.0
in fp16: rk3566 runs its Softmax on the CPU, rk3588 fuses the core into one ``exSDPAttention``
op on the NPU (both measured, ``tests/data/placement``). The second and third runs take the
conversions from the first one's cache: the placement comes back with them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status

pytestmark = pytest.mark.toolkit

CASES = Path(__file__).resolve().parents[1] / "cases"
VARIANT = "sdpa-b1-h2kv2-q16kv16-d16-causal-f32-bhsd"
ARGS = (
    "--rknn-toolkits=2.5.0",
    "--rknn-platforms=rk3566,rk3588",
    f"--rknn-variant={VARIANT}",
    "--rknn-only",
    "-p",
    "no:randomly",
)
MARKED = """
import onnx
import pytest

from pytest_rknn.variants.forms import build_model
from pytest_rknn.variants.families import spec_from_id


@pytest.mark.rknn(npu="none")
def test_cell(rknn_cell):
    rknn_cell.check()


def test_convert_all(rknn, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(build_model(spec_from_id("VARIANT")), path)
    outcome = rknn.convert(path, "rk3588", toolkit="2.5.0", npu="all")
    assert outcome.status == "pass", outcome.message
    assert outcome.record.placement["fused"] == ["exSDPAttention"]
""".replace("VARIANT", VARIANT)


def _cells(pytester: pytest.Pytester, name: str) -> dict[str, object]:
    return {c.platform: c for c in Matrix.load(pytester.path / name).cells}


def test_placement_is_recorded_and_required(rknn_pytester: pytest.Pytester) -> None:
    rknn_pytester.makepyfile(test_rknn_cells=(CASES / "test_matrix.py").read_text())
    rknn_pytester.runpytest_subprocess(*ARGS, "--rknn-matrix=a.json")
    cells = _cells(rknn_pytester, "a.json")
    small, big = cells["rk3566"], cells["rk3588"]
    assert small.status == big.status == Status.PASS  # without the option: recorded only
    softmax = [c for c in small.placement["cpu"] if "Softmax" in c["op"]]
    assert softmax and all(c["attention"] for c in softmax)
    assert big.placement["fused"] == ["exSDPAttention"] and big.placement["cpu_ops"] == 0
    for cell in (small, big):
        memory = cell.placement["memory"]
        assert memory["model_bytes"] == Path(cell.artifact).stat().st_size
        assert memory["internal_bytes"] > 0 and memory["weight_bytes"] > 0
        assert "Network Layer" not in (cell.log_excerpt or "")

    result = rknn_pytester.runpytest_subprocess(
        *ARGS, "--rknn-matrix=b.json", "--rknn-require-npu=attention"
    )
    cells = _cells(rknn_pytester, "b.json")
    assert cells["rk3566"].status == Status.CPU_FALLBACK and cells["rk3566"].cached
    assert cells["rk3566"].signature == "CPU fallback: exSoftmax13"
    assert cells["rk3588"].status == Status.PASS
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*cpu-fallback: CPU fallback: exSoftmax13*"])

    rknn_pytester.makepyfile(test_rknn_cells=MARKED)
    result = rknn_pytester.runpytest_subprocess(
        *ARGS, "--rknn-matrix=c.json", "--rknn-require-npu=attention"
    )
    result.assert_outcomes(passed=3)
