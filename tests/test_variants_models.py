"""Every drawn variant's model is valid ONNX and onnxruntime matches the float64 reference.

float32 models: max |onnxruntime - reference| <= 1e-4 * max(1, max |reference|), i.e.
1e-4 absolute or relative to the output's magnitude, for unit-normal and LayerNorm-like
inputs; ``large`` inputs (scores in the thousands) may exceed it by float32's own rounding,
up to ``2**-23 * (1 + S) * V``. float16 models: within ``2**-10 * (1 + S) * V`` (S the
largest scaled score, V the largest value): twice the first-order effect of float16
rounding in the scores. See ``onnxruntime_bound``.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_rknn.variants import (
    DISTRIBUTIONS,
    build_model,
    draw_variants,
    make_inputs,
    onnxruntime_bound,
    onnxruntime_outputs,
    reference_outputs,
    variant_specs,
)
from pytest_rknn.variants.strategies import HOST_FORMS

PROPERTY_SEED = 20261125
DRAWN = draw_variants(504, seed=PROPERTY_SEED, forms=HOST_FORMS)
CASES = list(zip(DRAWN, itertools.cycle(DISTRIBUTIONS), strict=False))


def check_variant(spec, dist: str, seed: int) -> None:
    model = build_model(spec)
    onnx.checker.check_model(model, full_check=True)
    inputs = make_inputs(spec, seed, dist)
    (got,) = onnxruntime_outputs(model, inputs)
    (want,) = reference_outputs(spec, inputs)
    assert got.shape == want.shape == spec.output_shape()
    assert np.isfinite(got).all()
    error = float(np.abs(got.astype(np.float64) - want).max())
    bound = onnxruntime_bound(spec, inputs)
    if spec.dtype == "float32" and dist != "large":
        bound = 1e-4 * max(1.0, float(np.abs(want).max()))
    assert error <= bound, f"{spec.id} ({dist}): max error {error:.3g} > bound {bound:.3g}"


def test_drawn_set_covers_the_space() -> None:
    assert len({s.id for s in DRAWN}) == len(DRAWN) == 504
    assert {s.form for s in DRAWN} == set(HOST_FORMS)
    assert {s.mask for s in DRAWN} == {"none", "causal", "key-padding", "additive"}
    assert {s.dtype for s in DRAWN} == {"float32", "float16"}
    assert {s.layout for s in DRAWN} == {"bhsd", "bshd"}
    assert any(1 < s.num_kv_heads < s.num_heads for s in DRAWN)
    assert any(s.num_kv_heads == 1 < s.num_heads for s in DRAWN)
    assert any(s.q_len == 1 < s.kv_len for s in DRAWN)
    assert any(1 < s.q_len != s.kv_len > 1 for s in DRAWN)
    assert any(s.scale is not None for s in DRAWN)


@pytest.mark.parametrize(("spec", "dist"), CASES, ids=[f"{s.id}-{d}" for s, d in CASES])
def test_drawn_variant_model_matches_reference(spec, dist: str) -> None:
    check_variant(spec, dist, seed=0)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=variant_specs("ci", HOST_FORMS),
    dist=st.sampled_from(DISTRIBUTIONS),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_variant_model_matches_reference(spec, dist: str, seed: int) -> None:
    check_variant(spec, dist, seed)


def test_inputs_are_deterministic_and_shaped() -> None:
    spec = DRAWN[7]
    first, again = make_inputs(spec, 5, "layernorm"), make_inputs(spec, 5, "layernorm")
    other = make_inputs(spec, 6, "layernorm")
    assert first.keys() == again.keys() == spec.input_shapes().keys()
    for name, array in first.items():
        assert array.shape == spec.input_shapes()[name]
        np.testing.assert_array_equal(array, again[name])
    assert not np.array_equal(first["q"], other["q"])


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_distributions_have_their_documented_shape(dist: str) -> None:
    spec = next(s for s in DRAWN if s.dtype == "float32" and s.layout == "bshd" and s.q_len > 16)
    q = make_inputs(spec, 0, dist)["q"].astype(np.float64)
    if dist == "normal":
        assert abs(q.std() - 1.0) < 0.1
    elif dist == "large":
        assert abs(q.std() - 8.0) < 0.8
    else:
        gains = q.std(axis=(0, 1))
        assert gains.max() > 5.0 > 1.6 > np.median(gains)


def test_masks_never_mask_a_whole_row() -> None:
    masked = [s for s in DRAWN if s.mask_is_input]
    assert masked
    for spec in masked:
        mask = make_inputs(spec, 1)["mask"]
        if spec.mask == "key-padding":
            assert mask.dtype == np.bool_ and mask.any(axis=-1).all(), spec.id
        else:
            assert (mask > np.finfo(mask.dtype).min).any(axis=-1).all(), spec.id


def test_bad_distribution_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="dist='uniform' is not one of 'normal'"):
        make_inputs(DRAWN[0], 0, "uniform")


def test_reference_rejects_missing_inputs() -> None:
    spec = next(s for s in DRAWN if s.mask_is_input)
    inputs = make_inputs(spec, 0)
    del inputs["mask"]
    with pytest.raises(ValueError, match="inputs lack mask: use make_inputs"):
        reference_outputs(spec, inputs)
