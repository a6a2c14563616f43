"""``--rknn-dims``'s parts: the option's values, the shapes a cell lists, the shape it does not,
the compiler's memory per graph read from a real build log, and the worker's per-shape answer
as the host checks it (a result that does not answer each listed shape is a protocol error)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_rknn.pipeline.dims import (
    DimsError,
    label,
    largest,
    parse_dims,
    serves,
    shape_sets,
    unlisted,
)
from pytest_rknn.pipeline.dynamic_run import graph_memory
from pytest_rknn.pipeline.input_roles import DeclaredInput
from pytest_rknn.toolkit.protocol import Job, ProtocolError, check_result, write_shape_inputs

DATA = Path(__file__).parent / "data" / "dims"
INT64 = 7
BERT = (
    DeclaredInput("input_ids", INT64, ("batch", "seq")),
    DeclaredInput("attention_mask", INT64, ("batch", "seq")),
)


def test_values_are_sorted_once_and_named_dims_sorted() -> None:
    assert parse_dims(["seq=32|16|32", "batch=2"]) == (("batch", (2,)), ("seq", (16, 32)))
    assert parse_dims([]) == ()


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("seq", "write NAME=V1|V2"),
        ("seq=", "write NAME=V1|V2"),
        ("seq=16|x", "'x' is not a length"),
        ("seq=0", "'0' is not a length"),
        ("my-dim=4", "is not a dim name"),
    ],
)
def test_a_bad_entry_is_one_line_naming_the_fix(entry: str, says: str) -> None:
    with pytest.raises(DimsError, match=says) as info:
        parse_dims([entry])
    assert "\n" not in str(info.value)


def test_a_name_twice_and_too_many_combinations_are_refused() -> None:
    with pytest.raises(DimsError, match="given twice"):
        parse_dims(["seq=1", "seq=2"])
    with pytest.raises(DimsError, match="over 32"):
        parse_dims(["a=1|2|3|4|5|6", "b=1|2|3|4|5|6"])


def test_the_label_is_safe_in_ids_and_k_expressions() -> None:
    dims = parse_dims(["seq=16|32", "batch=1|2"])
    assert label(dims) == "dyn-batch1_2-seq16_32"
    assert all(c.isalnum() or c in "-_" for c in label(dims))
    assert serves(dims) == "batch 1, 2; seq 16, 32"


def test_every_combination_is_a_shape_set_and_unnamed_free_dims_are_one() -> None:
    sets = shape_sets(parse_dims(["seq=16|32"]), BERT)
    assert [s.dims_dict for s in sets] == [{"seq": 16}, {"seq": 32}]
    assert sets[1].shapes_dict == {"input_ids": (1, 32), "attention_mask": (1, 32)}
    assert largest(sets).dims_dict == {"seq": 32}
    both = shape_sets(parse_dims(["seq=16|32", "batch=1|2"]), BERT)
    assert len(both) == 4 and largest(both).shapes_dict["input_ids"] == (2, 32)


def test_the_unlisted_shape_is_between_listed_ones_or_past_the_only_one() -> None:
    assert unlisted(parse_dims(["seq=16|32"]), BERT).dims_dict == {"seq": 24}
    assert unlisted(parse_dims(["seq=16|17"]), BERT).dims_dict == {"seq": 18}
    assert unlisted(parse_dims(["seq=64"]), BERT).dims_dict == {"seq": 128}
    for dims in (["seq=16|32|64"], ["seq=3|4"], ["seq=1"]):
        parsed = parse_dims(dims)
        probe = unlisted(parsed, BERT).dims_dict["seq"]
        assert probe not in parsed[0][1]


def test_memory_per_graph_is_read_by_its_shapes_from_a_real_build_log() -> None:
    """2.3.0 on rk3588 compiles the largest shape first, whatever the listed order (16, 64,
    32): each graph's memory belongs to the shapes its ``infer shape for`` line names."""
    found = graph_memory(DATA / "build-2.3.0-seq16_64_32.log")
    assert found == {
        "[[1, 64]]": {"internal_bytes": int(50.1875 * 1024), "weight_bytes": int(7.625 * 1024)},
        "[[1, 32]]": {"internal_bytes": int(17.1875 * 1024), "weight_bytes": int(7.625 * 1024)},
        "[[1, 16]]": {"internal_bytes": int(6.1875 * 1024), "weight_bytes": int(7.625 * 1024)},
    }
    assert graph_memory(DATA / "no-such.log") == {}


def _job(tmp_path: Path, shapes: int = 2, probe: bool = True) -> Job:
    job = Job.create(tmp_path / "m.onnx", "rk3588", tmp_path, [np.zeros((1, 32), np.int64)])
    sets = [[np.zeros((1, 16 * (i + 1)), np.int64)] for i in range(shapes)]
    write_shape_inputs(job, sets, [np.zeros((1, 24), np.int64)] if probe else [])
    return job


def _answer(job: Job, **fields: object) -> dict:
    out = str(Path(job.outdir) / "shape0_output0.npy")
    body = {
        "id": job.id,
        "failed_phase": None,
        "outputs": [out],
        "shape_outputs": [[out], []],
        "shape_errors": [None, "ValueError: refused"],
        "shape_seconds": [0.1, 0.2],
        "unlisted": {"answer": "refused", "message": "not in [[1, 32], [1, 16]]"},
    }
    body.update(fields)
    return {"op": "result", "id": job.id, "result": body}


def test_the_job_carries_each_shapes_inputs_in_its_own_folder(tmp_path: Path) -> None:
    job = _job(tmp_path)
    assert [np.load(p[0]).shape for p in job.shape_inputs] == [(1, 16), (1, 32)]
    assert np.load(job.probe_inputs[0]).shape == (1, 24)
    assert all(Path(p[0]).parent == Path(job.outdir) for p in job.shape_inputs)
    assert job.to_wire()["shape_inputs"] == job.shape_inputs


def test_a_per_shape_answer_is_taken_when_it_answers_each_listed_shape(tmp_path: Path) -> None:
    job = _job(tmp_path)
    result = check_result(_answer(job), job)
    assert result.shape_errors == [None, "ValueError: refused"]
    assert result.unlisted == {"answer": "refused", "message": "not in [[1, 32], [1, 16]]"}


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"shape_outputs": [["x"]], "shape_errors": [None]}, "does not answer each"),
        ({"shape_outputs": [["/elsewhere/o.npy"], []]}, "outside its folder"),
        ({"shape_errors": [None, None]}, "neither outputs nor an error"),
        ({"unlisted": None}, "unlisted shape"),
        ({"unlisted": {"answer": "fine", "message": ""}}, "unlisted shape"),
        ({"shape_seconds": [0.1, True]}, "shape_seconds"),
    ],
)
def test_a_per_shape_answer_that_does_not_fit_the_job_is_a_protocol_error(
    tmp_path: Path, fields: dict, says: str
) -> None:
    job = _job(tmp_path)
    with pytest.raises(ProtocolError, match=says):
        check_result(_answer(job, **fields), job)


def test_a_job_without_shapes_may_not_answer_per_shape(tmp_path: Path) -> None:
    job = Job.create(tmp_path / "m.onnx", "rk3588", tmp_path, [np.zeros((1, 4))])
    message = _answer(job, outputs=[str(Path(job.outdir) / "output0.npy")])
    with pytest.raises(ProtocolError, match="lists no shapes"):
        check_result(message, job)


def test_a_job_that_failed_before_its_shapes_answers_none_of_them(tmp_path: Path) -> None:
    job = _job(tmp_path)
    message = _answer(job, failed_phase="build", outputs=[], shape_outputs=None)
    result = check_result(message, job)
    assert result.shape_outputs is None and result.failed_phase == "build"
