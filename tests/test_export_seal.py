"""Kept exports are used only while their seal holds; a full disk's leftovers are never kept.

The run-level tests use a FAKE exporter interpreter (a small python script standing in for the
exporter environment's python, named as such) that writes a small ONNX graph, or fails as a
full disk does, and counts its runs.
"""

from __future__ import annotations

import importlib
import json
import stat
import sys
from pathlib import Path

import onnx
import pytest
from fake_support import SELECTION, fake_suite
from onnx import TensorProto, helper

from pytest_rknn.pipeline.export_seal import discard, seal, seal_path, unsealed
from pytest_rknn.pipeline.materials import Materials
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status
from pytest_rknn.variants.export_process import ExportProcessError
from pytest_rknn.variants.forms import NotBuildable
from pytest_rknn.variants.spec import VariantSpec

SPEC = VariantSpec(
    form="torch-export", batch=1, num_heads=2, num_kv_heads=2, q_len=4, kv_len=4, head_dim=8,
    exporter="torchscript",
)  # fmt: skip


def _model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["q"], ["out"])],
        "identity",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 2, 4, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 4, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


# --- the seal -----------------------------------------------------------------------------------


def test_a_sealed_export_holds_until_a_byte_of_it_changes(tmp_path: Path) -> None:
    model = _model(tmp_path / "m.onnx")
    assert unsealed(model) == "m.onnx has no seal"
    seal(model)
    assert unsealed(model) is None
    data = bytearray(model.read_bytes())
    data[-3] ^= 0x01
    model.write_bytes(bytes(data))
    assert unsealed(model) == "m.onnx changed since it was exported"


def test_external_data_is_sealed_with_its_model(tmp_path: Path) -> None:
    model = _model(tmp_path / "m.onnx")
    data = tmp_path / "m.onnx.data"
    data.write_bytes(b"\0" * 64)
    seal(model)
    assert set(json.loads(seal_path(model).read_text())) == {"m.onnx", "m.onnx.data"}
    data.write_bytes(b"\1" * 64)
    assert unsealed(model) == "m.onnx.data changed since it was exported"
    discard(model)
    assert not list(tmp_path.iterdir())


def test_a_record_sealed_with_its_export_holds_with_it(tmp_path: Path) -> None:
    model = _model(tmp_path / "m.onnx")
    record = tmp_path / "m.json"
    record.write_text('{"peak": 0.47}')
    seal(model, (record,))
    assert unsealed(model, (record,)) is None
    record.write_text('{"peak": 0.97}')
    assert unsealed(model, (record,)) == "m.json changed since it was exported"
    assert "damaged" in unsealed(model, (tmp_path / "other.json",))


@pytest.mark.parametrize("script", ["torch_export_script", "hf_export_script"])
def test_the_export_scripts_tell_the_machines_failures_by_type(script: str) -> None:
    machine_failure = importlib.import_module(f"pytest_rknn.variants.{script}").machine_failure

    def wrapped(inner: BaseException) -> RuntimeError:
        try:
            try:
                raise inner
            except BaseException as exc:
                raise RuntimeError("export failed") from exc
        except RuntimeError as outer:
            return outer

    assert machine_failure(OSError(27, "File too large"))
    assert machine_failure(wrapped(MemoryError()))
    assert machine_failure(wrapped(PermissionError(13, "Permission denied")))
    assert not machine_failure(wrapped(ValueError("unsupported operator")))
    assert not machine_failure(KeyError("x"))


def test_an_empty_export_is_never_sealed(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    with pytest.raises(OSError, match="empty file"):
        seal(model)
    assert not seal_path(model).exists()


@pytest.mark.parametrize(
    ("seal_text", "why"),
    [
        ("", "unreadable"),
        ("[1]", "damaged"),
        ('{"m.onnx": "0", "../other": "0"}', "damaged"),
    ],
)
def test_a_damaged_seal_holds_nothing(tmp_path: Path, seal_text: str, why: str) -> None:
    model = _model(tmp_path / "m.onnx")
    seal_path(model).write_text(seal_text)
    assert why in unsealed(model)


# --- torch exports in a run ---------------------------------------------------------------------

FAKE_EXPORTER = """#!{python}
# FAKE exporter interpreter for tests: writes a small graph, fails as a full disk does, or dies.
import json, sys
from pathlib import Path
mode = Path({mode!r}).read_text()
count = Path({count!r})
count.write_text(str(int(count.read_text()) + 1) if count.exists() else "1")
if mode == "crash":
    sys.exit("Segmentation fault (FAKE)")
results = []
for job in json.loads(Path(sys.argv[2]).read_text()):
    out = Path(job["out"])
    if mode == "full":
        out.write_bytes(b"")
        results.append({{"torch_version": "fake", "machine": True,
                        "error": "OSError: [Errno 27] File too large"}})
    else:
        out.write_bytes(Path({model!r}).read_bytes())
        results.append({{"torch_version": "fake", "opset": 17, "seconds": 0.0}})
Path(sys.argv[3]).write_text(json.dumps(results))
"""


@pytest.fixture
def exporter(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A FAKE exporter interpreter, the file that sets its mode and the file counting runs."""
    mode, count = tmp_path / "mode", tmp_path / "count"
    mode.write_text("ok")
    python = tmp_path / "fake-exporter"
    model = _model(tmp_path / "good.onnx")
    python.write_text(
        FAKE_EXPORTER.format(
            python=sys.executable, mode=str(mode), count=str(count), model=str(model)
        )
    )
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return python, mode, count


def _materials(tmp_path: Path, python: Path) -> Materials:
    return Materials(tmp_path / "work", 0, 2**30, lambda: python, tmp_path / "exports", None)


def test_a_full_disk_export_is_a_host_error_and_nothing_is_kept(
    tmp_path: Path, exporter: tuple[Path, Path, Path]
) -> None:
    python, mode, count = exporter
    mode.write_text("full")
    with pytest.raises(OSError, match="File too large"):
        _materials(tmp_path, python)._torch_export(SPEC)
    assert not [p for p in (tmp_path / "exports").rglob("*") if p.is_file() and p.stat().st_size]
    mode.write_text("ok")
    model = _materials(tmp_path, python)._torch_export(SPEC)
    assert [n.op_type for n in model.graph.node] == ["Identity"]
    assert count.read_text() == "2"


def test_an_export_process_that_dies_is_a_crash_met_once_per_run_and_never_kept(
    tmp_path: Path, exporter: tuple[Path, Path, Path]
) -> None:
    python, mode, count = exporter
    mode.write_text("crash")
    run = _materials(tmp_path, python)
    for _cell in range(2):
        with pytest.raises(ExportProcessError, match="failed with code 1: Segmentation fault"):
            run._torch_export(SPEC)
    assert count.read_text() == "1"
    assert not [p for p in (tmp_path / "exports").rglob("*") if p.suffix in (".onnx", ".error")]
    mode.write_text("ok")
    assert _materials(tmp_path, python)._torch_export(SPEC).graph.node
    assert count.read_text() == "2"


def test_a_run_whose_exporter_dies_records_its_cells_as_crashes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, exporter: tuple[Path, Path, Path]
) -> None:
    python, mode, _count = exporter
    mode.write_text("crash")
    suite = fake_suite(pytester, monkeypatch)
    monkeypatch.setenv("FAKE_RKNN_TORCH_PYTHON", str(python))
    args = (*SELECTION, "--rknn-forms=torch-export", "--rknn-matrix=m.json")
    result = suite.runpytest_subprocess(*args)
    cells = Matrix.load(suite.path / "m.json").cells
    assert cells and result.ret == 1
    for cell in cells:
        assert cell.status is Status.CRASH, (cell.status, cell.reason)
        assert cell.reason.startswith("the exporter failed: torch export with ")
        assert "Segmentation fault (FAKE)" in cell.reason


def _export_once(tmp_path: Path, python: Path) -> Path:
    """Export SPEC with a fresh run's materials; the kept model."""
    _materials(tmp_path, python)._torch_export(SPEC)
    (kept,) = (tmp_path / "exports").rglob(f"{SPEC.id}.onnx")
    return kept


def test_a_kept_export_damaged_later_is_exported_again(
    tmp_path: Path, exporter: tuple[Path, Path, Path]
) -> None:
    python, _mode, count = exporter
    kept = _export_once(tmp_path, python)
    assert unsealed(kept) is None
    _materials(tmp_path, python)._torch_export(SPEC)
    assert count.read_text() == "1"
    kept.write_bytes(b"")  # onnx.load reads an empty file as an empty model, without a word
    model = _materials(tmp_path, python)._torch_export(SPEC)
    assert [n.op_type for n in model.graph.node] == ["Identity"]
    assert count.read_text() == "2" and unsealed(kept) is None


def test_an_empty_error_record_is_no_reason_and_the_export_runs_again(
    tmp_path: Path, exporter: tuple[Path, Path, Path]
) -> None:
    python, _mode, count = exporter
    kept = _export_once(tmp_path, python)
    discard(kept)
    kept.with_suffix(".error").write_text("")  # what a full disk left before records were atomic
    model = _materials(tmp_path, python)._torch_export(SPEC)
    assert model.graph.node and count.read_text() == "2"
    kept.with_suffix(".error").write_text("torch export (torchscript) of x: ValueError: no")
    discard(kept)
    with pytest.raises(NotBuildable, match="ValueError: no"):
        _materials(tmp_path, python)._torch_export(SPEC)
