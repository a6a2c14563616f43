"""``--rknn-explore`` with the real toolkit: it finds and shrinks a failing variant.

rknn-toolkit2 2.5.0 refuses every ONNX model of opset 23 at ``load_onnx``, so every
``onnx-attention`` variant fails: the search must return the smallest spec of that form, and the
command it prints must re-run exactly that cell, which must fail the same way.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.variants.spec import VariantSpec

pytestmark = pytest.mark.toolkit

CASES = Path(__file__).resolve().parents[1] / "cases"


def test_explore_shrinks_to_the_minimal_failing_variant(rknn_pytester: pytest.Pytester) -> None:
    for name in ("test_explore.py", "test_matrix.py"):
        rknn_pytester.makepyfile(**{name.removesuffix(".py"): (CASES / name).read_text()})
    target = ["--rknn-toolkits=2.5.0", "--rknn-platforms=rk3588"]
    result = rknn_pytester.runpytest_subprocess(
        "--rknn-explore", "--rknn-forms=onnx-attention", "--rknn-matrix=explore.json", *target
    )
    result.assert_outcomes(failed=1, deselected=result.parseoutcomes()["deselected"])
    text = result.stdout.str()
    found = re.search(
        r"minimal failing variant for rk3588-2\.5\.0-fp16 after \d+ conversions: (\S+)", text
    )
    assert found, text[-2000:]
    spec = VariantSpec.from_id(found.group(1))
    assert spec.form == "onnx-attention"
    assert (spec.batch, spec.num_heads, spec.q_len, spec.kv_len) == (1, 1, 1, 1)
    assert spec.mask == "none" and spec.layout == "bhsd"
    explored = Matrix.load(rknn_pytester.path / "explore.json")
    assert explored.cells and all(c.status == "convert-fail" for c in explored.cells)
    assert {c.signature for c in explored.cells} == {
        "onnx opset 23 unsupported (toolkit needs <= 19)"
    }

    rerun = re.search(r"re-run it: pytest cases/ (.+)", text).group(1)
    again = rknn_pytester.runpytest_subprocess(*shlex.split(rerun), "--rknn-matrix=rerun.json")
    again.assert_outcomes(failed=1, deselected=again.parseoutcomes()["deselected"])
    (cell,) = Matrix.load(rknn_pytester.path / "rerun.json").cells
    assert (cell.variant_id, cell.platform, cell.toolkit) == (spec.id, "rk3588", "2.5.0")
    assert cell.status == "convert-fail"
