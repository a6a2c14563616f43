"""What a matrix row converts: a generated attention variant, a tiny whole model of a
transformer family (the ``hf`` form), or a user's own ONNX model.

All answer the same questions: a stable id, a JSON description, the ONNX model, deterministic
inputs for a seed, and the reference outputs the simulator is judged against (float64 numpy for
attention variants, onnxruntime for whole models; an hf model's export is also checked against
torch's own output, see :mod:`~pytest_rknn.pipeline.family_exports`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx

from pytest_rknn.variants.families import FamilySpec, family_inputs
from pytest_rknn.variants.forms import NotBuildable, build_model
from pytest_rknn.variants.inputs import make_inputs
from pytest_rknn.variants.reference import onnxruntime_outputs, reference_outputs
from pytest_rknn.variants.spec import VariantSpec
from pytest_rknn.variants.strategies import estimate_memory_bytes


class Subject(Protocol):
    @property
    def id(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def build(self) -> onnx.ModelProto: ...

    def inputs(self, seed: int) -> dict[str, np.ndarray]: ...

    def sample(self, seed: int) -> dict[str, np.ndarray]: ...

    def reference(self, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list: ...

    def host_bytes(self) -> int: ...


@dataclass(frozen=True)
class VariantSubject:
    """A generated attention variant (see :mod:`pytest_rknn.variants`)."""

    spec: VariantSpec

    @property
    def id(self) -> str:
        return self.spec.id

    def to_dict(self) -> dict[str, Any]:
        return self.spec.to_dict()

    def build(self) -> onnx.ModelProto:
        return build_model(self.spec)

    def inputs(self, seed: int) -> dict[str, np.ndarray]:
        return make_inputs(self.spec, seed)

    def sample(self, seed: int) -> dict[str, np.ndarray]:
        """Inputs drawn from the distribution of :meth:`inputs` (a calibration sample)."""
        return make_inputs(self.spec, seed)

    def reference(self, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list:
        return reference_outputs(self.spec, inputs)

    def host_bytes(self) -> int:
        """What making the inputs and the float64 reference allocates, roughly."""
        return 2 * estimate_memory_bytes(self.spec)


@dataclass(frozen=True)
class FamilySubject:
    """A tiny model of a transformer family, exported by torch in the exporter environment."""

    spec: FamilySpec

    @property
    def id(self) -> str:
        return self.spec.id

    def to_dict(self) -> dict[str, Any]:
        return self.spec.to_dict()

    def build(self) -> onnx.ModelProto:
        raise NotBuildable("an hf model is made by the exporter: see pipeline.family_exports")

    def inputs(self, seed: int) -> dict[str, np.ndarray]:
        return family_inputs(self.spec, seed)

    def sample(self, seed: int) -> dict[str, np.ndarray]:
        """Inputs drawn like :meth:`inputs` (a calibration sample)."""
        return family_inputs(self.spec, seed)

    def reference(self, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list:
        return [np.asarray(o, dtype=np.float64) for o in onnxruntime_outputs(model, inputs)]

    def host_bytes(self) -> int:
        return self.spec.host_bytes()


def subject_of(spec: VariantSpec | FamilySpec) -> VariantSubject | FamilySubject:
    """The subject of a generated spec, whichever kind it is."""
    if isinstance(spec, FamilySpec):
        return FamilySubject(spec)
    return VariantSubject(spec)


class ModelError(ValueError):
    """A ``--rknn-model`` file that is not a usable ONNX model; the message names the fix."""


_NUMPY_TYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.BOOL: np.bool_,
}


@dataclass(frozen=True)
class UserModel:
    """An ONNX file of the user's: inputs drawn from its declared shapes (free dims become 1)."""

    path: Path
    sha256: str
    shapes: tuple[tuple[str, tuple[int, ...], int], ...] = field(default=(), compare=False)

    @classmethod
    def load(cls, path: Path) -> UserModel:
        try:
            data = Path(path).read_bytes()
            model = onnx.load_from_string(data)
            onnx.checker.check_model(model)
        except Exception as exc:  # noqa: BLE001 - onnx raises many kinds for a bad file
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise ModelError(
                f"--rknn-model {path}: not a valid ONNX model ({type(exc).__name__}: {first}); "
                "export it again or check the path"
            ) from None
        initializers = {i.name for i in model.graph.initializer}
        shapes = []
        for value in model.graph.input:
            if value.name in initializers:
                continue
            tensor = value.type.tensor_type
            if tensor.elem_type not in _NUMPY_TYPES:
                raise ModelError(
                    f"--rknn-model {path}: input {value.name!r} has element type "
                    f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}, which the suite cannot "
                    "generate; use float, int or bool inputs"
                )
            dims = tuple(d.dim_value if d.dim_value > 0 else 1 for d in tensor.shape.dim)
            shapes.append((value.name, dims, tensor.elem_type))
        return cls(Path(path), hashlib.sha256(data).hexdigest(), tuple(shapes))

    @property
    def id(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9]+", "_", self.path.stem).strip("_") or "model"
        return f"model-{stem}-{self.sha256[:8]}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": "model",
            "path": str(self.path),
            "sha256": self.sha256,
            "inputs": {name: list(dims) for name, dims, _ in self.shapes},
        }

    def build(self) -> onnx.ModelProto:
        return onnx.load(self.path)

    def inputs(self, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([seed, int(self.sha256[:8], 16)])
        arrays = {}
        for name, dims, elem in self.shapes:
            dtype = _NUMPY_TYPES[elem]
            if dtype is np.bool_:
                arrays[name] = rng.random(dims) < 0.5
            elif np.issubdtype(dtype, np.integer):
                arrays[name] = rng.integers(0, 8, dims).astype(dtype)
            else:
                arrays[name] = rng.standard_normal(dims).astype(dtype)
        return arrays

    def sample(self, seed: int) -> dict[str, np.ndarray]:
        """Inputs drawn from the distribution of :meth:`inputs` (a calibration sample)."""
        return self.inputs(seed)

    def reference(self, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list:
        return [np.asarray(o, dtype=np.float64) for o in onnxruntime_outputs(model, inputs)]

    def host_bytes(self) -> int:
        """What the declared inputs take (the reference run's own needs are unknown)."""
        return sum(
            int(np.prod(dims, dtype=np.int64)) * np.dtype(_NUMPY_TYPES[elem]).itemsize
            for _name, dims, elem in self.shapes
        )


@dataclass(frozen=True)
class ProvidedModel:
    """A model handed to the ``rknn`` fixture, optionally with the inputs to feed it."""

    model: UserModel
    given: tuple[tuple[str, np.ndarray], ...] | None = field(default=None, compare=False)

    @property
    def id(self) -> str:
        return self.model.id

    def to_dict(self) -> dict[str, Any]:
        return self.model.to_dict()

    def build(self) -> onnx.ModelProto:
        return self.model.build()

    def inputs(self, seed: int) -> dict[str, np.ndarray]:
        return dict(self.given) if self.given is not None else self.model.inputs(seed)

    def sample(self, seed: int) -> dict[str, np.ndarray]:
        """A calibration sample: generated from the model's declared inputs, never the given
        inputs (a calibration set of the test input alone would flatter int8)."""
        return self.model.inputs(seed)

    def reference(self, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list:
        return self.model.reference(model, inputs)

    def host_bytes(self) -> int:
        if self.given is not None:
            return sum(int(a.nbytes) for _name, a in self.given)
        return self.model.host_bytes()


def provided_model(
    model: onnx.ModelProto | str | Path, folder: Path, inputs: dict[str, np.ndarray] | None
) -> ProvidedModel:
    """Wrap a path or an in-memory model for the ``rknn`` fixture."""
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
    return ProvidedModel(UserModel.load(path), given)
