"""Deterministic draws across processes, size profiles, memory estimates, curated cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pytest_rknn.variants import (
    PROFILES,
    NotBuildable,
    build_model,
    curated_cases,
    draw_variants,
    estimate_memory_bytes,
)
from pytest_rknn.variants.spec import FORMS

DRAW_SCRIPT = """
import json, sys
from pytest_rknn.variants import draw_variants
from pytest_rknn.variants.spec import FORMS
print(json.dumps({
    "ci": [s.id for s in draw_variants(120, 42)],
    "full": [s.id for s in draw_variants(60, 42, "full", FORMS)],
}))
"""


def _ids_in_subprocess(hash_seed: str) -> dict[str, list[str]]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", DRAW_SCRIPT], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout)


def test_same_seed_same_ids_in_separate_processes() -> None:
    first, second = _ids_in_subprocess("1"), _ids_in_subprocess("2")
    assert first == second
    here = {
        "ci": [s.id for s in draw_variants(120, 42)],
        "full": [s.id for s in draw_variants(60, 42, "full", FORMS)],
    }
    assert first == here
    assert len(set(first["ci"])) == 120


def test_other_seed_other_ids_and_prefix_stability() -> None:
    assert [s.id for s in draw_variants(40, 1)] != [s.id for s in draw_variants(40, 2)]
    longer = draw_variants(80, 1)
    assert draw_variants(40, 1) == longer[:40]


def test_forms_take_turns() -> None:
    drawn = draw_variants(10, 0, forms=FORMS)
    assert [s.form for s in drawn[:5]] == list(FORMS)
    assert len(drawn) == 10
    assert draw_variants(0, 0) == []


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profiles_bound_sizes_and_memory(profile: str) -> None:
    size = PROFILES[profile]
    drawn = draw_variants(400, 5, profile, FORMS)
    for spec in drawn:
        assert spec.q_len in size.lengths and spec.kv_len in size.lengths
        assert spec.head_dim in size.head_dims and spec.num_heads in size.heads
        assert estimate_memory_bytes(spec) <= size.max_memory_bytes, spec.id
    longest = max(s.kv_len for s in drawn)
    if profile == "ci":
        assert longest <= 128
    else:
        assert longest >= 4096


def test_memory_estimate_grows_with_the_score_matrix() -> None:
    small = next(c.spec for c in curated_cases() if c.name == "seed-report-replica")
    longer = small.replace(q_len=256, kv_len=256)
    assert estimate_memory_bytes(longer) > 3 * estimate_memory_bytes(small)
    scores = 8 * 2048 * 2048 * 4 * 3
    long_case = next(c.spec for c in curated_cases() if c.name == "long-sequence")
    assert scores <= estimate_memory_bytes(long_case) <= 2 * scores


def test_bad_draw_arguments_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="profile='huge' is not one of 'ci', 'full'"):
        draw_variants(3, 0, "huge")
    with pytest.raises(ValueError, match="must be a non-empty subset of"):
        draw_variants(3, 0, forms=["sdpa"])
    with pytest.raises(ValueError, match="n=-1 must be >= 0"):
        draw_variants(-1, 0)


def test_curated_cases_have_reasons_unique_ids_and_build() -> None:
    cases = curated_cases()
    assert len({c.id for c in cases}) == len({c.name for c in cases}) == len(cases)
    names = {c.name for c in cases}
    for needed in ("seed-report-torchscript", "decode", "gqa", "mqa", "long-sequence"):
        assert needed in names
    for needed in ("fp16-model", "key-padding-mask", "additive-mask", "bshd-layout", "mha-block"):
        assert needed in names
    for case in cases:
        assert len(case.reason) > 20
        if case.spec.form == "torch-export":
            continue
        try:
            model = build_model(case.spec)
        except NotBuildable as exc:
            assert case.spec.form == "onnx-attention", exc
            continue
        assert [i.name for i in model.graph.input] == list(case.spec.input_shapes())
