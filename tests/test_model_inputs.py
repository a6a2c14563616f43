"""Inputs of users' models: role-aware generated values, the ``.npz`` beside ``--rknn-model``.

Small graphs built with onnx.helper (``tests/bert_graphs.py``): generated token ids index their
embedding table, masks are 0/1 with at least one 1 per row, position ids are a range, token
type ids zeros; an integer input of unknown role is a one-line error naming it and the fix; an
``.npz`` beside the model is read, checked (each problem one line, naming the input and the fix)
and becomes part of the subject's identity. No toolkit runs here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from bert_graphs import BERT_INPUTS, bert_like
from fake_support import CELLS
from onnx import TensorProto, helper, numpy_helper

from pytest_rknn.pipeline.calibration import make_calibration
from pytest_rknn.pipeline.input_roles import (
    FALLBACK_VOCAB,
    DeclaredInput,
    InputRoleError,
    declared_inputs,
    judge_roles,
)
from pytest_rknn.pipeline.materials import HostError, Materials
from pytest_rknn.pipeline.user_models import ModelError, UserModel, provided_model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def one_input(
    name: str,
    nodes: list[onnx.NodeProto],
    out: str,
    elem: int = TensorProto.INT64,
    dims: tuple[int, ...] = (2, 5),
    initializers: list[onnx.TensorProto] | None = None,
    out_dims: tuple[int, ...] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "one_input",
        [helper.make_tensor_value_info(name, elem, list(dims))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_dims or dims))],
        initializers or [],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def table(name: str, rows: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones((rows, 3), np.float32), name)


def test_bert_inputs_get_values_of_their_role(tmp_path: Path) -> None:
    vocab = 37
    model = UserModel.load(save(bert_like(vocab=vocab, batch=3, length=9), tmp_path / "b.onnx"))
    roles = {name: role.kind for name, role in model.roles}
    assert roles == {
        "input_ids": "token-ids",
        "token_type_ids": "token-type-ids",
        "attention_mask": "mask",
        "position_ids": "position-ids",
    }
    for seed in range(5):
        inputs = model.inputs(seed)
        assert set(inputs) == set(BERT_INPUTS)
        assert all(a.dtype == np.int64 and a.shape == (3, 9) for a in inputs.values())
        ids = inputs["input_ids"]
        assert ids.min() >= 0 and ids.max() < vocab
        assert len(np.unique(ids)) > 2, "ids spread over the vocabulary"
        assert not inputs["token_type_ids"].any()
        assert (inputs["position_ids"] == np.arange(9)[None, :]).all()
        mask = inputs["attention_mask"]
        assert set(np.unique(mask)) <= {0, 1}
        assert (mask[0] == 1).all(), "the longest row of a padded batch is whole"
        assert (mask.sum(axis=1) >= 1).all(), "no row is all padding"
        for row in mask[1:]:
            length = int(row.sum())
            assert (row[:length] == 1).all() and (row[length:] == 0).all(), "trailing zeros"
        assert (mask[1:] == 0).any(), "rows after the first are padded"
        # The reference runs on them: every id indexes its table.
        (y,) = model.reference(model.build(), inputs)
        assert y.shape == (3, 9, 8) and np.isfinite(y).all()


def test_a_batch_of_one_and_free_dims_give_a_mask_of_ones(tmp_path: Path) -> None:
    model = UserModel.load(save(bert_like(batch="batch", length=7), tmp_path / "b.onnx"))
    inputs = model.inputs(0)
    assert inputs["attention_mask"].shape == (1, 7)
    assert (inputs["attention_mask"] == 1).all()
    assert model.to_dict()["input_roles"]["input_ids"] == (
        "token-ids below 50 (the rows of 'word_embeddings')"
    )


def test_the_table_is_found_through_layout_ops_and_a_dequantized_table(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Unsqueeze", ["ids32", "axis0"], ["ids3"]),
        helper.make_node("Reshape", ["ids3", "flat"], ["ids1"]),
        helper.make_node("DequantizeLinear", ["qtable", "qscale"], ["table"]),
        helper.make_node("Gather", ["table", "ids1"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
        numpy_helper.from_array(np.ones((11, 4), np.int8), "qtable"),
        numpy_helper.from_array(np.array(0.5, np.float32), "qscale"),
    ]
    model = one_input(
        "input_ids", nodes, "y", dims=(4, 64), initializers=initializers, out_dims=(256, 4)
    )
    user = UserModel.load(save(model, tmp_path / "q.onnx"))
    (role,) = (r for _n, r in user.roles)
    assert (role.kind, role.high, role.table) == ("token-ids", 11, "table")
    ids = user.inputs(3)["input_ids"]
    assert ids.max() < 11 and ids.max() > FALLBACK_VOCAB


def test_token_ids_without_a_table_fall_back_to_zero_and_one(tmp_path: Path) -> None:
    nodes = [helper.make_node("Cast", ["decoder_input_ids"], ["y"], to=TensorProto.FLOAT)]
    user = UserModel.load(save(one_input("decoder_input_ids", nodes, "y"), tmp_path / "d.onnx"))
    ids = user.inputs(0)["decoder_input_ids"]
    assert set(np.unique(ids)) <= set(range(FALLBACK_VOCAB))
    assert "no table found" in user.to_dict()["input_roles"]["decoder_input_ids"]


def test_an_unnamed_integer_input_is_judged_from_the_graph(tmp_path: Path) -> None:
    gather = one_input(
        "codes",
        [helper.make_node("Gather", ["codebook", "codes"], ["y"])],
        "y",
        initializers=[table("codebook", 5)],
        out_dims=(2, 5, 3),
    )
    user = UserModel.load(save(gather, tmp_path / "g.onnx"))
    assert dict(user.roles)["codes"].kind == "indices"
    assert user.inputs(0)["codes"].max() < 5
    masking = one_input(
        "keep",
        [
            helper.make_node("Cast", ["keep"], ["keep_f"], to=TensorProto.FLOAT),
            helper.make_node("Sub", ["one", "keep_f"], ["y"]),
        ],
        "y",
        initializers=[numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    user = UserModel.load(save(masking, tmp_path / "m.onnx"))
    assert dict(user.roles)["keep"].kind == "mask"
    assert set(np.unique(user.inputs(0)["keep"])) <= {0, 1}


def unknown_model(path: Path, elem: int = TensorProto.INT64) -> Path:
    nodes = [
        helper.make_node("Cast", ["step"], ["step_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["step_f", "step_f"], ["y"]),
    ]
    return save(one_input("step", nodes, "y", elem=elem), path)


@pytest.mark.parametrize("elem", [TensorProto.INT64, TensorProto.BOOL], ids=["int", "bool"])
def test_an_input_of_unknown_role_is_a_one_line_error_asking_for_an_npz(
    tmp_path: Path, elem: int
) -> None:
    user = UserModel.load(unknown_model(tmp_path / "counter.onnx", elem))
    assert dict(user.roles)["step"].kind == "unknown"
    with pytest.raises(InputRoleError) as caught:
        user.inputs(0)
    text = str(caught.value)
    assert "\n" not in text
    assert "'step'" in text and "counter.npz" in text and "inputs=" in text
    materials = Materials(tmp_path, 0, 2**30, lambda: None, tmp_path / "e", cache=None)
    with pytest.raises(HostError, match="no inputs for model-counter-.*'step'"):
        materials.inputs(user)


def test_position_ids_longer_than_their_table_are_refused(tmp_path: Path) -> None:
    user = UserModel.load(save(bert_like(positions=4, length=6), tmp_path / "b.onnx"))
    with pytest.raises(InputRoleError, match="'position_ids' holds 6 positions.*4 rows"):
        user.inputs(0)


def test_float_inputs_stay_unit_normal(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["attention_mask"], ["y"])]
    model = one_input("attention_mask", nodes, "y", elem=TensorProto.FLOAT, dims=(64, 64))
    user = UserModel.load(save(model, tmp_path / "f.onnx"))
    x = user.inputs(0)["attention_mask"]
    assert x.dtype == np.float32
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    assert not np.array_equal(x, user.inputs(1)["attention_mask"])


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def bert_arrays(batch: int = 2, length: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    mask = np.ones((batch, length), np.int64)
    mask[-1, length // 2 :] = 0
    return {
        "input_ids": rng.integers(0, 50, (batch, length)),
        "token_type_ids": np.zeros((batch, length), np.int64),
        "attention_mask": mask,
        "position_ids": np.broadcast_to(np.arange(length), (batch, length)).copy(),
    }


def test_the_npz_beside_the_model_is_its_inputs_and_its_identity(tmp_path: Path) -> None:
    path = save(bert_like(), tmp_path / "enc.onnx")
    plain = UserModel.load(path, inputs_file=True)
    arrays = bert_arrays()
    npz = write_npz(tmp_path / "enc.npz", **arrays)
    user = UserModel.load(path, inputs_file=True)
    assert UserModel.load(path).inputs_file is None, "only --rknn-model looks for an .npz"
    for seed in (0, 1):
        got = user.inputs(seed)
        assert list(got) == list(BERT_INPUTS)
        for name, array in arrays.items():
            assert np.array_equal(got[name], array) and got[name].dtype == array.dtype
    digest = hashlib.sha256(npz.read_bytes()).hexdigest()
    record = user.to_dict()
    assert record["inputs_file"] == {"path": str(npz), "sha256": digest}
    assert record["inputs"] == {name: [2, 6] for name in BERT_INPUTS}
    assert user.id == f"{plain.id}-npz{digest[:8]}"
    arrays["input_ids"] = (arrays["input_ids"] + 1) % 50
    write_npz(npz, **arrays)
    changed = UserModel.load(path, inputs_file=True)
    assert changed.id != user.id and changed.to_dict() != user.to_dict()
    assert changed != user, "the subject (and the cache keys made from it) changed"


def test_calibration_of_an_npz_model_is_generated_never_the_npz(tmp_path: Path) -> None:
    path = save(bert_like(batch="batch", length="sequence"), tmp_path / "enc.onnx")
    arrays = bert_arrays(batch=3, length=10)
    write_npz(tmp_path / "enc.npz", **arrays)
    user = UserModel.load(path, inputs_file=True)
    names = list(BERT_INPUTS)
    calibration = make_calibration(user, 0, 4, names, user.inputs(0), tmp_path / "c")
    for paths in calibration.samples:
        sample = {name: np.load(p) for name, p in zip(names, paths, strict=True)}
        assert not all(np.array_equal(sample[n], arrays[n]) for n in names)
        assert all(sample[n].shape == (3, 10) for n in names), "in the test inputs' shapes"
        assert sample["input_ids"].max() < 50
        assert set(np.unique(sample["attention_mask"])) <= {0, 1}
        assert (sample["position_ids"] == np.arange(10)).all()


NPZ_ERRORS = [
    (
        lambda a: {k: v for k, v in a.items() if k != "attention_mask"},
        [
            "--rknn-model enc.onnx: enc.npz lacks input 'attention_mask'",
            "(keys: input_ids, token_type_ids, position_ids)",
            "add it or delete the .npz",
        ],
    ),
    (
        lambda a: {**a, "labels": a["input_ids"]},
        ["enc.npz has 'labels', which is no input of the model", "remove or rename it"],
    ),
    (
        lambda a: {**a, "input_ids": a["input_ids"].astype(np.float32)},
        [
            "input 'input_ids' is float32",
            "declares int64 (2, 6)",
            ".astype(np.int64)",
        ],
    ),
    (
        lambda a: {**a, "position_ids": a["position_ids"][:, :5]},
        ["input 'position_ids' has shape (2, 5)", "declares int64 (2, 6)", "give it that shape"],
    ),
    (
        lambda a: {**a, "token_type_ids": a["token_type_ids"][0]},
        ["input 'token_type_ids' has shape (6,)", "declares int64 (2, 6)"],
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"), NPZ_ERRORS, ids=["missing", "extra", "dtype", "dim", "rank"]
)
def test_an_npz_that_does_not_fit_the_model_is_a_one_line_error(
    tmp_path: Path, change, expected: list[str]
) -> None:
    path = save(bert_like(), tmp_path / "enc.onnx")
    write_npz(tmp_path / "enc.npz", **change(bert_arrays()))
    with pytest.raises(ModelError) as caught:
        UserModel.load(path, inputs_file=True)
    text = str(caught.value)
    assert "\n" not in text
    for part in expected:
        assert part in text


def test_free_dims_take_any_size_from_the_npz(tmp_path: Path) -> None:
    path = save(bert_like(batch="batch", length=6), tmp_path / "enc.onnx")
    write_npz(tmp_path / "enc.npz", **bert_arrays(batch=5))
    assert UserModel.load(path, inputs_file=True).to_dict()["inputs"]["input_ids"] == [5, 6]
    write_npz(tmp_path / "enc.npz", **bert_arrays(batch=5, length=7))
    with pytest.raises(ModelError, match=r"shape \(5, 7\).*int64 \(batch, 6\)"):
        UserModel.load(path, inputs_file=True)


def test_a_free_dim_takes_one_size_in_every_input(tmp_path: Path) -> None:
    """The graph is loaded in the arrays' shapes: two sizes of one named dim would reach the
    toolkit as a model that cannot exist (its build fails in shape inference)."""
    path = save(bert_like(batch="batch", length="seq"), tmp_path / "enc.onnx")
    arrays = bert_arrays(batch=2, length=6)
    arrays["position_ids"] = arrays["position_ids"][:, :5]
    write_npz(tmp_path / "enc.npz", **arrays)
    with pytest.raises(ModelError) as caught:
        UserModel.load(path, inputs_file=True)
    text = str(caught.value)
    assert "\n" not in text
    assert "free dim 'seq' is 6 in input 'input_ids' and 5 in input 'position_ids'" in text
    assert text.endswith("give it one size in every input")


@pytest.mark.parametrize(
    "content",
    [b"PK\x03\x04 truncated zip", b"not a zip at all", None],
    ids=["truncated", "garbage", "pickled"],
)
def test_an_unreadable_npz_is_a_one_line_error(tmp_path: Path, content: bytes | None) -> None:
    path = save(bert_like(), tmp_path / "enc.onnx")
    npz = tmp_path / "enc.npz"
    if content is None:
        arrays = bert_arrays()
        np.savez(npz, **{**arrays, "input_ids": np.array([{"a": 1}], dtype=object)})
    else:
        npz.write_bytes(content)
    with pytest.raises(ModelError) as caught:
        UserModel.load(path, inputs_file=True)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("--rknn-model enc.onnx: enc.npz is not a readable .npz (")
    assert "numpy.savez" in text and "delete it" in text


def test_fixture_inputs_that_do_not_fit_are_a_value_error(tmp_path: Path) -> None:
    arrays = bert_arrays()
    del arrays["position_ids"]
    with pytest.raises(ValueError, match="rknn.convert: inputs= lacks input 'position_ids'"):
        provided_model(bert_like(), tmp_path, arrays)
    given = provided_model(bert_like(), tmp_path, bert_arrays())
    assert np.array_equal(given.inputs(0)["input_ids"], bert_arrays()["input_ids"])
    assert given.sample(0)["input_ids"].shape == (2, 6)
    record = given.to_dict()
    assert record["inputs_given"] is True and "input_roles" not in record


def test_roles_come_from_the_graph_not_from_the_order(tmp_path: Path) -> None:
    model = bert_like(drop=("token_type_ids", "position_ids"))
    roles = judge_roles(model, declared_inputs(model))
    assert {n: r.kind for n, r in roles.items()} == {
        "input_ids": "token-ids",
        "attention_mask": "mask",
    }


def test_a_bad_npz_ends_the_run_with_one_error_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_rknn_cells=CELLS)
    save(bert_like(), pytester.path / "enc.onnx")
    arrays = bert_arrays()
    del arrays["attention_mask"]
    write_npz(pytester.path / "enc.npz", **arrays)
    result = pytester.runpytest_inprocess(
        "--rknn-toolkits=2.3.2", "--rknn-platforms=rk3588", "--rknn-only", "--rknn-model=enc.onnx"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert errors == [
        "ERROR: --rknn-model enc.onnx: enc.npz lacks input 'attention_mask' (keys: input_ids, "
        "token_type_ids, position_ids): add it or delete the .npz"
    ]


def test_the_lengths_fed_as_one_are_the_free_dims_past_an_inputs_first_axis() -> None:
    int64 = TensorProto.INT64
    declared = (
        DeclaredInput("input_ids", int64, ("batch", None, "seq")),
        DeclaredInput("attention_mask", int64, ("batch", "seq", 4)),
    )
    assert UserModel(Path("m.onnx"), "0" * 64, declared).lengths_fed_as_one == [
        "input_ids[1]",
        "seq",
    ]
    batch_only = (DeclaredInput("pixels", TensorProto.FLOAT, (None, 3, 8, 8)),)
    assert UserModel(Path("m.onnx"), "0" * 64, batch_only).lengths_fed_as_one == []
    tokens = (DeclaredInput("ids", int64, ("tokens",)),)
    assert UserModel(Path("m.onnx"), "0" * 64, tokens).lengths_fed_as_one == ["tokens"]
