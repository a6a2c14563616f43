"""Real inputs for a user's model: the ``.npz`` beside ``--rknn-model model.onnx``.

``model.npz`` (the model file's stem, in its folder; keys: the graph's input names, as
``numpy.savez`` writes them) holds the inputs a cell feeds the model instead of generated ones.
:func:`read_input_file` reads it whole and checks it against what the graph declares
(:func:`check_inputs`: every input present, no other key, each array of the declared element
type and static dims); any problem is an :class:`InputFileError` of one line that names the
input and the fix. The file's sha256 is part of the model subject's identity.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pytest_rknn.pipeline.input_roles import DeclaredInput
from pytest_rknn.results.safe_read import UnreadableFile, npz_bytes


class InputFileError(ValueError):
    """Inputs that do not fit the model (or an unreadable file); the message names the fix."""


@dataclass(frozen=True)
class InputFile:
    """The arrays of one ``.npz``, in the graph's input order, and the file's sha256."""

    path: Path
    sha256: str
    arrays: tuple[tuple[str, np.ndarray], ...] = field(compare=False)


def beside(model: Path) -> Path:
    """Where a model's inputs file would be: same folder, same stem, ``.npz``."""
    return Path(model).with_suffix(".npz")


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def check_inputs(
    arrays: Mapping[str, np.ndarray], declared: Sequence[DeclaredInput], source: str, fix: str
) -> None:
    """InputFileError unless ``arrays`` are exactly the declared inputs, each of its declared
    type and static dims, and a named free dim has one size in every input that has it (the
    toolkit loads the graph in these shapes). ``source`` names where the arrays came from
    (``enc.npz``), ``fix`` what else the user can do (`` or delete the .npz``)."""
    wanted = [d.name for d in declared]
    given = list(arrays)
    for name in wanted:
        if name not in arrays:
            raise InputFileError(
                f"{source} lacks input {name!r} (keys: {_names(given)}): add it{fix}"
            )
    for name in given:
        if name not in wanted:
            raise InputFileError(
                f"{source} has {name!r}, which is no input of the model (inputs: "
                f"{_names(wanted)}): remove or rename it"
            )
    for d in declared:
        array = arrays[d.name]
        if array.dtype != d.dtype:
            raise InputFileError(
                f"{source}: input {d.name!r} is {array.dtype.name}, the model declares "
                f"{d.describe()}: convert it with .astype(np.{d.dtype.type.__name__})"
            )
        pairs = zip(d.dims, array.shape, strict=False)
        fits = not d.ranked or (
            len(array.shape) == len(d.dims)
            and all(not isinstance(want, int) or want == got for want, got in pairs)
        )
        if not fits:
            raise InputFileError(
                f"{source}: input {d.name!r} has shape {tuple(array.shape)}, the model "
                f"declares {d.describe()}: give it that shape"
            )
    sizes: dict[str, tuple[str, int]] = {}
    for d in declared:
        for want, got in zip(d.dims, arrays[d.name].shape, strict=False):
            if not isinstance(want, str):
                continue
            first, size = sizes.setdefault(want, (d.name, got))
            if size != got:
                raise InputFileError(
                    f"{source}: free dim {want!r} is {size} in input {first!r} and {got} in "
                    f"input {d.name!r}: give it one size in every input"
                )


def read_input_file(
    path: Path, declared: Sequence[DeclaredInput], label: str, memory: int = 8 << 30
) -> InputFile:
    """Read and check ``path``; ``label`` starts every message (``--rknn-model enc.onnx``).
    The file, and its arrays unpacked, must fit ``memory`` bytes (checked before unpacking)."""
    path = Path(path)
    try:
        data = npz_bytes(path, f"{label}: inputs file", memory)
    except UnreadableFile as exc:
        raise InputFileError(str(exc)) from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            loaded = {name: np.asarray(npz[name]) for name in npz.files}
    except Exception as exc:  # noqa: BLE001 - numpy and zipfile raise many kinds
        text = (str(exc).strip().splitlines() or [""])[0][:160]
        raise InputFileError(
            f"{label}: {path.name} is not a readable .npz ({type(exc).__name__}: {text}): "
            "write it again with numpy.savez(path, **inputs) or delete it"
        ) from None
    try:
        check_inputs(loaded, declared, path.name, " or delete the .npz")
    except InputFileError as exc:
        raise InputFileError(f"{label}: {exc}") from None
    arrays = tuple((d.name, loaded[d.name]) for d in declared)
    return InputFile(path, hashlib.sha256(data).hexdigest(), arrays)
