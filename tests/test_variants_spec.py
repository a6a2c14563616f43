"""VariantSpec: validation with one-line errors, JSON round trip, and ids safe for -k."""

from __future__ import annotations

import json
import re

import pytest

from pytest_rknn.variants import SpecError, VariantSpec, curated_cases, draw_variants
from pytest_rknn.variants.curated import BASE_SHAPE
from pytest_rknn.variants.spec import FORMS

BASE = BASE_SHAPE


def spec(**changes: object) -> VariantSpec:
    return VariantSpec(**{**BASE, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"form": "sdpa"}, "form='sdpa' is not one of"),
        ({"batch": 0}, "batch=0 must be a positive int"),
        ({"head_dim": 64.0}, "head_dim=64.0 must be a positive int"),
        ({"num_heads": True}, "num_heads=True must be a positive int"),
        ({"num_kv_heads": 3}, "num_kv_heads=3 must divide num_heads=8"),
        ({"mask": "causal", "q_len": 1}, "mask='causal' needs q_len == kv_len"),
        ({"mask": "padding"}, "mask='padding' is not one of"),
        ({"mask": "additive"}, "mask_shape for mask='additive'"),
        ({"mask": "none", "mask_shape": "b11k"}, "mask_shape for mask='none'"),
        ({"mask": "key-padding", "mask_shape": "bhqk"}, "mask_shape for mask='key-padding'"),
        ({"dtype": "bfloat16"}, "dtype='bfloat16' is not one of"),
        ({"scale": 0.0}, "scale=0.0 must be a finite float > 0"),
        ({"scale": float("nan")}, "scale=nan must be a finite float > 0"),
        ({"scale": "0.1"}, "scale='0.1' must be a float or None"),
        ({"layout": "bsd"}, "layout='bsd' is not one of"),
        ({"form": "mha-block"}, "form='mha-block' takes (B, L, E) hidden states"),
        ({"form": "torch-export"}, "exporter for form='torch-export'"),
        ({"exporter": "dynamo"}, "exporter='dynamo' applies only to form='torch-export'"),
    ],
)
def test_invalid_spec_gives_one_line_error(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        spec(**changes)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_from_dict_rejects_unknown_and_missing_keys_in_one_line() -> None:
    with pytest.raises(SpecError, match="unknown variant spec key\\(s\\) heads: expected"):
        VariantSpec.from_dict({**BASE, "heads": 8})
    with pytest.raises(SpecError, match="incomplete variant spec") as info:
        VariantSpec.from_dict({"form": "manual"})
    assert "\n" not in str(info.value)
    with pytest.raises(SpecError, match="must be a JSON object, got list"):
        VariantSpec.from_dict([1, 2])  # type: ignore[arg-type]


def test_json_round_trip_and_hashing() -> None:
    specs = draw_variants(200, seed=3, forms=FORMS) + [c.spec for c in curated_cases()]
    for original in specs:
        text = json.dumps(original.to_dict())
        again = VariantSpec.from_dict(json.loads(text))
        assert again == original
        assert hash(again) == hash(original)
        assert again.id == original.id
    assert len(set(specs)) == len({s.id for s in specs})


def test_id_names_every_field() -> None:
    assert spec(mask="causal", dtype="float16").id == "sdpa-b1-h8kv8-q64kv64-d64-causal-f16-bhsd"
    assert (
        spec(num_kv_heads=2, scale=0.125, mask="additive", mask_shape="b1qk", layout="bshd").id
        == "sdpa-b1-h8kv2-q64kv64-d64s0.125-add.b1qk-f32-bshd"
    )
    assert spec(form="torch-export", exporter="dynamo-opset23").id.startswith("tx.dynamo23-")
    assert spec(scale=1e-05).id.split("-")[4] == "d64s1em05"


def _all_ids() -> list[str]:
    drawn = draw_variants(600, seed=11, forms=FORMS) + draw_variants(200, 12, "full", FORMS)
    near = [
        spec(),
        spec(batch=11),
        spec(q_len=8, kv_len=8),
        spec(q_len=88, kv_len=88),
        spec(scale=0.1),
        spec(scale=0.125),
        spec(scale=1.0),
        spec(head_dim=6),
        spec(head_dim=640),
        spec(mask="additive", mask_shape="qk"),
        spec(mask="additive", mask_shape="11qk"),
        spec(form="torch-export", exporter="torchscript"),
        spec(form="torch-export", exporter="dynamo"),
        spec(form="torch-export", exporter="dynamo-opset23"),
    ]
    return sorted({s.id for s in drawn + near + [c.spec for c in curated_cases()]})


def test_ids_use_a_minus_k_and_file_name_safe_charset() -> None:
    for vid in _all_ids():
        assert re.fullmatch(r"[a-z][a-z0-9.]*(-[a-z0-9.]+){7}", vid), vid
        assert vid.lower() == vid


def test_no_id_is_a_substring_of_another() -> None:
    ids = _all_ids()
    assert len(ids) > 700
    by_length = sorted(ids, key=len)
    joined = "\n".join(ids)
    for vid in by_length:
        assert joined.count(vid) == 1, f"{vid} occurs inside another id"


def test_minus_k_selects_exactly_that_variant(pytester: pytest.Pytester) -> None:
    ids = _all_ids()
    pytester.makepyfile(
        test_cells=f"""
        import pytest
        IDS = {ids!r}
        @pytest.mark.parametrize("vid", IDS, ids=IDS)
        def test_cell(vid):
            pass
        """
    )
    chosen = [i for i in ids if i.startswith(("sdpa-b1-h8kv8-q64kv64", "tx."))][:6]
    chosen += [ids[0], ids[len(ids) // 2], ids[-1]]
    for vid in chosen:
        result = pytester.runpytest_inprocess(
            "--collect-only", "-q", "-p", "no:rknn", "-p", "no:cacheprovider", "-k", vid
        )
        selected = [line for line in result.outlines if "::test_cell[" in line]
        assert selected == [f"test_cells.py::test_cell[{vid}]"], result.outlines[-3:]


def test_from_id_inverts_id_over_drawn_and_curated_specs() -> None:
    from pytest_rknn.variants.curated import curated_cases
    from pytest_rknn.variants.strategies import draw_variants

    specs = draw_variants(600, 11, "full") + [c.spec for c in curated_cases()]
    assert {s.form for s in specs} == set(FORMS)
    for spec in specs:
        assert VariantSpec.from_id(spec.id) == spec


def test_from_id_rejects_what_is_not_an_id() -> None:
    with pytest.raises(SpecError, match="is not a variant id"):
        VariantSpec.from_id("sdpa-b1-h8kv8")
