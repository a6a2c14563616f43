"""The hf form's specs, ids, inputs, strategies and curated rows (host side, no torch)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings

from pytest_rknn.variants.curated import curated_families
from pytest_rknn.variants.families import (
    FAMILIES,
    VOCAB,
    FamilySpec,
    family_inputs,
    spec_from_id,
)
from pytest_rknn.variants.family_strategies import draw_families, family_specs, generated_specs
from pytest_rknn.variants.spec import SpecError, VariantSpec


@given(family_specs("ci"))
@example(FamilySpec(family="llama", heads=4, kv_heads=1, mask="pad", exporter="dynamo"))
@settings(max_examples=200)
def test_ids_round_trip_and_are_k_safe(spec: FamilySpec) -> None:
    assert FamilySpec.from_id(spec.id) == spec
    assert spec_from_id(spec.id) == spec
    assert FamilySpec.from_dict(spec.to_dict()) == spec
    assert all(ch.isalnum() or ch in ".-" for ch in spec.id)


def test_attention_variant_ids_still_parse_as_attention_variants() -> None:
    spec = VariantSpec(
        form="torch-sdpa", batch=1, num_heads=2, num_kv_heads=2, q_len=4, kv_len=4, head_dim=8
    )
    assert spec_from_id(spec.id) == spec


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"family": "gpt3"}, "family='gpt3'"),
        ({"family": "bert", "kv_heads": 2}, "no grouped-query attention"),
        ({"family": "vit", "mask": "pad"}, "takes no attention mask"),
        ({"family": "vit", "seq_len": 10}, "must be a square"),
        ({"family": "bert", "hidden": 30}, "multiple of heads"),
        ({"family": "llama", "hidden": 12, "heads": 4, "kv_heads": 4}, "even head dim"),
        ({"family": "bert", "layers": 9}, "tiny models"),
        ({"family": "bert", "init": "wide"}, "init='wide'"),
    ],
)
def test_invalid_specs_say_what_is_wrong(fields: dict, words: str) -> None:
    with pytest.raises(SpecError, match=words):
        FamilySpec(**fields)


def test_bad_ids_and_dicts_are_one_line_errors() -> None:
    with pytest.raises(SpecError, match="not an hf variant id"):
        FamilySpec.from_id("hf.bert.fast-b1")
    with pytest.raises(SpecError, match="unknown hf spec key"):
        FamilySpec.from_dict({"form": "hf", "family": "bert", "colour": 1})


def test_token_ids_lie_in_the_embedding_table_and_masks_are_zeros_and_ones() -> None:
    spec = FamilySpec(family="bert", batch=3, seq_len=16, mask="pad")
    inputs = family_inputs(spec, 0)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < VOCAB
    assert set(np.unique(mask)) <= {0, 1}
    assert mask[0].all(), "the first row is whole"
    assert not mask[-1].all(), "the last row is padded"
    assert (mask.sum(axis=1) >= 8).all(), "at least half the tokens attend"
    for row in mask:
        assert (np.diff(row) <= 0).all(), "right padding: ones, then zeros"
    assert family_inputs(FamilySpec(family="bert", mask="ones"), 0)["attention_mask"].all()


def test_eager_and_sdpa_rows_share_weights_and_inputs() -> None:
    eager = FamilySpec(family="llama", attn="eager", kv_heads=2, mask="pad")
    sdpa = eager.replace(attn="sdpa", exporter="dynamo")
    assert eager.weights_seed == sdpa.weights_seed
    for name, array in family_inputs(eager, 3).items():
        np.testing.assert_array_equal(array, family_inputs(sdpa, 3)[name])
    assert eager.weights_seed != eager.replace(hidden=32).weights_seed


def test_inputs_follow_each_family_shape() -> None:
    assert family_inputs(FamilySpec(family="vit", seq_len=16), 0)["pixel_values"].shape == (
        1,
        3,
        16,
        16,
    )
    whisper = family_inputs(FamilySpec(family="whisper", seq_len=8), 0)
    assert whisper["input_features"].shape == (1, 16, 16)
    assert set(family_inputs(FamilySpec(family="gpt2"), 0)) == {"input_ids"}


def test_draws_are_stable_distinct_and_spread_over_families() -> None:
    first = draw_families(12, seed=0)
    assert first == draw_families(12, seed=0)
    assert len({s.id for s in first}) == 12
    assert {s.family for s in first} == set(FAMILIES)
    assert draw_families(12, seed=1) != first


def test_curated_rows_cover_every_family_and_implementation() -> None:
    rows = curated_families()
    static = [c for c in rows if not c.spec.lengths]
    pairs = {(c.spec.family, c.spec.attn) for c in static}
    assert pairs == {(f, a) for f in FAMILIES for a in ("eager", "sdpa")}
    assert all(c.spec.init == "sharp" for c in rows)
    assert {c.spec.exporter for c in rows} == {"torchscript", "dynamo"}
    assert len({c.id for c in rows}) == len(rows)


@given(generated_specs("ci", ["manual", "hf"]))
@settings(max_examples=50)
def test_a_search_over_several_forms_yields_both_kinds(spec: object) -> None:
    assert isinstance(spec, (VariantSpec, FamilySpec))
    assert spec_from_id(spec.id) == spec


def test_each_text_family_has_one_dynamic_length_row_whose_lengths_follow_the_profile() -> None:
    for profile, top in (("ci", 128), ("full", 512)):
        dynamic = [c for c in curated_families(profile) if c.spec.lengths]
        assert sorted(c.spec.family for c in dynamic) == ["bert", "gpt2", "llama", "t5"]
        assert all(c.spec.lengths[-1] == top == c.spec.seq_len for c in dynamic)
        assert all(FamilySpec.from_id(c.spec.id) == c.spec for c in dynamic)
        assert all(c.spec.id.endswith("-dyn" + "_".join(map(str, c.spec.lengths))) for c in dynamic)


def test_dynamic_lengths_are_checked() -> None:
    base = FamilySpec("bert", "eager", mask="pad")
    for bad, says in (
        ({"lengths": (32, 16), "seq_len": 32}, "ascending"),
        ({"lengths": (16, 32), "seq_len": 16}, "largest"),
        ({"lengths": (0, 16)}, "positive"),
    ):
        with pytest.raises(SpecError, match=says):
            base.replace(**bad)
    with pytest.raises(SpecError, match="text families"):
        FamilySpec("vit", lengths=(16,))
    assert base.replace(seq_len=32, lengths=(16, 32)).dims == (("seq", (16, 32)),)
    assert FamilySpec.from_dict(base.to_dict()) == base and "lengths" not in base.to_dict()
