"""The user's own calibration samples, checked against what the graph declares.

A quantized build is only as good as the samples it calibrates on; a user who has real traffic
keeps it beside the model, as the inputs ``.npz`` is kept:

- ``enc.calib.npz`` beside ``enc.onnx``: keys are the graph's input names, each array holds
  the samples stacked on a leading axis (``np.stack``), the same number for every input;
- or a folder ``enc.calib/`` of ``.npz`` files, each one sample shaped like the inputs
  ``.npz`` (read in name order; other files are ignored);
- ``--rknn-calibration-data PATH`` (either kind) for every ``--rknn-model`` of a run;
- ``rknn.convert(..., calibration=[{name: array, ...}, ...])`` in a test.

Each sample is checked like the inputs ``.npz`` (:func:`~.input_files.check_inputs`); any
problem is an :class:`~.input_files.InputFileError` of one line naming the input and the fix.
:class:`CalibrationData` carries the samples and a digest of their content, which is part of the
model subject's identity and, through the calibration set, of the conversion's cache key.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pytest_rknn.pipeline.input_files import InputFileError, check_inputs
from pytest_rknn.pipeline.input_roles import DeclaredInput
from pytest_rknn.results.safe_read import UnreadableFile, npz_bytes

DEFAULT_MEMORY = 8 << 30

SUFFIX = ".calib"


@dataclass(frozen=True)
class CalibrationData:
    """Samples of the user's (each the arrays of every input, in the graph's order); ``name``
    says where they came from (``enc.calib.npz``, ``enc.calib/``, ``calibration=``)."""

    name: str
    digest: str
    samples: tuple[tuple[tuple[str, np.ndarray], ...], ...] = field(compare=False)

    def __len__(self) -> int:
        return len(self.samples)

    def sample(self, index: int) -> dict[str, np.ndarray]:
        return {name: array for name, array in self.samples[index]}


def beside(model: Path) -> Path | None:
    """The calibration data kept beside ``model``: ``model.calib.npz``, else a folder
    ``model.calib/``; None when there is neither."""
    model = Path(model)
    npz = model.with_suffix(SUFFIX + ".npz")
    if npz.exists() or npz.is_symlink():  # not a regular file: the bounded read says so
        return npz
    folder = model.with_suffix(SUFFIX)
    return folder if folder.is_dir() else None


def _digest(samples: Sequence[Sequence[tuple[str, np.ndarray]]]) -> str:
    digest = hashlib.sha256()
    for sample in samples:
        for name, array in sample:
            data = np.ascontiguousarray(array)
            digest.update(f"{name}|{data.dtype.str}|{data.shape}|".encode())
            digest.update(data.tobytes())
    return digest.hexdigest()


def _load(path: Path, label: str, what: str, memory: int) -> dict[str, np.ndarray]:
    try:
        data = npz_bytes(path, f"{label}: calibration data", memory)
    except UnreadableFile as exc:
        raise InputFileError(str(exc)) from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: np.asarray(npz[name]) for name in npz.files}
    except Exception as exc:  # noqa: BLE001 - numpy and zipfile raise many kinds
        text = (str(exc).strip().splitlines() or [""])[0][:160]
        raise InputFileError(
            f"{label}: {what} is not a readable .npz ({type(exc).__name__}: {text}): write it "
            "again with numpy.savez or delete it"
        ) from None


def from_samples(
    samples: Sequence[Mapping[str, np.ndarray]],
    declared: Sequence[DeclaredInput],
    label: str,
    name: str,
) -> CalibrationData:
    """Check each sample like an inputs file (``label`` starts every message, ``name`` names
    the data in it); InputFileError of one line for the first problem."""
    if not samples:
        raise InputFileError(f"{label}: {name} holds no sample: give at least one")
    kept = []
    for i, sample in enumerate(samples):
        if not isinstance(sample, Mapping):
            raise InputFileError(
                f"{label}: {name} sample {i} is a {type(sample).__name__}, not a dict of the "
                "model's inputs: give {input name: array} per sample"
            )
        arrays = {key: np.asarray(value) for key, value in sample.items()}
        try:
            check_inputs(arrays, declared, f"{name} sample {i}", "")
        except InputFileError as exc:
            raise InputFileError(f"{label}: {exc}") from None
        kept.append(tuple((d.name, arrays[d.name]) for d in declared))
    return CalibrationData(name, _digest(kept), tuple(kept))


def _stacked(
    path: Path, declared: Sequence[DeclaredInput], label: str, memory: int
) -> CalibrationData:
    arrays = _load(path, label, path.name, memory)
    counts = {}
    for d in declared:
        array = arrays.get(d.name)
        if array is None:
            continue
        if d.ranked and array.ndim != len(d.dims) + 1:
            raise InputFileError(
                f"{label}: {path.name}: input {d.name!r} has shape {tuple(array.shape)}, "
                f"the model declares {d.describe()}; a calibration file stacks the samples on "
                "a leading axis: save np.stack([sample, ...]) for each input"
            )
        counts[d.name] = array.shape[0] if array.ndim else 0
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name!r}: {n}" for name, n in counts.items())
        raise InputFileError(
            f"{label}: {path.name}: the inputs hold different numbers of samples ({listed}): "
            "give every input the same number on the leading axis"
        )
    n = next(iter(counts.values()), 0)
    samples = [
        {name: array[i] if name in counts else array for name, array in arrays.items()}
        for i in range(n)
    ]
    if not samples:
        # Lacking keys or no sample: the per-sample check words it.
        samples = [{name: array for name, array in arrays.items()}] if not counts else []
    return from_samples(samples, declared, label, path.name)


def _folder(
    path: Path, declared: Sequence[DeclaredInput], label: str, memory: int
) -> CalibrationData:
    files = sorted(p for p in path.iterdir() if p.suffix == ".npz" and p.is_file())
    if not files:
        raise InputFileError(
            f"{label}: {path.name}/ holds no .npz file: save one numpy.savez(path, **inputs) "
            "per sample in it, or remove the folder"
        )
    samples = []
    for file in files:
        arrays = _load(file, label, f"{path.name}/{file.name}", memory)
        try:
            check_inputs(arrays, declared, f"{path.name}/{file.name}", " or remove the file")
        except InputFileError as exc:
            raise InputFileError(f"{label}: {exc}") from None
        samples.append(arrays)
    return from_samples(samples, declared, label, f"{path.name}/")


def read_calibration(
    path: Path, declared: Sequence[DeclaredInput], label: str, memory: int = DEFAULT_MEMORY
) -> CalibrationData:
    """Read a calibration ``.npz`` (samples stacked on a leading axis) or a folder of ``.npz``
    files, each read only if it is a regular file that fits ``memory`` bytes unpacked;
    InputFileError of one line, starting with ``label``, for any problem."""
    path = Path(path)
    if path.is_dir():
        return _folder(path, declared, label, memory)
    if not path.exists() and not path.is_symlink():
        raise InputFileError(
            f"{label}: calibration data {path} does not exist: give a .npz file or a folder of them"
        )
    return _stacked(path, declared, label, memory)
