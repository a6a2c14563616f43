"""The advisor (``--rknn-advise``): the fixes it tries for a failing cell, and what they did.

The unit tests build cells in code; the pipeline test runs a pytester suite on the FAKE toolkit
(``tests/fake_toolkit``), whose ``rule-fail`` mode breaks in a fusion rule unless ``config()``
disables it, so that one known fix really turns the cell green.
"""

from __future__ import annotations

import dataclasses

import pytest
from fake_support import SELECTION, use_fake

from pytest_rknn.pipeline.advise import candidate_fixes
from pytest_rknn.pipeline.plan import CellSpec
from pytest_rknn.pipeline.subjects import VariantSubject
from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status
from pytest_rknn.variants.spec import VariantSpec
from pytest_rknn.verdict.judge import output_metrics

SDPA = VariantSpec("torch-sdpa", 1, 2, 2, 8, 8, 16)


def failing(cell: CellSpec, status: Status, signature: str = "x", log: str = "") -> CellRecord:
    return CellRecord(
        cell.subject.id,
        cell.platform,
        cell.toolkit,
        cell.quant,
        status,
        signature=signature,
        log_excerpt=log,
    )


def test_a_convert_failure_gets_the_rule_the_log_names_and_the_other_forms() -> None:
    cell = CellSpec(VariantSubject(SDPA), "rk3588", "2.3.2", "fp16")
    log = "W You can add disable_rules=['fuse_exmatmul_add'] in rknn.config() to ..."
    record = failing(cell, Status.CONVERT_FAIL, "KeyError in fusion rule fuse_two_gather", log)
    fixes = {f.name: f.cell for f in candidate_fixes(cell, record)}
    assert list(fixes)[:3] == [
        "disable_rules=fuse_exmatmul_add",
        "disable_rules=fuse_two_gather",
        "manual decomposition",
    ]
    assert fixes["disable_rules=fuse_two_gather"].quant == "fp16+disable_rules:fuse_two_gather"
    assert fixes["manual decomposition"].subject.spec == dataclasses.replace(SDPA, form="manual")
    assert fixes["optimization_level=0"].quant == "fp16+optimization_level:0"
    assert fixes["enable_flash_attention=true"].quant == "fp16+enable_flash_attention:true"
    assert all(f.platform == "rk3588" and f.toolkit == "2.3.2" for f in fixes.values())


def test_a_torch_export_also_tries_the_other_exporter() -> None:
    spec = dataclasses.replace(SDPA, form="torch-export", exporter="dynamo-opset23")
    cell = CellSpec(VariantSubject(spec), "rk3566", "2.5.0", "fp16")
    names = [f.name for f in candidate_fixes(cell, failing(cell, Status.CONVERT_FAIL))]
    assert "exporter dynamo" in names and "manual decomposition" in names


def test_passing_and_transient_cells_get_no_fixes_but_a_crash_does() -> None:
    cell = CellSpec(VariantSubject(SDPA), "rk3588", "2.5.0", "fp16")
    for status in (Status.PASS, Status.UNSUPPORTED, Status.TIMEOUT, Status.ENV_ERROR):
        assert candidate_fixes(cell, failing(cell, status)) == []
    assert candidate_fixes(cell, failing(cell, Status.CRASH))


def test_an_int8_tolerance_failure_tries_the_quantization_fixes() -> None:
    cell = CellSpec(VariantSubject(SDPA), "rk3588", "2.5.0", "int8")
    names = [f.name for f in candidate_fixes(cell, failing(cell, Status.TOLERANCE_FAIL))]
    assert "quantized_method=layer" in names
    fp16 = dataclasses.replace(cell, quant="fp16")
    fp16_names = [f.name for f in candidate_fixes(fp16, failing(fp16, Status.TOLERANCE_FAIL))]
    assert "quantized_method=layer" not in fp16_names and "hybrid" not in fp16_names


def test_advise_records_what_turns_a_cell_green(pytester: pytest.Pytester, monkeypatch) -> None:
    use_fake(monkeypatch)
    monkeypatch.setenv(
        "FAKE_RKNN_MODES", "2.2.0=rule-fail+simulate;2.5.0=by-platform:rk3588=rule-fail+simulate"
    )
    pytester.makepyfile(
        test_rknn_cells="def test_cell(rknn_cell):\n    assert rknn_cell.check().status == 'pass'\n"
    )
    args = [*SELECTION, "--rknn-toolkits=2.2.0,2.5.0", "--rknn-matrix=m.json", "--rknn-advise"]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=2, failed=6)
    cells = Matrix.load(pytester.path / "m.json").cells
    for cell in cells:
        if cell.status is Status.PASS:
            assert cell.fixes is None, "a cell that passed is not advised"
            continue
        fixes = {f["fix"]: f for f in cell.fixes}
        rule = fixes["disable_rules=fuse_fake"]
        if cell.toolkit == "2.2.0":
            assert (
                rule["status"] == "rejected" and "does not accept disable_rules" in rule["reason"]
            )
        else:
            assert (
                rule["status"] == "pass" and output_metrics(rule["metrics"], 0)["cosine"] > 0.9999
            )
        for name in ("optimization_level=0", "optimization_level=2"):
            assert fixes[name]["status"] == "convert-fail", "the rule still breaks"
    result.stdout.fnmatch_lines(
        [
            "what fixes what (--rknn-advise; green/tried per fix):",
            "  KeyError in fusion rule fuse_fake (6 cells): disable_rules=fuse_fake 2/2 "
            "(rejected by 4), *optimization_level=0 0/6*",
        ]
    )
