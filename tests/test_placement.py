"""Reading where the compiler puts each op (``verdict/placement.py``), on real build logs.

The logs in ``tests/data/placement`` are real verbose builds of all four toolkit versions, both
chips, fp16, int8 and hybrid (``SOURCES.md`` there says how they were made). What each test
expects of them is read off the files with plain text tools here, not copied from the parser.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_rknn.pipeline.run import Outcome, held_to_npu
from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.status import Status
from pytest_rknn.toolkit.supervisor import read_log
from pytest_rknn.verdict.logtext import log_excerpt
from pytest_rknn.verdict.placement import (
    attention_on_npu,
    broken_requirement,
    placement_class,
    read_placement,
    read_placement_file,
)

DATA = Path(__file__).parent / "data" / "placement"
LOGS = sorted(p for p in DATA.glob("2.*.log"))
FULL = DATA / "full-2.5.0-rk3588-fp16-sdpa-causal.log"
ROW = re.compile(r"\] (\d+)\s+(\w+)\s+(\w+)\s+(NPU|CPU)\s")


def _rows(text: str) -> list[tuple[str, str, str]]:
    """(op, dtype, target) of each row of the file's (only) table, endpoints left out."""
    found = [m.groups()[1:] for m in ROW.finditer(text)]
    return [r for r in found if r[0] not in ("InputOperator", "OutputOperator")]


def test_the_data_covers_every_version_chip_and_mode() -> None:
    names = {p.name.split("-", 3)[:3].__str__() for p in LOGS}
    for version in ("2.2.0", "2.3.0", "2.3.2", "2.5.0"):
        for chip in ("rk3566", "rk3588"):
            for quant in ("fp16", "int8", "hybrid"):
                assert str([version, chip, quant]) in names


@pytest.mark.parametrize("path", LOGS, ids=lambda p: p.stem)
def test_every_real_log_is_read(path: Path) -> None:
    text = path.read_text()
    placement = read_placement_file(path, model_bytes=1234)
    assert "error" not in placement, placement
    rows = _rows(text)
    assert placement["npu_ops"] == sum(t == "NPU" for _, _, t in rows)
    assert placement["cpu_ops"] == sum(t == "CPU" for _, _, t in rows)
    assert [c["op"] for c in placement["cpu"]] == [o for o, _, t in rows if t == "CPU"]
    assert sum(placement["dtypes"].values()) == len(rows)
    assert len(placement["layers"]) == len(rows) and placement["tables"] == 1
    internal = re.search(r"Total Internal Memory Size: ([\d.]+)KB", text)
    weight = re.search(r"Total Weight Memory Size: ([\d.]+)KB", text)
    assert placement["memory"] == {
        "internal_bytes": round(float(internal[1]) * 1024),
        "weight_bytes": round(float(weight[1]) * 1024),
        "model_bytes": 1234,
    }
    estimates = re.findall(r"\s(\d+)/(\d+)/(\d+)\s", text)
    with_estimate = [e for e in estimates if int(e[2]) > 0]
    assert placement["cycles"]["ops_with_estimate"] == len(with_estimate)
    assert placement["cycles"]["total"] == sum(int(e[2]) for e in with_estimate)


@pytest.mark.parametrize("path", LOGS, ids=lambda p: p.stem)
def test_rk3566_runs_the_softmax_on_the_cpu_and_rk3588_fuses_it(path: Path) -> None:
    placement = read_placement_file(path)
    if "-rk3566-" in path.name:
        softmax = [c for c in placement["cpu"] if "Softmax" in c["op"]]
        assert softmax and all(c["attention"] for c in softmax)
        # The head split/merge Reshape/Transpose ops outside QK..PV are not the attention.
        assert any(not c["attention"] for c in placement["cpu"])
        assert attention_on_npu(placement) is False
        assert placement_class(placement) == "attention-on-cpu"
        assert broken_requirement(placement, "attention")
    else:
        assert "exSDPAttention" in placement["fused"]
        assert attention_on_npu(placement) is True
        assert broken_requirement(placement, "attention") == []


def test_the_attention_region_runs_from_the_qk_to_the_pv_product() -> None:
    placement = read_placement_file(DATA / "2.3.2-rk3566-int8-mha-padmask.log")
    layers = placement["layers"]
    marked = [r["op"] for r in layers if r["attention"]]
    first = next(i for i, r in enumerate(layers) if r["attention"])
    last = max(i for i, r in enumerate(layers) if r["attention"])
    assert marked == [r["op"] for r in layers[first : last + 1]]
    assert "exMatMul" in marked[0] and "exMatMul" in marked[-1] and "Softmax" in " ".join(marked)
    assert "Where" in marked  # the mask path that lands between the products
    assert not any(r["attention"] for r in layers if r["op"] == "Conv")  # the projections


def test_a_full_log_is_read_and_its_excerpt_stays_short() -> None:
    placement = read_placement_file(FULL)
    assert placement["fused"] == ["exSDPAttention"]
    kept = read_log(FULL)
    assert "Network Layer Information Table" not in kept and "\nD " not in kept
    assert "rknn building done" in kept
    excerpt = log_excerpt(kept)
    assert len(excerpt) < len(FULL.read_text()) / 4 and "D RKNN" not in excerpt


def _two_tables() -> str:
    table = (DATA / "2.3.2-rk3588-fp16-sdpa-causal.log").read_text()
    other = (DATA / "2.3.2-rk3566-fp16-sdpa-causal.log").read_text()
    return other + table


def test_the_last_table_is_the_models() -> None:
    placement = read_placement(_two_tables())
    assert placement["tables"] == 2 and placement["fused"] == ["exSDPAttention"]
    assert placement["cpu_ops"] == 0


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda t: t.replace("Network Layer Information Table", "Another Table"), "has no"),
        (lambda t: t.replace(" ID   OpType", " Id   Kind  "), "header"),
        (
            lambda t: t.replace("exSoftmax13        FLOAT16  CPU", "exSoftmax13   FLOAT16  GPU"),
            "GPU",
        ),
        (lambda t: t.split("] 8 ")[0] + "] 8 \n", "cannot be read"),
        (lambda t: t.split("] 8 ")[0], "does not end"),
        (lambda t: t.replace("] 8 ", "]\n[... 999 bytes cut ...]\n] 8 ", 1), "cut"),
    ],
)
def test_a_table_that_cannot_be_read_is_an_error_never_a_guess(change, error) -> None:
    text = (DATA / "2.3.2-rk3566-fp16-sdpa-causal.log").read_text()
    changed = change(text)
    assert changed != text
    placement = read_placement(changed)
    assert list(placement) == ["error"] and error in placement["error"]
    assert attention_on_npu(placement) is None and placement_class(placement) is None


def _passing(placement: dict | None) -> Outcome:
    record = CellRecord("v", "rk3566", "2.3.2", "fp16", Status.PASS, placement=placement)
    return Outcome(record)


def test_require_npu_turns_a_passing_cell_with_attention_on_the_cpu_into_cpu_fallback() -> None:
    placement = read_placement_file(DATA / "2.3.2-rk3566-fp16-sdpa-causal.log")
    outcome = held_to_npu(_passing(placement), "attention")
    assert outcome.status is Status.CPU_FALLBACK
    assert outcome.record.signature == "CPU fallback: exSoftmax13"
    assert "1 attention ops on the CPU" in outcome.record.reason
    assert outcome.message.startswith("cpu-fallback: CPU fallback: exSoftmax13")
    every = held_to_npu(_passing(placement), "all")
    assert every.record.reason.startswith(f"{placement['cpu_ops']} ops on the CPU (npu=all)")
    assert held_to_npu(_passing(placement), None).status is Status.PASS


def test_require_npu_lets_a_fused_attention_pass_and_only_all_fails_other_cpu_ops() -> None:
    fused = read_placement_file(DATA / "2.3.2-rk3588-fp16-sdpa-causal.log")
    assert held_to_npu(_passing(fused), "attention").status is Status.PASS
    assert held_to_npu(_passing(fused), "all").status is Status.PASS
    padded = read_placement_file(DATA / "2.3.2-rk3588-int8-mha-padmask.log")
    assert held_to_npu(_passing(padded), "all").status is Status.PASS


def test_require_npu_never_passes_a_cell_whose_placement_is_unknown() -> None:
    outcome = held_to_npu(_passing({"error": "the log was cut inside the layer table"}), "all")
    assert outcome.status is Status.CRASH and "cut inside" in outcome.record.reason
    assert held_to_npu(_passing(None), "attention").status is Status.CRASH


def test_require_npu_leaves_other_failures_alone() -> None:
    record = CellRecord("v", "rk3566", "2.3.2", "fp16", Status.TOLERANCE_FAIL, placement=None)
    assert held_to_npu(Outcome(record), "all").status is Status.TOLERANCE_FAIL


def test_an_unknown_requirement_is_refused() -> None:
    with pytest.raises(ValueError, match="use one of attention, all"):
        broken_requirement({"cpu": []}, "most")


def test_the_advisor_treats_a_cpu_fallback_as_something_to_fix() -> None:
    from pytest_rknn.pipeline.advise import advise, candidate_fixes
    from pytest_rknn.pipeline.plan import CellSpec
    from pytest_rknn.pipeline.subjects import VariantSubject
    from pytest_rknn.variants.spec import VariantSpec

    cell = CellSpec(
        VariantSubject(VariantSpec("torch-sdpa", 1, 2, 2, 8, 8, 16)), "rk3566", "2.5.0", "fp16"
    )
    placement = read_placement_file(DATA / "2.5.0-rk3566-fp16-sdpa-causal.log")
    record = held_to_npu(_passing(placement), "attention").record
    names = [f.name for f in candidate_fixes(cell, record)]
    assert "manual decomposition" in names and "enable_flash_attention=true" in names
    fused = read_placement_file(DATA / "2.5.0-rk3588-fp16-sdpa-causal.log")

    def run(fix: CellSpec) -> CellRecord:
        return CellRecord(
            fix.subject.id, "rk3566", "2.5.0", fix.quant, Status.PASS, placement=fused
        )

    fixes = advise(cell, record, run)
    assert [f["fix"] for f in fixes] == names
    assert fixes[0]["placement"]["fused"] == ["exSDPAttention"]
    assert "layers" not in fixes[0]["placement"]


def test_a_conversion_whose_table_was_not_read_is_not_cached() -> None:
    from pytest_rknn.pipeline.cache import Conversion

    assert Conversion("j", None, placement={"npu_ops": 1}).cacheable
    assert not Conversion("j", None, placement={"error": "the log was cut"}).cacheable
    assert Conversion("j", Status.CONVERT_FAIL, placement=None).cacheable
