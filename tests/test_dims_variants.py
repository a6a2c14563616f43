"""The attention forms' dynamic-length row: the ``manual`` form with its length axis free,
its inputs and float64 reference at each length those of the static variant of that length,
and its place among the run's subjects (curated, by profile; not with ``--rknn-only`` or
without the manual form)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest

from pytest_rknn.pipeline.dynamic_run import is_dynamic
from pytest_rknn.pipeline.dynamic_variants import (
    DynamicVariant,
    curated_dynamic_variant,
    variant_from_id,
)
from pytest_rknn.pipeline.plan import subjects
from pytest_rknn.variants.inputs import make_inputs
from pytest_rknn.variants.spec import SpecError


def test_the_row_is_the_manual_form_with_a_free_length_judged_at_each_length() -> None:
    row = curated_dynamic_variant("ci")
    assert row.id == "manual-b1-h4kv4-q128kv128-d32-none-f32-bhsd-dyn16_32_128"
    assert is_dynamic(row) and row.to_dict()["lengths"] == [16, 32, 128]
    model = row.build()
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[2].dim_param == "seq"
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for shape_set in row.shape_sets():
        length = shape_set.dims_dict["seq"]
        inputs = row.inputs_at(0, shape_set.shapes_dict)
        assert inputs["q"].shape == (1, 4, length, 32)
        assert all(np.array_equal(inputs[n], make_inputs(row.at(length), 0)[n]) for n in inputs)
        (reference,) = row.reference(model, inputs)
        (ours,) = session.run(None, inputs)
        assert reference.shape == (1, 4, length, 32)
        assert np.abs(ours - reference).max() < 1e-5
    assert row.unlisted_set().dims_dict == {"seq": 24}
    assert curated_dynamic_variant("full").lengths == (16, 64, 128, 256, 512)


def test_only_a_form_without_length_constants_can_have_a_free_length() -> None:
    row = curated_dynamic_variant("ci")
    with pytest.raises(SpecError, match="manual form"):
        DynamicVariant(row.spec.replace(mask="causal"), row.lengths)
    with pytest.raises(SpecError, match="longest"):
        DynamicVariant(row.spec, (16, 32))


def _settings(**changes: object) -> SimpleNamespace:
    base = dict(forms=("manual",), only=False, curated=True, examples=0, variants=(), models=())
    return SimpleNamespace(**{**base, "seed": 0, "profile": "ci", **changes})


def test_the_row_is_curated_with_the_manual_form_and_never_with_only() -> None:
    ids = [s.id for s in subjects(_settings())]
    assert ids[-1] == curated_dynamic_variant("ci").id
    assert not any("-dyn" in s.id for s in subjects(_settings(forms=("mha-block",))))
    assert not any("-dyn" in s.id for s in subjects(_settings(curated=False)))
    assert subjects(_settings(only=True)) == []


def test_the_rows_id_names_it_again_for_a_rerun() -> None:
    row = curated_dynamic_variant("full")
    assert variant_from_id(row.id) == row
    static = variant_from_id(row.spec.id)
    assert static == row.spec
    hf = "hf.gpt2.eager-b1-l1-e64h4kv4-s32-mpad-sharp-ts-dyn16_32"
    assert variant_from_id(hf).lengths == (16, 32)
    with pytest.raises(SpecError):
        variant_from_id("manual-nonsense-dyn16")
