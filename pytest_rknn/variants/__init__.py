"""The attention variant space: specs, hypothesis strategies, ONNX forms, inputs, references.

Host side only (no toolkit, no torch import): the toolkit side receives the ONNX files and
input arrays these modules produce.
"""

from .curated import CuratedCase, curated_cases
from .explore import find_minimal
from .forms import NotBuildable, build_model
from .inputs import DISTRIBUTIONS, make_inputs
from .reference import onnxruntime_bound, onnxruntime_outputs, reference_outputs
from .spec import SpecError, VariantSpec
from .strategies import (
    PROFILES,
    draw_variants,
    estimate_memory_bytes,
    register_profiles,
    variant_specs,
)
from .torch_export import (
    ExportInfo,
    TorchExportError,
    export_many,
    export_with_torch,
    find_torch_python,
)

__all__ = [
    "DISTRIBUTIONS",
    "PROFILES",
    "CuratedCase",
    "ExportInfo",
    "NotBuildable",
    "SpecError",
    "TorchExportError",
    "VariantSpec",
    "build_model",
    "curated_cases",
    "draw_variants",
    "estimate_memory_bytes",
    "export_many",
    "export_with_torch",
    "find_minimal",
    "find_torch_python",
    "make_inputs",
    "onnxruntime_bound",
    "onnxruntime_outputs",
    "reference_outputs",
    "register_profiles",
    "variant_specs",
]
