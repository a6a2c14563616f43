"""``--rknn-shard K/N``: the cut (deterministic, disjoint, whole, balanced by cost), its usage
errors, the shard recorded in the matrix, and ``merge`` refusing overlapping or missing shards.

The runs use the FAKE toolkit (``-p fake_toolkits``): only the toolkit is fake.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_support import SELECTION, collected, fake_suite

from pytest_rknn.pipeline.plan import CellSpec
from pytest_rknn.pipeline.shard import (
    MeasuredCosts,
    Shard,
    ShardError,
    cell_cost,
    partition,
    select,
)
from pytest_rknn.pipeline.subjects import VariantSubject
from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.variants.spec import VariantSpec


def cell(q_len: int, platform: str = "rk3588", quant: str = "fp16") -> CellSpec:
    spec = VariantSpec(
        form="manual", batch=1, num_heads=4, num_kv_heads=4, q_len=q_len, kv_len=q_len, head_dim=64
    )
    return CellSpec(VariantSubject(spec), platform, "2.3.2", quant)


def test_shard_values() -> None:
    assert Shard.parse("2/4") == Shard(2, 4) and str(Shard.parse(" 1 / 1 ")) == "1/1"
    for text, words in (
        ("3", "expected K/N"),
        ("a/b", "expected K/N"),
        ("0/4", "K must be between 1 and 4"),
        ("5/4", "K must be between 1 and 4"),
        ("1/0", "N must be at least 1"),
        ("-1/2", "expected K/N"),
    ):
        with pytest.raises(ShardError, match=re.escape(words)):
            Shard.parse(text)


def test_the_cut_is_whole_disjoint_ordered_and_balanced() -> None:
    cells = [cell(q, p) for q in (8, 16, 64, 256, 1024, 2048, 4096) for p in ("rk3566", "rk3588")]
    for count in (1, 2, 3, 5):
        shards = partition(cells, count)
        ids = [c.id for shard in shards for c in shard]
        assert sorted(ids) == sorted(c.id for c in cells)
        for shard in shards:
            positions = [cells.index(c) for c in shard]
            assert positions == sorted(positions), "a shard keeps the run's order"
        assert partition(list(cells), count) == shards
    two = [sum(cell_cost(c) for c in shard) for shard in partition(cells, 2)]
    assert max(two) / min(two) < 1.2
    assert cell_cost(cell(4096)) > 4 * cell_cost(cell(8))
    assert cell_cost(cell(64, quant="int8")) == 2 * cell_cost(cell(64))
    assert select(cells, None) == cells == select(cells, Shard(1, 1))


def measured(cells: list[CellSpec], seconds: list[float], path: Path) -> MeasuredCosts:
    """The costs read back from a real matrix file whose cells took ``seconds``."""
    records = [
        CellRecord(
            variant_id=c.subject.id,
            variant=c.subject.spec.to_dict(),
            platform=c.platform,
            toolkit=c.toolkit,
            quant=c.quant,
            status="pass",
            timings={"wall": wall},
        )
        for c, wall in zip(cells, seconds, strict=True)
    ]
    Matrix({"complete": True}, records).write(path)
    return MeasuredCosts.load(path)


def test_measured_costs_balance_what_the_size_estimate_gets_wrong(tmp_path: Path) -> None:
    cells = [cell(q) for q in (8, 16, 32, 64, 128, 256)]
    seconds = [30.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # the smallest variant is the slow one
    assert all(len(shard) == 3 for shard in partition(cells, 2)), "the estimate cannot know"
    costs = measured(cells, seconds, tmp_path / "m.json")
    assert cell_cost(cells[0], costs) == 30.0 and cell_cost(cells[1], costs) == 1.0
    one, two = partition(cells, 2, costs)
    assert {c.id for c in one} == {cells[0].id} or {c.id for c in two} == {cells[0].id}
    loads = sorted(sum(cell_cost(c, costs) for c in shard) for shard in (one, two))
    assert loads == [5.0, 30.0]

    unknown = cell(512)
    assert cell_cost(unknown, costs) == cell_cost(unknown), "cells it lacks keep the estimate"
    again = measured(cells, seconds, tmp_path / "again.json")
    other = measured(cells, [1.0] * 6, tmp_path / "other.json")
    assert again.digest == costs.digest != other.digest


def test_measured_costs_from_a_file_that_is_not_a_matrix_are_one_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ShardError) as caught:
        MeasuredCosts.load(bad)
    (line,) = str(caught.value).splitlines()
    assert line.startswith("--rknn-shard-costs: ") and "bad.json" in line
    assert "is not valid JSON" in line and "regenerate it" in line


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return fake_suite(pytester, monkeypatch)


def test_shards_partition_the_collection_the_same_in_every_process(suite: pytest.Pytester) -> None:
    whole = collected(suite.runpytest_subprocess(*SELECTION, "--collect-only", "-q"))
    assert len(whole) == 8
    parts = []
    for k in (1, 2, 3):
        ids = collected(
            suite.runpytest_subprocess(*SELECTION, "--collect-only", "-q", f"--rknn-shard={k}/3")
        )
        again = collected(
            suite.runpytest_subprocess(*SELECTION, "--collect-only", "-q", f"--rknn-shard={k}/3")
        )
        assert ids == again and ids
        parts.append(ids)
    assert sorted(sum(parts, [])) == sorted(whole)
    assert all(set(a).isdisjoint(b) for i, a in enumerate(parts) for b in parts[i + 1 :])


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("--rknn-shard=3", ["--rknn-shard '3'", "expected K/N", "e.g. 1/4"]),
        ("--rknn-shard=0/2", ["--rknn-shard '0/2'", "between 1 and 2"]),
        ("--rknn-shard=3/2", ["--rknn-shard '3/2'", "between 1 and 2"]),
        ("--rknn-shard=1/0", ["N must be at least 1"]),
        ("--rknn-shard=9/9", ["--rknn-shard 9/9", "the run has 8 cell(s)", "use N <= 8"]),
    ],
)
def test_bad_shard_is_one_usage_error(suite: pytest.Pytester, value: str, words: list[str]) -> None:
    result = suite.runpytest(*SELECTION[2:], value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.errlines
    for word in words:
        assert word in errors[0]


def test_shard_with_explore_is_a_usage_error(suite: pytest.Pytester) -> None:
    result = suite.runpytest(*SELECTION[2:], "--rknn-shard=1/2", "--rknn-explore")
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert result.ret == pytest.ExitCode.USAGE_ERROR and len(errors) == 1
    assert "--rknn-explore" in errors[0]


def merge(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pytest_rknn.cli", "merge", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_shard_matrices_merge_only_when_whole(suite: pytest.Pytester) -> None:
    for k in (1, 2):
        result = suite.runpytest_subprocess(
            *SELECTION, f"--rknn-shard={k}/2", f"--rknn-matrix=shards/m{k}.json"
        )
        assert result.ret == 0, result.outlines[-3:]
    shards = suite.path / "shards"
    metas = [json.loads((shards / f"m{k}.json").read_text())["meta"] for k in (1, 2)]
    assert [(m["shard"]["index"], m["shard"]["count"]) for m in metas] == [(1, 2), (2, 2)]
    assert metas[0]["shard"]["plan"] == metas[1]["shard"]["plan"]

    done = merge(shards, "-o", suite.path / "all.json")
    assert done.returncode == 0, done.stderr
    merged = json.loads((suite.path / "all.json").read_text())
    assert len(merged["cells"]) == 8 and "shard" not in merged["meta"]

    alone = merge(shards / "m1.json", "-o", suite.path / "one.json")
    assert alone.returncode == 2 and not (suite.path / "one.json").exists()
    (line,) = alone.stderr.strip().splitlines()
    assert line.startswith("pytest-rknn merge: error: shard 2/2 of the run of toolkits ")
    assert "is missing (given: 1/2)" in line

    damaged = suite.path / "damaged"
    damaged.mkdir()
    shutil.copy(shards / "m1.json", damaged / "m1.json")
    text = (shards / "m2.json").read_text()
    (damaged / "m2.json").write_text(text[: len(text) // 2])
    cut_short = merge(damaged, "-o", suite.path / "none.json")
    left_out, refused = cut_short.stderr.strip().splitlines()
    assert cut_short.returncode == 2 and "left out" in left_out and "m2.json" in left_out
    assert "is missing (given: 1/2)" in refused
    assert refused.endswith("; 1 file(s) were left out above as unreadable: it may be one of them")
    empty = suite.path / "empty"
    empty.mkdir()
    nothing = merge(empty, "-o", suite.path / "none.json")
    assert nothing.returncode == 2 and f"folder {empty} holds no *.json matrix" in nothing.stderr

    rerun = suite.runpytest_subprocess(*SELECTION, "--rknn-shard=1/2", "--rknn-matrix=again.json")
    assert rerun.ret == 0
    twice = merge(shards, suite.path / "again.json", "-o", suite.path / "two.json")
    (line,) = twice.stderr.strip().splitlines()
    assert twice.returncode == 2 and "shard 1/2 of the run" in line and "is given twice" in line

    other = suite.path / "other"
    other.mkdir()
    shutil.copy(shards / "m1.json", other / "m1.json")
    three = suite.runpytest_subprocess(
        *SELECTION, "--rknn-shard=2/3", "--rknn-matrix=other/m2.json"
    )
    assert three.ret == 0
    data = json.loads((other / "m2.json").read_text())
    data["meta"]["shard"]["plan"] = metas[0]["shard"]["plan"]
    (other / "m2.json").write_text(json.dumps(data))
    cut = merge(other, "-o", suite.path / "cut.json")
    assert cut.returncode == 2 and "was cut into 2 shards in" in cut.stderr


def test_shards_balanced_on_an_earlier_matrix_still_make_one_run(suite: pytest.Pytester) -> None:
    whole = suite.runpytest_subprocess(*SELECTION, "--rknn-matrix=whole.json")
    assert whole.ret == 0, whole.outlines[-3:]
    costs = f"--rknn-shard-costs={suite.path / 'whole.json'}"
    for k in (1, 2):
        result = suite.runpytest_subprocess(
            *SELECTION, f"--rknn-shard={k}/2", costs, f"--rknn-matrix=shards/m{k}.json"
        )
        assert result.ret == 0, result.outlines[-3:]
    metas = [json.loads((suite.path / f"shards/m{k}.json").read_text())["meta"] for k in (1, 2)]
    assert metas[0]["shard"]["plan"] == metas[1]["shard"]["plan"]
    done = merge(suite.path / "shards", "-o", suite.path / "all.json")
    assert done.returncode == 0, done.stderr
    merged = Matrix.load(suite.path / "all.json")
    assert sorted(merged.keys()) == sorted(Matrix.load(suite.path / "whole.json").keys())

    plain = suite.runpytest_subprocess(*SELECTION, "--rknn-shard=1/2", "--rknn-matrix=p1.json")
    assert plain.ret == 0
    plain_plan = json.loads((suite.path / "p1.json").read_text())["meta"]["shard"]["plan"]
    assert plain_plan != metas[0]["shard"]["plan"], "a cut on other costs is another run"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--rknn-shard=1/2", "--rknn-shard-costs=none.json"], ["none.json", "does not exist"]),
        (["--rknn-shard=1/2", "--rknn-shard-costs=bad.json"], ["bad.json", "not a pytest-rknn"]),
        (["--rknn-shard-costs=bad.json"], ["add --rknn-shard or drop it"]),
    ],
)
def test_bad_shard_costs_are_one_usage_error(
    suite: pytest.Pytester, args: list[str], words: list[str]
) -> None:
    (suite.path / "bad.json").write_text('{"meta": {}, "cells": [{"variant_id": 3}]}')
    result = suite.runpytest(*SELECTION[2:], *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.errlines
    for word in words:
        assert word in errors[0]


def test_whole_models_have_a_cost_that_grows_with_their_size() -> None:
    from pytest_rknn.pipeline.plan import CellSpec
    from pytest_rknn.pipeline.shard import cell_cost
    from pytest_rknn.pipeline.subjects import FamilySubject
    from pytest_rknn.variants.families import FamilySpec

    small = FamilySpec(family="bert", hidden=32, heads=2, kv_heads=2, seq_len=8)
    large = small.replace(hidden=256, seq_len=256, layers=2)
    costs = [
        cell_cost(CellSpec(FamilySubject(s), "rk3588", "2.3.2", "fp16")) for s in (small, large)
    ]
    assert 0 < costs[0] < costs[1]
