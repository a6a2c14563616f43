"""fp16 bounds that scale with the model: k x the error float16 arithmetic itself makes on it
(onnxruntime on a float16 copy), never tighter than the fixed defaults nor looser than the
hybrid ones; the rule that made a cell's bounds is on record (``bounds_rule``)."""

from __future__ import annotations

import numpy as np
import pytest
from fake_support import SELECTION, fake_suite

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.variants.forms import build_model
from pytest_rknn.variants.inputs import make_inputs
from pytest_rknn.variants.reference import float16_outputs, reference_outputs
from pytest_rknn.variants.spec import VariantSpec
from pytest_rknn.verdict.metrics import Metrics, compute_metrics
from pytest_rknn.verdict.rules import CEILING, FLOOR, Judging, emulated

START = Judging(FLOOR, "fp16 emulation x 4", emulate=4.0)


def error_of(rel: float, shape: tuple[int, ...] = (4, 64)) -> Metrics:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(shape)
    noise = rng.standard_normal(shape)
    noise *= rel * np.linalg.norm(reference) / np.linalg.norm(noise)
    return compute_metrics(reference, reference + noise)


def test_an_emulation_below_the_floor_leaves_the_fixed_bounds() -> None:
    judging = emulated(START, [error_of(1e-4)])
    assert judging.bounds == FLOOR and judging.rule == "fp16 emulation x 4"


def test_a_model_that_fp16_itself_moves_gets_k_times_that() -> None:
    e = error_of(5e-3)
    judging = emulated(START, [error_of(1e-4), e])
    assert judging.bounds.max_rel_l2 == pytest.approx(4 * e.rel_l2)
    assert 1 - judging.bounds.min_cosine == pytest.approx(16 * (1 - e.cosine))
    assert judging.bounds.max_abs_rms == max(FLOOR.max_abs_rms, 4 * e.max_abs_rms)
    assert judging.rule == "fp16 emulation x 4"


def test_a_model_fp16_cannot_compute_is_capped_at_the_hybrid_bounds() -> None:
    judging = emulated(START, [error_of(0.2)])
    assert judging.bounds.max_rel_l2 == CEILING.max_rel_l2
    assert judging.bounds.min_cosine == CEILING.min_cosine
    assert judging.rule == "fp16 emulation x 4 (capped at the hybrid bounds)"


def test_an_emulation_that_fails_leaves_the_fixed_bounds_and_says_why() -> None:
    judging = emulated(START, "the float16 run failed: Fail: op X")
    assert judging.bounds == FLOOR
    assert (
        judging.rule
        == "fixed fp16 defaults (no fp16 emulation: the float16 run failed: Fail: op X)"
    )
    nan = compute_metrics(np.ones(4), np.array([1.0, np.nan, 1.0, 1.0]))
    assert emulated(START, [nan]).rule.startswith("fixed fp16 defaults (no fp16 emulation: its")


def test_the_markers_bounds_are_laid_over_the_emulated_ones() -> None:
    marked = Judging(
        FLOOR.replace(max_rel_l2=0.5), "marker", emulate=4.0, overrides={"max_rel_l2": 0.5}
    )
    judging = emulated(marked, [error_of(5e-3)])
    assert judging.bounds.max_rel_l2 == 0.5 and judging.rule == "marker"
    assert judging.bounds.min_cosine < FLOOR.min_cosine, "the others still scale"


def test_float16_emulation_of_an_attention_core_errs_like_fp16_rounding() -> None:
    spec = VariantSpec(
        form="manual",
        batch=1,
        num_heads=2,
        num_kv_heads=2,
        q_len=32,
        kv_len=32,
        head_dim=16,
        mask="causal",
    )
    inputs = make_inputs(spec, 0)
    half = float16_outputs(build_model(spec), inputs)
    metrics = compute_metrics(reference_outputs(spec, inputs)[0], half[0])
    assert 1e-5 < metrics.rel_l2 < 1e-3, "float16's unit roundoff is 4.9e-4"


def test_cells_record_the_rule_and_the_option_picks_it(pytester, monkeypatch) -> None:
    suite = fake_suite(pytester, monkeypatch)
    args = (*SELECTION, "--rknn-toolkits=2.5.0", "--rknn-platforms=rk3588")
    suite.runpytest_subprocess(*args, "--rknn-matrix=e.json").assert_outcomes(passed=2)
    for cell in Matrix.load(suite.path / "e.json").cells:
        assert cell.bounds_rule == "fp16 emulation x 4"
        assert cell.bounds == FLOOR.to_dict(), "tiny cores: the floor"
        assert 0 < cell.extra["fp16_emulation"]["output0"]["rel_l2"] < 1e-3
    fixed = suite.runpytest_subprocess(*args, "--rknn-fp16-bounds=fixed", "--rknn-matrix=f.json")
    fixed.assert_outcomes(passed=2)
    for cell in Matrix.load(suite.path / "f.json").cells:
        assert cell.bounds_rule == "fixed fp16 defaults" and "fp16_emulation" not in cell.extra
    suite.makeini("[pytest]\nrknn_bounds_fp16 = max_rel_l2=1%\n")
    ini = suite.runpytest_subprocess(*args, "--rknn-matrix=i.json")
    ini.assert_outcomes(passed=2)
    for cell in Matrix.load(suite.path / "i.json").cells:
        assert cell.bounds_rule == "ini rknn_bounds_fp16" and cell.bounds["max_rel_l2"] == 0.01
    bad = suite.runpytest_subprocess(*args, "--rknn-fp16-bounds=emulation:0.5")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["ERROR: --rknn-fp16-bounds 'emulation:0.5': use emulation, *"])
