"""A user's own ONNX model as a matrix row: :class:`UserModel` (``--rknn-model``: the bytes
read and hashed at collection, the declared inputs and their roles, the ``.npz`` of inputs and
the calibration data beside it, the free dims it is served at) and :class:`ProvidedModel` (a
model handed to the ``rknn`` fixture, with the inputs and calibration samples given there).
Both answer the questions of :class:`~pytest_rknn.pipeline.subjects.Subject`.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pytest_rknn.pipeline import calibration_files
from pytest_rknn.pipeline import dims as dims_axis
from pytest_rknn.pipeline.calibration_files import CalibrationData
from pytest_rknn.pipeline.input_files import (
    InputFile,
    InputFileError,
    beside,
    check_inputs,
    read_input_file,
)
from pytest_rknn.pipeline.input_roles import (
    NUMPY_TYPES,
    DeclaredInput,
    InputRoleError,
    Role,
    declared_inputs,
    generate_inputs,
    judge_roles,
)
from pytest_rknn.pipeline.subjects import traffic_mask
from pytest_rknn.results.safe_read import UnreadableFile, model_bytes
from pytest_rknn.variants.forms import NotBuildable
from pytest_rknn.variants.reference import onnxruntime_outputs

STEM_CHARS = 64
"""The longest model file stem kept whole in a cell id (ids name derived files and folders)."""
DEFAULT_MEMORY = 8 << 30


def _parsed(data: bytes, folder: Path) -> onnx.ModelProto:
    """The model in ``data``, its external data (if any) read from ``folder``, the model's
    own folder (not the current one)."""
    model = onnx.load_from_string(data)
    onnx.external_data_helper.load_external_data_for_model(model, str(folder))
    return model


class ModelError(ValueError):
    """A ``--rknn-model`` file that is not a usable ONNX model; the message names the fix."""


@dataclass(frozen=True)
class UserModel:
    """An ONNX file of the user's. Its inputs are the arrays of ``inputs_file`` when it has
    one (``model.npz`` beside a ``--rknn-model``), otherwise generated for each input's role
    (:mod:`pytest_rknn.pipeline.input_roles`; free dims become 1). With ``dims``
    (``--rknn-dims``, :mod:`~pytest_rknn.pipeline.dims`) it is served at each listed shape:
    its inputs (and calibration samples) are those of the largest, :meth:`inputs_at` any."""

    path: Path
    sha256: str
    declared: tuple[DeclaredInput, ...] = field(default=(), compare=False)
    roles: tuple[tuple[str, Role], ...] = field(default=(), compare=False)
    inputs_file: InputFile | None = None
    calibration_data: CalibrationData | None = None
    data: bytes = field(default=b"", compare=False, repr=False)
    """The bytes read (and hashed) at collection: what every cell converts, whatever happens
    to the file afterwards."""
    dims: dims_axis.Dims = ()

    @classmethod
    def load(
        cls,
        path: Path,
        inputs_file: bool = False,
        memory: int = DEFAULT_MEMORY,
        calibration: Path | None = None,
    ) -> UserModel:
        """Read and check ``path``; with ``inputs_file``, also the ``.npz`` and the calibration
        data beside it, if any (``calibration``: that data's path instead; the arrays must fit
        ``memory`` bytes unpacked). ModelError (one line, naming the fix) for a bad model,
        inputs file or calibration data, or one that is no regular file or over its bound."""
        path = Path(path)
        try:
            data = model_bytes(path, "--rknn-model")
        except UnreadableFile as exc:
            raise ModelError(str(exc)) from None
        except OSError as exc:
            raise ModelError(f"--rknn-model {path}: cannot be read ({exc.strerror})") from None
        try:
            model = _parsed(data, path.parent)
            onnx.checker.check_model(model)
        except Exception as exc:  # noqa: BLE001 - onnx raises many kinds for a bad file
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise ModelError(
                f"--rknn-model {path}: not a valid ONNX model ({type(exc).__name__}: {first}); "
                "export it again or check the path"
            ) from None
        declared = tuple(declared_inputs(model))
        for value in declared:
            if value.elem not in NUMPY_TYPES:
                raise ModelError(
                    f"--rknn-model {path}: input {value.name!r} has element type "
                    f"{onnx.TensorProto.DataType.Name(value.elem)}, which the suite cannot "
                    "generate; use float, int or bool inputs"
                )
        found = None
        npz = beside(path)
        if inputs_file and npz.exists():
            try:
                found = read_input_file(npz, declared, f"--rknn-model {path.name}", memory)
            except InputFileError as exc:
                raise ModelError(str(exc)) from None
        data_path = calibration
        if data_path is None and inputs_file:
            data_path = calibration_files.beside(path)
        samples = None
        if data_path is not None:
            try:
                samples = calibration_files.read_calibration(
                    data_path, declared, f"--rknn-model {path.name}", memory
                )
            except InputFileError as exc:
                raise ModelError(str(exc)) from None
        roles = tuple(judge_roles(model, declared).items())
        sha = hashlib.sha256(data).hexdigest()
        return cls(path, sha, declared, roles, found, calibration_data=samples, data=data)

    @property
    def lengths_fed_as_one(self) -> list[str]:
        """The free dims past an input's first axis (a length, not a batch), or the one dim
        of a rank-1 input, that generated inputs make 1, by name (``input_ids[1]`` for an
        unnamed one); none with an inputs file. A sequence of one leaves a softmax of one
        element, which no mask or scale can get wrong."""
        if self.inputs_file is not None:
            return []
        named = {name for name, _values in self.dims}
        found = {
            dim if isinstance(dim, str) and dim else f"{value.name}[{axis}]": None
            for value in self.declared
            for axis, dim in enumerate(value.dims)
            if (axis > 0 or len(value.dims) == 1) and not isinstance(dim, int) and dim not in named
        }
        return list(found)

    def fed_as_one(self, label: str, missing: str, fix: str) -> str | None:
        """What to tell the user when :attr:`lengths_fed_as_one` names any (else None):
        ``label`` names the model, ``missing`` what would have given the lengths, ``fix`` how."""
        dims = self.lengths_fed_as_one
        if not dims:
            return None
        are = "dims {} are" if len(dims) > 1 else "dim {} is"
        return (
            f"{label}: free {are.format(', '.join(dims))} fed as 1 ({missing}), so its attention "
            f"sees one position and no mask or scale can fail it; {fix} with the lengths it "
            "will see"
        )

    @property
    def id(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9]+", "_", self.path.stem).strip("_") or "model"
        if len(stem) > STEM_CHARS:  # ids name files: a long stem is cut, a hash keeps it apart
            cut = hashlib.sha256(stem.encode()).hexdigest()[:6]
            stem = f"{stem[: STEM_CHARS - 7]}_{cut}"
        suffix = f"-npz{self.inputs_file.sha256[:8]}" if self.inputs_file else ""
        if self.calibration_data is not None:
            suffix += f"-cal{self.calibration_data.digest[:8]}"
        if self.dims:
            suffix += f"-{dims_axis.label(self.dims)}"
        return f"model-{stem}-{self.sha256[:8]}{suffix}"

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "form": "model",
            "path": str(self.path),
            "sha256": self.sha256,
        }
        if self.inputs_file is not None:
            found["inputs"] = {n: list(a.shape) for n, a in self.inputs_file.arrays}
            found["inputs_file"] = {
                "path": str(self.inputs_file.path),
                "sha256": self.inputs_file.sha256,
            }
        else:
            found["inputs"] = {d.name: list(d.shape) for d in self.declared}
            found["input_roles"] = {name: role.describe() for name, role in self.roles}
        if self.calibration_data is not None:
            found["calibration_data"] = _described(self.calibration_data)
        if self.dims:
            found["dims"] = {name: list(values) for name, values in self.dims}
        return found

    def shape_sets(self) -> list[dims_axis.ShapeSet]:
        """The shapes the model is served at (none without ``dims``)."""
        return dims_axis.shape_sets(self.dims, self.declared) if self.dims else []

    def unlisted_set(self) -> dims_axis.ShapeSet:
        """A shape the model's conversion does not list."""
        return dims_axis.unlisted(self.dims, self.declared)

    def inputs_at(self, seed: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """The inputs file's arrays when they have these shapes, else generated at them."""
        if self.inputs_file is not None:
            arrays = dict(self.inputs_file.arrays)
            if {n: tuple(a.shape) for n, a in arrays.items()} == shapes:
                return {name: array.copy() for name, array in arrays.items()}
        return self.generate(seed, shapes)

    def build(self) -> onnx.ModelProto:
        """The model of the bytes hashed at collection (never the path read again)."""
        if not self.data:
            raise NotBuildable(f"{self.path.name}: its bytes were not kept at collection")
        return _parsed(self.data, self.path.parent)

    def inputs(self, seed: int) -> dict[str, np.ndarray]:
        """The inputs file's arrays, or generated inputs for ``seed`` (InputRoleError, naming
        the input and the fix, for an input whose role is unknown)."""
        if self.dims:
            return self.inputs_at(seed, dims_axis.largest(self.shape_sets()).shapes_dict)
        if self.inputs_file is not None:
            return {name: array.copy() for name, array in self.inputs_file.arrays}
        return self.generate(seed)

    def generate(
        self, seed: int, shapes: dict[str, tuple[int, ...]] | None = None
    ) -> dict[str, np.ndarray]:
        """Role-aware inputs for ``seed`` (``shapes`` overrides the declared ones)."""
        try:
            return generate_inputs(
                self.declared, dict(self.roles), seed, int(self.sha256[:8], 16), shapes
            )
        except InputRoleError as exc:
            raise InputRoleError(
                exc.name,
                f"{exc.reason}: {self.path.name} needs real inputs, e.g. "
                f"{beside(self.path).name} beside it (keys: "
                f"{', '.join(d.name for d in self.declared)}), or inputs= to rknn.convert",
            ) from None

    def sample(
        self, seed: int, index: int = 0, shapes: dict[str, tuple[int, ...]] | None = None
    ) -> dict[str, np.ndarray]:
        """Calibration sample ``index``: generated for the inputs' roles (masks padded like
        traffic), in the shapes of the test inputs (a dynamic model's largest listed shape),
        never the inputs file's arrays."""
        if shapes is None and self.dims:
            shapes = dims_axis.largest(self.shape_sets()).shapes_dict
        elif shapes is None and self.inputs_file is not None:
            shapes = {name: tuple(a.shape) for name, a in self.inputs_file.arrays}
        arrays = self.generate(seed, shapes)
        for name, role in self.roles:
            if role.kind == "mask" and name in arrays:
                mask = arrays[name]
                arrays[name] = traffic_mask(mask.shape, index).astype(mask.dtype)
        return arrays

    def mask_inputs(self) -> dict[str, tuple[str, str]]:
        """The inputs of the ``mask`` role (1/True = attend), and float inputs named like a
        mask (an additive bias); rank 2 or less is a token mask, more a score mask."""
        found = {}
        roles = dict(self.roles)
        for d in self.declared:
            rank = len(d.dims) if d.ranked else 2
            layout = "tokens" if rank <= 2 else "scores"
            if roles[d.name].kind == "mask":
                found[d.name] = ("keep", layout)
            elif roles[d.name].kind == "float" and "mask" in d.name.lower():
                found[d.name] = ("additive", layout)
        return found

    def reference(self, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list:
        return [np.asarray(o, dtype=np.float64) for o in onnxruntime_outputs(model, inputs)]

    def host_bytes(self) -> int:
        """What the inputs take (the reference run's own needs are unknown)."""
        if self.dims:
            return sum(
                int(np.prod(shape, dtype=np.int64)) * d.dtype.itemsize
                for s in self.shape_sets()
                for d, (_name, shape) in zip(self.declared, s.shapes, strict=True)
            )
        if self.inputs_file is not None:
            return sum(int(a.nbytes) for _name, a in self.inputs_file.arrays)
        return sum(int(np.prod(d.shape, dtype=np.int64)) * d.dtype.itemsize for d in self.declared)


def _described(data: CalibrationData) -> dict[str, Any]:
    return {"name": data.name, "samples": len(data), "digest": data.digest}


@dataclass(frozen=True)
class ProvidedModel:
    """A model handed to the ``rknn`` fixture, optionally with the inputs to feed it and the
    samples to calibrate it on."""

    model: UserModel
    given: tuple[tuple[str, np.ndarray], ...] | None = field(default=None, compare=False)
    calibration_data: CalibrationData | None = None

    @property
    def id(self) -> str:
        if self.calibration_data is None:
            return self.model.id
        return f"{self.model.id}-cal{self.calibration_data.digest[:8]}"

    def to_dict(self) -> dict[str, Any]:
        found = self.model.to_dict()
        if self.calibration_data is not None:
            found["calibration_data"] = _described(self.calibration_data)
        if self.given is not None:
            found.pop("input_roles", None)
            found["inputs"] = {name: list(a.shape) for name, a in self.given}
            found["inputs_given"] = True
        return found

    def build(self) -> onnx.ModelProto:
        return self.model.build()

    def inputs(self, seed: int) -> dict[str, np.ndarray]:
        if self.model.dims:
            return self.inputs_at(seed, dims_axis.largest(self.shape_sets()).shapes_dict)
        return dict(self.given) if self.given is not None else self.model.inputs(seed)

    @property
    def dims(self) -> dims_axis.Dims:
        return self.model.dims

    def shape_sets(self) -> list[dims_axis.ShapeSet]:
        return self.model.shape_sets()

    def unlisted_set(self) -> dims_axis.ShapeSet:
        return self.model.unlisted_set()

    def inputs_at(self, seed: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """The given inputs when they have these shapes, else the model's at them."""
        if self.given is not None and {n: tuple(a.shape) for n, a in self.given} == shapes:
            return dict(self.given)
        return self.model.inputs_at(seed, shapes)

    def sample(self, seed: int, index: int = 0) -> dict[str, np.ndarray]:
        """A calibration sample: generated for the model's input roles (in the given inputs'
        shapes), never the given inputs (a calibration set of the test input alone would
        flatter int8); a dynamic model's at its largest listed shape."""
        if self.given is None or self.model.dims:
            return self.model.sample(seed, index)
        return self.model.sample(seed, index, {name: tuple(a.shape) for name, a in self.given})

    def mask_inputs(self) -> dict[str, tuple[str, str]]:
        return self.model.mask_inputs()

    def reference(self, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list:
        return self.model.reference(model, inputs)

    def host_bytes(self) -> int:
        if self.given is not None:
            return sum(int(a.nbytes) for _name, a in self.given)
        return self.model.host_bytes()


def provided_model(
    model: onnx.ModelProto | str | Path,
    folder: Path,
    inputs: dict[str, np.ndarray] | None,
    calibration: list[dict[str, np.ndarray]] | None = None,
    dims: Mapping[str, Sequence[int]] | None = None,
) -> ProvidedModel:
    """Wrap a path or an in-memory model for the ``rknn`` fixture; ValueError (one line) for
    ``inputs`` or ``calibration`` samples that do not fit the model, or ``dims`` that name no
    free dim of it."""
    if isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
        path = folder / hashlib.sha256(data).hexdigest()[:8] / f"{model.graph.name or 'model'}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        path = Path(model)
    given = None
    if inputs is not None:
        given = tuple((name, np.asarray(array)) for name, array in inputs.items())
    user = UserModel.load(path)
    if dims:
        user = with_dims(user, dims, "rknn.convert(dims=...)")
    if given is None:
        note = user.fed_as_one(f"rknn.convert({path.name})", "no inputs=", "pass inputs=")
        if note is not None:
            warnings.warn(note, UserWarning, stacklevel=3)
    elif not user.dims:
        try:
            check_inputs(dict(given), user.declared, "inputs=", "")
        except InputFileError as exc:
            raise ValueError(f"rknn.convert: {exc}") from None
    samples = None
    if calibration is not None:
        if isinstance(calibration, Mapping):
            raise ValueError(
                "rknn.convert: calibration= is one dict; give a list of samples, "
                "calibration=[{name: array, ...}, ...]"
            )
        try:
            samples = calibration_files.from_samples(
                list(calibration), user.declared, "rknn.convert", "calibration="
            )
        except InputFileError as exc:
            raise ValueError(str(exc)) from None
    return ProvidedModel(user, given, samples)


def with_dims(
    model: UserModel, dims: Mapping[str, Sequence[int]] | dims_axis.Dims, label: str
) -> UserModel:
    """``model`` served at ``dims`` (ValueError, one line, when they name no free dim of it)."""
    pairs = dims.items() if isinstance(dims, Mapping) else dims
    try:
        parsed = dims_axis.parse_dims(f"{k}={'|'.join(map(str, v))}" for k, v in pairs)
    except dims_axis.DimsError as exc:
        raise ValueError(f"{label}: {exc}") from None
    found = dims_axis.applying(parsed, model.declared)
    missing = sorted({name for name, _v in parsed} - {name for name, _v in found})
    if missing:
        free = dims_axis.free_dims(model.declared)
        raise ValueError(
            f"{label}: {model.path.name} has no free dim {', '.join(missing)} (its free dims: "
            f"{', '.join(free) or 'none'}); name one of those"
        )
    return replace(model, dims=found)
