"""hf exports: what is kept on disk, what counts as the exporter's failure, the cross-check.

The fault tests run a FAKE exporter interpreter (a small python script standing in for the
exporter environment's python, named as such) so that each failure is exact and cheap; the
tests marked ``toolkit`` export real transformers models with the real exporter environment.
"""

from __future__ import annotations

import dataclasses
import json
import stat
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pytest_rknn.pipeline import family_exports
from pytest_rknn.pipeline.export_seal import unsealed
from pytest_rknn.pipeline.family_exports import FamilyExports
from pytest_rknn.variants.export_process import ExportProcessError
from pytest_rknn.variants.families import FamilySpec, family_inputs
from pytest_rknn.variants.forms import NotBuildable
from pytest_rknn.variants.hf_export import CROSS_CHECK_REL_L2, ExportFailed, cross_check

SPEC = FamilySpec(family="bert", hidden=16, heads=2, kv_heads=2, seq_len=4, mask="pad")

FAKE_EXPORTER = """#!{python}
# FAKE exporter interpreter for tests: behaves as MODE says, counts its runs.
import json, sys
from pathlib import Path
mode = {mode!r}
count = Path({count!r})
count.write_text(str(int(count.read_text() or 0) + 1) if count.exists() else "1")
jobs = json.loads(Path(sys.argv[2]).read_text())
if mode == "crash" or (mode == "kills" and any(j["spec"]["hidden"] == 16 for j in jobs)):
    sys.exit("Segmentation fault (FAKE)")
if mode == "starves" and any(j["spec"]["hidden"] == 16 for j in jobs):
    sys.exit("MemoryError (FAKE)")
results = []
for job in jobs:
    if mode == "full":
        results.append({{"torch_version": "fake", "transformers_version": "fake", "machine": True,
                        "error": "RuntimeError: serialization failed"}})
    elif mode in ("error", "kills", "starves"):
        results.append({{"torch_version": "fake", "transformers_version": "fake",
                        "error": "UnsupportedOperatorError: aten::fake_op"}})
    else:
        results.append({{"torch_version": "fake", "transformers_version": "missing",
                        "error": "RuntimeError: transformers cannot be imported here"}})
Path(sys.argv[3]).write_text(json.dumps(results))
"""


def fake_exporter(folder: Path, mode: str) -> tuple[Path, Path]:
    """A FAKE exporter interpreter and the file counting its runs."""
    count = folder / f"{mode}.count"
    path = folder / f"fake-exporter-{mode}"
    path.write_text(FAKE_EXPORTER.format(python=sys.executable, mode=mode, count=str(count)))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path, count


def exports(root: Path, python: Path | None) -> FamilyExports:
    return FamilyExports(
        root=root, torch_python=lambda: python, inputs_of=lambda s: family_inputs(s, 0)
    )


def test_an_exporter_error_is_export_fail_kept_so_a_rerun_exports_nothing(tmp_path) -> None:
    python, count = fake_exporter(tmp_path, "error")
    for _run in range(2):
        with pytest.raises(ExportFailed) as caught:
            exports(tmp_path / "root", python).get(SPEC, family_inputs(SPEC, 0))
        assert (
            caught.value.signature
            == "torchscript export failed: UnsupportedOperatorError: aten::fake_op"
        )
    assert count.read_text() == "1"


@pytest.mark.parametrize(
    ("mode", "raised", "message", "runs"),
    [
        # the batch, then the job on its own, once in each of the two runs
        ("crash", ExportProcessError, "failed with code 1: Segmentation fault", "4"),
        # each cell tries again: the space may be free by then
        ("full", OSError, "was not kept: .*serialization failed", "4"),
    ],
    ids=["exporter-dies", "machine-failure"],
)
def test_a_failure_not_of_the_model_is_never_kept(
    tmp_path, mode: str, raised: type[Exception], message: str, runs: str
) -> None:
    python, count = fake_exporter(tmp_path, mode)
    for _run in range(2):
        run = exports(tmp_path / "root", python)
        for _cell in range(2):
            with pytest.raises(raised, match=message):
                run.get(SPEC, family_inputs(SPEC, 0))
    assert count.read_text() == runs
    assert not list((tmp_path / "root").rglob("*.error"))


def test_an_exporter_that_hangs_is_not_tried_again_model_by_model(tmp_path, monkeypatch) -> None:
    calls = []

    def hangs(jobs, python):  # stands in for the export call: its timeout, at once
        calls.append(len(jobs))
        raise ExportProcessError("torch export of 2 job(s) timed out after 900 s", hung=True)

    monkeypatch.setattr(family_exports, "export_families", hangs)
    other = dataclasses.replace(SPEC, hidden=32)
    run = FamilyExports(
        root=tmp_path / "root",
        torch_python=lambda: Path(sys.executable),
        inputs_of=lambda s: family_inputs(s, 0),
        pending=[SPEC, other],
    )
    for spec in (SPEC, other):
        with pytest.raises(ExportProcessError, match="timed out"):
            run.get(spec, family_inputs(spec, 0))
    assert calls == [2]


def test_an_exporter_that_fails_whatever_it_exports_is_tried_alone_twice(tmp_path) -> None:
    python, count = fake_exporter(tmp_path, "crash")
    specs = [SPEC, *(dataclasses.replace(SPEC, hidden=h) for h in (8, 24, 32))]
    run = FamilyExports(
        root=tmp_path / "root",
        torch_python=lambda: python,
        inputs_of=lambda s: family_inputs(s, 0),
        pending=specs,
    )
    for spec in specs:
        with pytest.raises(ExportProcessError, match="Segmentation fault"):
            run.get(spec, family_inputs(spec, 0))
    assert count.read_text() == "3", "the batch, then two jobs alone; no more for the run"


@pytest.mark.parametrize(
    ("mode", "raised"), [("kills", ExportFailed), ("starves", ExportProcessError)]
)
def test_a_model_that_kills_the_exporter_alone_fails_its_own_export(
    tmp_path, mode: str, raised: type[Exception]
) -> None:
    """Unless the process died for want of memory: that is the machine's (a crash)."""
    other = FamilySpec(family="bert", hidden=32, heads=2, kv_heads=2, seq_len=4, mask="pad")
    python, count = fake_exporter(tmp_path, mode)
    run = FamilyExports(
        root=tmp_path / "root",
        torch_python=lambda: python,
        inputs_of=lambda s: family_inputs(s, 0),
        pending=[SPEC, other],
    )
    with pytest.raises(raised, match="Segmentation fault|MemoryError") as caught:
        run.get(SPEC, family_inputs(SPEC, 0))
    if raised is ExportFailed:
        assert caught.value.signature == "exporter process failed"
    with pytest.raises(ExportFailed, match="aten::fake_op"):  # its own, kept
        run.get(other, family_inputs(other, 0))
    assert count.read_text() == "3", "the batch, then each job alone"
    assert [p.name.split(".")[1] for p in (tmp_path / "root").rglob("*.error")] == ["bert"]


def test_an_interpreter_without_transformers_is_not_buildable(tmp_path) -> None:
    python, _count = fake_exporter(tmp_path, "missing")
    with pytest.raises(NotBuildable, match="cannot import transformers"):
        exports(tmp_path / "root", python).get(SPEC, family_inputs(SPEC, 0))
    with pytest.raises(NotBuildable, match="pytest-rknn envs"):
        exports(tmp_path / "root", None).get(SPEC, family_inputs(SPEC, 0))


def _identity_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["out"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


def test_cross_check_tells_a_faithful_export_from_a_wrong_one(tmp_path) -> None:
    model = _identity_model(tmp_path / "m.onnx")
    x = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)
    cross_check(model, {"x": x}, x.astype(np.float64) * (1 + CROSS_CHECK_REL_L2 / 10))
    with pytest.raises(ExportFailed, match="rel_l2") as caught:
        cross_check(model, {"x": x}, x * 1.01)
    assert caught.value.signature == "onnxruntime disagrees with torch eager"
    with pytest.raises(ExportFailed, match="shape"):
        cross_check(model, {"x": x}, x[:1])
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportFailed) as caught:
        cross_check(tmp_path / "bad.onnx", {"x": x}, x)
    assert caught.value.signature.startswith("onnxruntime rejects the export")
    assert str(tmp_path) not in caught.value.signature


def _exporter_python() -> Path:
    from pytest_rknn.envs import exporter_env
    from pytest_rknn.variants.torch_export import find_torch_python

    python = find_torch_python()
    if python is None:
        env = exporter_env()
        if not env.usable:
            pytest.fail("the exporter environment is not built: run `pytest-rknn envs`")
        python = env.python
    return python


@pytest.mark.toolkit
def test_real_exports_are_checked_peaked_kept_and_a_bad_export_is_the_exporters(
    tmp_path, monkeypatch
) -> None:
    python = _exporter_python()
    good = SPEC.replace(hidden=64, heads=4, kv_heads=4, seq_len=16)
    sharp_default = good.replace(init="default", family="vit", mask="none", seq_len=9)
    gpt2_dynamo = FamilySpec(family="gpt2", hidden=16, heads=2, kv_heads=2, exporter="dynamo")
    store = exports(tmp_path / "root", python)
    store.pending = [sharp_default, gpt2_dynamo]
    export = store.get(good, family_inputs(good, 0))
    info = export.to_dict()
    assert info["peak"] > 2 * info["uniform"], info
    assert info["transformers"] == "5.23.0"
    model = onnx.load(str(export.path))
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    with pytest.raises(ExportFailed, match="num_outputs"):
        store.get(gpt2_dynamo, family_inputs(gpt2_dynamo, 0))

    import pytest_rknn.pipeline.family_exports as module

    def no_export(*_args, **_kwargs):
        raise AssertionError("a warm run must not start the exporter")

    monkeypatch.setattr(module, "export_families", no_export)
    warm = exports(tmp_path / "root", python)
    assert warm.get(good, family_inputs(good, 0)).to_dict()["peak"] == info["peak"]
    assert warm.get(sharp_default, family_inputs(sharp_default, 0)).path.is_file()
    with pytest.raises(ExportFailed):
        warm.get(gpt2_dynamo, family_inputs(gpt2_dynamo, 0))
    record = next((tmp_path / "root").rglob(f"{good.id}.*.json"))
    record.write_text("{damaged")
    monkeypatch.undo()
    again = exports(tmp_path / "root", python).get(good, family_inputs(good, 0))
    assert json.loads(record.read_text())["peak"] == pytest.approx(info["peak"])
    assert again.path.is_file()
    # A kept model damaged after it was checked (one byte changed) is exported again.
    damaged = bytearray(again.path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    again.path.write_bytes(bytes(damaged))
    redone = exports(tmp_path / "root", python).get(good, family_inputs(good, 0))
    assert redone.path.read_bytes() != bytes(damaged)
    assert unsealed(redone.path, (redone.path.with_suffix(".json"),)) is None
