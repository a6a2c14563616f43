"""Faults in what a run reads: corrupt cache entries, twin models, bad options and files.

Corrupt conversion-cache entries are converted again, never trusted; identical models under two
names are two cells; every bad input (non-finite or tiny limits and tolerance bounds, colliding
paths, model folders, corrupt baselines) is one ``ERROR:`` line, exit 4, no traceback. Each run
ends in a matrix that :func:`faults_support.check` finds whole (see there).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fake_support import FAKE_DIR
from faults_support import (
    SELECTION,
    TALLY,
    check,
    run,
)

from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.status import Status

# ---------------------------------------------------------------------------------------------
# Corrupt conversion-cache entries
# ---------------------------------------------------------------------------------------------


def _entries(suite: pytest.Pytester) -> list[Path]:
    folder = suite.path / ".pytest_cache" / "v" / "pytest-rknn" / "conversions"
    return sorted(folder.iterdir())


def _outputs(entry: Path) -> Path:
    root = entry.parents[3] / "d" / "pytest-rknn-outputs"
    return root / entry.name / "output0.npy"


def _edit(**changes: object) -> Callable[[Path, list[Path]], None]:
    def corrupt(entry: Path, entries: list[Path]) -> None:
        data = json.loads(entry.read_text())
        for name, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(name), dict):
                data[name] = {**data[name], **value}
            else:
                data[name] = value
        entry.write_text(json.dumps(data))

    return corrupt


def _text(text: str | bytes) -> Callable[[Path, list[Path]], None]:
    def corrupt(entry: Path, entries: list[Path]) -> None:
        entry.write_bytes(text if isinstance(text, bytes) else text.encode())

    return corrupt


def _other_entry(entry: Path, entries: list[Path]) -> None:
    other = entries[(entries.index(entry) + 1) % len(entries)]
    entry.write_bytes(other.read_bytes())


def _changed_outputs(entry: Path, entries: list[Path]) -> None:
    path = _outputs(entry)
    np.save(path, np.load(path) * 1.5)


def _deleted_outputs(entry: Path, entries: list[Path]) -> None:
    _outputs(entry).unlink()


def _truncated_outputs(entry: Path, entries: list[Path]) -> None:
    path = _outputs(entry)
    path.write_bytes(path.read_bytes()[:100])


def _swapped_outputs(entry: Path, entries: list[Path]) -> None:
    """Swap the outputs with another entry's whose bytes differ (another variant's)."""
    mine = _outputs(entry)
    other = next(_outputs(e) for e in entries if _outputs(e).read_bytes() != mine.read_bytes())
    data, theirs = mine.read_bytes(), other.read_bytes()
    mine.write_bytes(theirs)
    other.write_bytes(data)


def _folder(entry: Path, entries: list[Path]) -> None:
    entry.unlink()
    entry.mkdir()


CORRUPTIONS: dict[str, Callable[[Path, list[Path]], None]] = {
    "not-json": _text("{not json"),
    "not-utf8": _text(b'{"schema": "\xff\xfe"}'),
    "nested-deep": _text("[" * 100_000 + "]" * 100_000),
    "null": _text("null"),
    "a-list": _text("[1, 2]"),
    "empty": _text(""),
    "wrong-schema": _edit(schema="pytest-rknn/matrix"),
    "wrong-version": _edit(version=99),
    "another-key-inside": _other_entry,
    "job-id-a-number": _edit(job_id=12),
    "timing-a-string": _edit(timings={"wall": "fast"}),
    "returncode-a-float": _edit(returncodes={"build": 0.5}),
    "verdict-pass": _edit(status="pass", outputs=[]),
    "verdict-tolerance-fail": _edit(status="tolerance-fail", outputs=[]),
    "verdict-unsupported": _edit(status="unsupported", outputs=[]),
    "status-unknown": _edit(status="splendid"),
    "crash-cached": _edit(status="crash", outputs=[]),
    "no-outputs": _edit(outputs=[]),
    "digest-a-number": _edit(outputs=[7]),
    "changed-outputs": _changed_outputs,
    "deleted-outputs": _deleted_outputs,
    "truncated-outputs": _truncated_outputs,
    "swapped-outputs": _swapped_outputs,
    "a-folder": _folder,
}


def test_corrupt_cache_entries_are_converted_again_never_trusted(suite) -> None:
    twelve = "--rknn-examples=3"
    cold = run(suite, twelve, "--rknn-matrix=cold.json")
    assert cold.ret == 0, cold.out[-2000:]
    found = check(suite, suite.path / "cold.json", cold.finished)
    statuses = {key: cell.status for key, cell in found.items()}
    kinds = list(CORRUPTIONS.items())
    for round_number in range(0, len(kinds), 12):
        entries = _entries(suite)
        assert len(entries) == 12
        batch = kinds[round_number : round_number + 12]
        for entry, (_, corrupt) in zip(entries, batch, strict=False):
            corrupt(entry, entries)
        TALLY.faults += len(batch)
        name = f"corrupt{round_number}.json"
        result = run(suite, twelve, f"--rknn-matrix={name}")
        result.clean()
        found = check(suite, suite.path / name, result.finished)
        assert {k: c.status for k, c in found.items()} == statuses
        trusted = [cell.id for cell in found.values() if cell.cached]
        assert len(trusted) == 12 - len(batch), [b[0] for b in batch]
        folders = [entry for entry in _entries(suite) if entry.is_dir()]
        for entry in folders:  # pytest's cache cannot write over a folder; the cell still ran
            shutil.rmtree(entry)
    warm = run(suite, twelve, "--rknn-matrix=warm.json")
    found = check(suite, suite.path / "warm.json", warm.finished)
    again = [cell.id for cell in found.values() if not cell.cached]
    assert len(again) == len(folders), "every other entry was written again, and is trusted"


# ---------------------------------------------------------------------------------------------
# Identical models under two names
# ---------------------------------------------------------------------------------------------


def test_identical_models_under_two_names_are_two_cells_cold_and_warm(suite) -> None:
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "user",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    save(model, suite.path / "twin_a.onnx")
    (suite.path / "twin_b.onnx").write_bytes((suite.path / "twin_a.onnx").read_bytes())
    args = ("--rknn-examples=0", "--rknn-model=twin_a.onnx", "--rknn-model=twin_b.onnx")
    for name in ("cold.json", "warm.json"):
        result = run(suite, *args, f"--rknn-matrix={name}")
        TALLY.faults += 1
        found = check(suite, suite.path / name, result.finished)
        assert len(found) == 8
        for cell in found.values():
            stem = Path(cell.variant["path"]).stem
            assert cell.variant_id.startswith(f"model-{stem}-"), (cell.variant_id, stem)


# ---------------------------------------------------------------------------------------------
# Bad inputs: one ERROR: line each, exit 4, no traceback
# ---------------------------------------------------------------------------------------------


def _matrix_text(cells: list[dict]) -> str:
    return json.dumps({"schema": "pytest-rknn/matrix", "version": 1, "meta": {}, "cells": cells})


_CELL = CellRecord("v", "rk3588", "2.3.2", "fp16", Status.PASS, {"form": "model"}).to_dict()
# name: (content, what the error line says)
BASELINES: dict[str, tuple[str | bytes, str]] = {
    "not-json": ("{not json", "is not valid JSON"),
    "truncated": (_matrix_text([_CELL])[:-5], "the file looks truncated"),
    "empty": ("", "is not valid JSON"),
    "binary": (b"\xff\xfe\x00garbage", "cannot be read"),
    "nested-deep": ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
    "null": ("null", "is not a pytest-rknn matrix"),
    "version-2": (json.dumps({"schema": "pytest-rknn/matrix", "version": 2}), "version 2"),
    "unknown-status": (_matrix_text([{**_CELL, "status": "splendid"}]), "cells[0].status"),
    "twice-the-same-cell": (_matrix_text([_CELL, _CELL]), "appears more than once"),
    "timing-a-string": (_matrix_text([{**_CELL, "timings": {"wall": "NaN"}}]), "timings.wall"),
}
BAD_INPUTS = [
    *((f"--rknn-timeout={v}", "finite number of seconds > 0") for v in ("nan", "NaN", "inf")),
    *((f"--rknn-timeout={v}", "finite number of seconds > 0") for v in ("-inf", "1e999")),
    *((f"--rknn-timeout={v}", "finite number of seconds > 0") for v in ("0", "-1")),
    *(
        (f"--rknn-max-memory={v}", "is below 640M")
        for v in ("0", "1", "255M", "256M", "400M", "639M", "0.2G")
    ),
    ("--override-ini=rknn_bounds_fp16=max_abs=nan", "must be a finite number"),
    ("--override-ini=rknn_bounds_fp16=min_cosine=inf", "must be a finite number"),
    ("--override-ini=rknn_bounds_int8=max_rel=-1", "must be a finite number >= 0"),
    ("--rknn-html=m.json", "same file as --rknn-matrix"),
    ("--rknn-html=./sub/../m.json", "same file as --rknn-matrix"),
    ("--rknn-matrix=/dev/null", "is not a regular file"),
    ("--rknn-model=.", "is a folder"),
    ("--rknn-model=folder", "is a folder"),
    *((f"--rknn-baseline={name}.json", says) for name, (_, says) in BASELINES.items()),
    ("--rknn-config=optimisation_level=2", "no rknn-toolkit2 version's config() accepts it"),
    ("--rknn-config=target_platform=rk3588", "set by --rknn-platforms"),
    ("--rknn-quant=fp16+optimization_level", "is not key:value"),
]


@pytest.mark.parametrize(("option", "says"), BAD_INPUTS, ids=[o for o, _ in BAD_INPUTS])
def test_a_bad_input_is_one_error_line(suite, monkeypatch, option: str, says: str) -> None:
    monkeypatch.syspath_prepend(str(FAKE_DIR))
    (suite.path / "folder").mkdir()
    (suite.path / "sub").mkdir()
    for name, (text, _) in BASELINES.items():
        data = text if isinstance(text, bytes) else text.encode()
        (suite.path / f"{name}.json").write_bytes(data)
    TALLY.bad_inputs += 1
    result = suite.runpytest_inprocess(*SELECTION, "--rknn-matrix=m.json", option)
    text = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text[-2000:]
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, text[-2000:]
    assert says in errors[0], errors[0]
    assert "Traceback" not in text and "INTERNALERROR" not in text
    assert not (suite.path / "m.json").exists()
