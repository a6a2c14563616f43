"""find_minimal: hypothesis search and shrink to the minimal spec of a known failing region."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_rknn.variants import VariantSpec, find_minimal


def test_finds_the_minimal_spec_of_a_known_region() -> None:
    found = find_minimal(lambda s: s.head_dim >= 96 and s.mask == "causal", seed=1)
    assert found == VariantSpec(
        form="torch-sdpa",
        batch=1,
        num_heads=1,
        num_kv_heads=1,
        q_len=1,
        kv_len=1,
        head_dim=96,
        mask="causal",
    )


def test_minimal_spec_respects_forms_and_profile() -> None:
    found = find_minimal(
        lambda s: s.kv_len >= 1000 and s.num_kv_heads < s.num_heads and s.dtype == "float16",
        profile="full",
        forms=["manual"],
        seed=4,
        max_examples=400,
    )
    assert found is not None
    assert found.id == "manual-b1-h2kv1-q1024kv1024-d16-none-f16-bhsd"


def test_returns_none_when_nothing_fails() -> None:
    assert find_minimal(lambda s: s.kv_len > 10_000, max_examples=30) is None


def test_predicate_errors_propagate() -> None:
    def broken(spec: VariantSpec) -> bool:
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        find_minimal(broken, max_examples=5)


def test_writes_no_example_database(tmp_path) -> None:
    script = (
        "from pytest_rknn.variants import find_minimal\n"
        "print(find_minimal(lambda s: s.q_len > 8, max_examples=50).id)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "sdpa-b1-h1kv1-q16kv16-d8-none-f32-bhsd"
    assert not (tmp_path / ".hypothesis" / "examples").exists()
