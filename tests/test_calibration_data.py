"""The user's own calibration samples: ``enc.calib.npz`` (a leading sample axis) or a folder
``enc.calib/`` beside ``--rknn-model enc.onnx``, ``--rknn-calibration-data``, and
``rknn.convert(..., calibration=[...])``.

They are checked like the inputs ``.npz`` (one-line errors naming the input and the fix), their
digest is part of the subject's identity, and a quantized cell calibrates on exactly them.
No toolkit runs here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from bert_graphs import BERT_INPUTS, bert_like
from fake_support import CELLS

from pytest_rknn.pipeline.calibration import make_calibration
from pytest_rknn.pipeline.user_models import ModelError, UserModel, provided_model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def sample(seed: int, batch: int = 2, length: int = 6, padded: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), np.int64)
    if padded:
        mask[:, length - padded :] = 0
    return {
        "input_ids": rng.integers(0, 50, (batch, length)),
        "token_type_ids": np.zeros((batch, length), np.int64),
        "attention_mask": mask,
        "position_ids": np.broadcast_to(np.arange(length), (batch, length)).copy(),
    }


def stacked(samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.stack([s[name] for s in samples]) for name in samples[0]}


def read_back(calibration, names: list[str]) -> list[dict[str, np.ndarray]]:
    return [
        {n: np.load(p) for n, p in zip(names, paths, strict=True)} for paths in calibration.samples
    ]


def test_the_calib_npz_beside_the_model_is_its_calibration_and_identity(tmp_path: Path) -> None:
    path = save(bert_like(), tmp_path / "enc.onnx")
    plain = UserModel.load(path, inputs_file=True)
    samples = [sample(i, padded=i) for i in range(3)]
    np.savez(tmp_path / "enc.calib.npz", **stacked(samples))
    user = UserModel.load(path, inputs_file=True)
    assert UserModel.load(path).calibration_data is None, "only --rknn-model looks beside it"
    assert len(user.calibration_data) == 3
    assert user.id.startswith(plain.id + "-cal") and user.id != plain.id
    assert user.to_dict()["calibration_data"]["samples"] == 3
    names = list(BERT_INPUTS)
    calibration = make_calibration(user, 0, 8, names, user.inputs(0), tmp_path / "c")
    assert calibration.source == "user" and calibration.file == "enc.calib.npz"
    assert len(calibration) == 3, "every sample of the user's, whatever --rknn-calibration says"
    for got, want in zip(read_back(calibration, names), samples, strict=True):
        for name in names:
            assert np.array_equal(got[name], want[name])
    samples[1]["input_ids"][0, 0] = (samples[1]["input_ids"][0, 0] + 1) % 50
    np.savez(tmp_path / "enc.calib.npz", **stacked(samples))
    changed = UserModel.load(path, inputs_file=True)
    assert changed.id != user.id, "another sample, another cell (and cache key)"
    again = make_calibration(changed, 0, 8, names, changed.inputs(0), tmp_path / "d")
    assert again.digest != calibration.digest and again.key() != calibration.key()


def test_a_folder_of_npz_is_read_in_name_order(tmp_path: Path) -> None:
    path = save(bert_like(), tmp_path / "enc.onnx")
    folder = tmp_path / "enc.calib"
    folder.mkdir()
    samples = [sample(i, padded=2 * i) for i in range(3)]
    for i, arrays in enumerate(samples):
        np.savez(folder / f"s{i}.npz", **arrays)
    (folder / "README.txt").write_text("not a sample")
    user = UserModel.load(path, inputs_file=True)
    assert user.calibration_data.name == "enc.calib/"
    names = list(BERT_INPUTS)
    calibration = make_calibration(user, 0, 8, names, user.inputs(0), tmp_path / "c")
    got = read_back(calibration, names)
    assert [g["attention_mask"].sum() for g in got] == [12, 8, 4]
    np.savez(tmp_path / "enc.calib.npz", **stacked(samples))
    as_file = UserModel.load(path, inputs_file=True)
    assert as_file.calibration_data.digest == user.calibration_data.digest, "same content"


def test_the_run_option_names_the_data_for_every_model(tmp_path: Path) -> None:
    path = save(bert_like(), tmp_path / "enc.onnx")
    np.savez(tmp_path / "other.npz", **stacked([sample(5), sample(6)]))
    user = UserModel.load(path, inputs_file=True, calibration=tmp_path / "other.npz")
    assert user.calibration_data.name == "other.npz" and len(user.calibration_data) == 2


CALIB_ERRORS = [
    (
        lambda s: {**stacked(s), "input_ids": s[0]["input_ids"]},
        [
            "--rknn-model enc.onnx: enc.calib.npz: input 'input_ids' has shape (2, 6)",
            "declares int64 (2, 6)",
            "stacks the samples on a leading axis: save np.stack([sample, ...])",
        ],
    ),
    (
        lambda s: {**stacked(s), "position_ids": stacked(s)["position_ids"][:2]},
        [
            "enc.calib.npz: the inputs hold different numbers of samples",
            "'position_ids': 2",
            "give every input the same number on the leading axis",
        ],
    ),
    (
        lambda s: {k: v for k, v in stacked(s).items() if k != "attention_mask"},
        ["enc.calib.npz sample 0 lacks input 'attention_mask'", "add it"],
    ),
    (
        lambda s: {**stacked(s), "input_ids": stacked(s)["input_ids"].astype(np.int32)},
        ["enc.calib.npz sample 0: input 'input_ids' is int32", ".astype(np.int64)"],
    ),
    (
        lambda s: {**stacked(s), "labels": np.zeros(3)},
        ["enc.calib.npz sample 0 has 'labels', which is no input of the model"],
    ),
    (
        lambda s: {name: a[:0] for name, a in stacked(s).items()},
        ["enc.calib.npz holds no sample: give at least one"],
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"),
    CALIB_ERRORS,
    ids=["no-axis", "counts", "missing", "dtype", "extra", "0"],
)
def test_calibration_data_that_does_not_fit_is_a_one_line_error(
    tmp_path: Path, change, expected: list[str]
) -> None:
    path = save(bert_like(), tmp_path / "enc.onnx")
    np.savez(tmp_path / "enc.calib.npz", **change([sample(i) for i in range(3)]))
    with pytest.raises(ModelError) as caught:
        UserModel.load(path, inputs_file=True)
    text = str(caught.value)
    assert "\n" not in text
    for part in expected:
        assert part in text


def test_a_bad_folder_is_a_one_line_error(tmp_path: Path) -> None:
    path = save(bert_like(), tmp_path / "enc.onnx")
    folder = tmp_path / "enc.calib"
    folder.mkdir()
    with pytest.raises(ModelError, match=r"enc.calib/ holds no .npz file: save one"):
        UserModel.load(path, inputs_file=True)
    (folder / "a.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match=r"enc.calib/a.npz is not a readable .npz"):
        UserModel.load(path, inputs_file=True)
    arrays = sample(0)
    del arrays["position_ids"]
    np.savez(folder / "a.npz", **arrays)
    with pytest.raises(ModelError, match=r"enc.calib/a.npz lacks input 'position_ids'.*remove"):
        UserModel.load(path, inputs_file=True)


def test_the_fixture_takes_a_list_of_samples(tmp_path: Path) -> None:
    model = bert_like()
    given = provided_model(model, tmp_path, None, [sample(1, padded=3), sample(2)])
    plain = provided_model(model, tmp_path, None)
    assert given.id != plain.id and given.to_dict()["calibration_data"]["samples"] == 2
    names = list(BERT_INPUTS)
    calibration = make_calibration(given, 0, 8, names, given.inputs(0), tmp_path / "c")
    assert calibration.source == "user" and calibration.file == "calibration="
    assert read_back(calibration, names)[0]["attention_mask"].sum() == 6
    with pytest.raises(ValueError, match=r"^rknn.convert: calibration= sample 1 lacks input"):
        provided_model(model, tmp_path, None, [sample(1), {"input_ids": sample(2)["input_ids"]}])
    with pytest.raises(ValueError, match=r"calibration= is one dict; give a list of samples"):
        provided_model(model, tmp_path, None, sample(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"calibration= holds no sample"):
        provided_model(model, tmp_path, None, [])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--rknn-calibration-data=c.npz"],
            "ERROR: --rknn-calibration-data c.npz: it calibrates the models named by "
            "--rknn-model; add one or drop it",
        ),
        (
            ["--rknn-model=enc.onnx", "--rknn-calibration-data=nowhere.npz"],
            "ERROR: --rknn-calibration-data nowhere.npz: no such file or folder; give a .npz of "
            "stacked samples or a folder of .npz",
        ),
        (
            ["--rknn-model=enc.onnx", "--rknn-calibration-data=c.npz"],
            "ERROR: --rknn-model enc.onnx: c.npz: input 'input_ids' has shape (2, 6), the model "
            "declares int64 (2, 6); a calibration file stacks the samples on a leading axis: "
            "save np.stack([sample, ...]) for each input",
        ),
    ],
    ids=["no-model", "no-file", "unstacked"],
)
def test_the_run_option_is_checked_before_the_run(
    pytester: pytest.Pytester, args: list[str], expected: str
) -> None:
    pytester.makepyfile(test_rknn_cells=CELLS)
    save(bert_like(), pytester.path / "enc.onnx")
    np.savez(pytester.path / "c.npz", **sample(0))
    result = pytester.runpytest_inprocess(
        "--rknn-toolkits=2.3.2", "--rknn-platforms=rk3588", "--rknn-only", *args
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.errlines if line.startswith("ERROR:")] == [expected]
