"""Tests of the tolerance metrics, bounds, check and report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pytest_rknn.verdict.metrics import Metrics, compute_metrics
from pytest_rknn.verdict.tolerance import Bounds, check, format_report, violation_signature


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    scores = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1])
    scores -= scores.max(-1, keepdims=True)
    weights = np.exp(scores)
    return (weights / weights.sum(-1, keepdims=True)) @ v


@pytest.fixture(scope="module")
def outputs() -> tuple[np.ndarray, np.ndarray]:
    """A float64 attention output and the same computed in float16, as a converted model does."""
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((1, 4, 32, 64)) for _ in range(3))
    reference = attention(q, k, v)
    half = attention(*(x.astype(np.float16) for x in (q, k, v))).astype(np.float16)
    return reference, half


def test_metrics_match_their_definitions(outputs: tuple[np.ndarray, np.ndarray]) -> None:
    y, y_hat = outputs
    m = compute_metrics(y, y_hat)
    d = y_hat.astype(np.float64) - y
    assert m.max_abs == pytest.approx(np.abs(d).max())
    assert m.mean_abs == pytest.approx(np.abs(d).mean())
    assert m.rel_l2 == pytest.approx(np.linalg.norm(d) / np.linalg.norm(y))
    cos = (y * y_hat).sum() / (np.linalg.norm(y) * np.linalg.norm(y_hat.astype(np.float64)))
    assert m.cosine == pytest.approx(cos)
    floor = 1e-3 * np.abs(y).max()
    assert m.max_rel == pytest.approx((np.abs(d) / np.maximum(np.abs(y), floor)).max())
    assert m.worst_index is not None
    assert abs(m.worst_actual - m.worst_reference) == pytest.approx(m.max_abs, rel=1e-6)
    assert m.worst_reference == pytest.approx(float(y[m.worst_index]))
    rms = math.sqrt((y**2).mean())
    assert m.ref_rms == pytest.approx(rms)
    assert m.max_abs_rms == pytest.approx(np.abs(d).max() / rms)
    assert m.mean_abs_rms == pytest.approx(np.abs(d).mean() / rms)
    assert m.error is None and m.note is None


def test_fp16_attention_passes_the_fp16_defaults(outputs: tuple[np.ndarray, np.ndarray]) -> None:
    y, y_hat = outputs
    assert check({"out": compute_metrics(y, y_hat)}, Bounds.for_mode("fp16")) == []


def test_a_corrupted_element_fails_and_is_reported(outputs: tuple[np.ndarray, np.ndarray]) -> None:
    y, y_hat = outputs
    bad = y_hat.astype(np.float32).copy()
    bad[0, 2, 5, 17] += 0.25
    metrics = {"out": compute_metrics(y, bad)}
    violations = check(metrics, Bounds.for_mode("fp16"))
    assert {v.metric for v in violations} >= {"max_abs_rms"}
    assert metrics["out"].worst_index == (0, 2, 5, 17)
    report = format_report(metrics, Bounds.for_mode("fp16"))
    assert "output out (1, 4, 32, 64): FAIL" in report
    assert "worst element (0, 2, 5, 17)" in report
    line = next(line for line in report.splitlines() if line.split()[0] == "max_abs_rms")
    assert line.rstrip().endswith("FAIL") and "<= 1.000e-01" in line
    for absolute in ("max_rel", "max_abs", "mean_abs"):
        assert "(unchecked)" in next(ln for ln in report.splitlines() if ln.split()[0] == absolute)
    assert "max_abs_rms" in violation_signature(violations)
    (broken,) = [v for v in violations if v.metric == "max_abs_rms"]
    assert broken.message.startswith("out: max_abs_rms ")
    assert broken.message.endswith(f"({broken.value / 0.1:.3g}x the bound)")


def test_report_shows_every_metric_against_its_bound(
    outputs: tuple[np.ndarray, np.ndarray],
) -> None:
    y, y_hat = outputs
    report = format_report([compute_metrics(y, y_hat)], Bounds.for_mode("fp16"))
    lines = report.splitlines()
    assert lines[0] == "output output0 (1, 4, 32, 64): ok"
    for metric in ("max_abs", "mean_abs", "max_rel", "cosine", "rel_l2", "max_abs_rms"):
        assert any(line.split()[0] == metric for line in lines[1:]), metric
    assert "%" in next(line for line in lines if line.split()[0] == "rel_l2")


def test_shape_mismatch_is_an_error_not_a_crash() -> None:
    m = compute_metrics(np.zeros((1, 4, 16, 32)), np.zeros((1, 4, 16, 31)))
    assert m.error == "shape mismatch: reference (1, 4, 16, 32), actual (1, 4, 16, 31)"
    assert m.max_abs is None
    violations = check([m], Bounds.for_mode("fp16"))
    assert [v.metric for v in violations] == ["error"]
    assert "shape mismatch" in format_report([m], Bounds.for_mode("fp16"))


def test_same_data_with_squeezed_dims_is_compared_with_a_note() -> None:
    y = np.arange(12.0).reshape(1, 3, 4)
    m = compute_metrics(y, y.reshape(3, 4))
    assert m.error is None and m.max_abs == 0.0 and m.note is not None


def test_transposed_layout_is_not_silently_reshaped() -> None:
    y = np.arange(24.0).reshape(1, 2, 3, 4)
    m = compute_metrics(y, y.transpose(0, 2, 3, 1))
    assert m.error is not None and "shape mismatch" in m.error


def test_nan_and_inf_fail_with_a_clear_message() -> None:
    y = np.linspace(-1.0, 1.0, 64).reshape(4, 16)
    y_hat = y.copy()
    y_hat[1, 3] = np.nan
    y_hat[2, 5] = np.inf
    m = compute_metrics(y, y_hat)
    assert m.error == "actual has 1 NaN and 1 Inf of 64 values (first at index (1, 3): nan)"
    assert m.worst_index == (1, 3)
    assert m.max_abs == 0.0
    violations = check([m], Bounds())
    assert [v.metric for v in violations] == ["error"]
    json.dumps(m.to_dict(), allow_nan=False)


def test_all_nan_output_and_empty_output() -> None:
    m = compute_metrics(np.ones(4), np.full(4, np.nan))
    assert m.error is not None and m.max_abs is None
    assert compute_metrics(np.ones((0, 3)), np.ones((0, 3))).error == "empty output"


def test_zero_reference_edge_cases() -> None:
    zeros = np.zeros(8)
    same = compute_metrics(zeros, zeros)
    assert same.cosine == 1.0 and same.rel_l2 == 0.0 and same.max_rel == 0.0
    off = compute_metrics(zeros, np.full(8, 1e-3))
    assert off.cosine == 0.0 and math.isinf(off.rel_l2)
    assert check([off], Bounds(max_rel_l2=0.01))[0].metric == "rel_l2"
    assert off.to_dict()["rel_l2"] == "inf"


def test_metrics_round_trip_through_json(outputs: tuple[np.ndarray, np.ndarray]) -> None:
    m = compute_metrics(*outputs)
    text = json.dumps(m.to_dict(), allow_nan=False)
    assert Metrics.from_dict(json.loads(text)) == m
    with pytest.raises(ValueError, match="unknown fields"):
        Metrics.from_dict({**m.to_dict(), "maxabs": 1.0})


@pytest.mark.parametrize("scale", [1e-3, 1.0, 10.0, 300.0])
def test_fp16_defaults_judge_the_same_relative_error_the_same_at_any_scale(
    outputs: tuple[np.ndarray, np.ndarray], scale: float
) -> None:
    # Hidden states of order 10 that a good fp16 conversion gets right to 0.05 % (cosine
    # 1.00000) once failed absolute bounds: the verdict must not depend on the output's scale.
    y, y_hat = outputs
    good = compute_metrics(y * scale, y_hat.astype(np.float64) * scale)
    assert check([good], Bounds.for_mode("fp16")) == []
    noisy = y_hat.astype(np.float64) + np.random.default_rng(3).normal(0, 0.02, y.shape) * y.std()
    bad = compute_metrics(y * scale, noisy * scale)
    assert {v.metric for v in check([bad], Bounds.for_mode("fp16"))} >= {"rel_l2"}


def test_absolute_bounds_are_checked_when_asked_for(outputs) -> None:
    y, y_hat = outputs
    hidden = compute_metrics(y * 10.0, y_hat.astype(np.float64) * 10.0)
    asked = Bounds.for_mode("fp16").replace(max_abs=1e-3)
    (violation,) = check([hidden], asked)
    assert violation.metric == "max_abs" and violation.message.endswith("x the bound)")


def test_a_cosine_violation_says_how_far_it_is() -> None:
    y = np.linspace(-1.0, 1.0, 64)
    m = compute_metrics(y, y + np.random.default_rng(0).normal(0, 0.05, 64))
    (cos,) = [v for v in check([m], Bounds(min_cosine=0.9999)) if v.metric == "cosine"]
    assert "breaks >= 0.9999000" in cos.message and "x the allowed 0.0001" in cos.message


def test_default_bounds_per_mode() -> None:
    fp16, int8, hybrid = (Bounds.for_mode(q) for q in ("fp16", "int8", "hybrid"))
    for mode in (fp16, int8, hybrid):
        assert mode.max_abs is None and mode.mean_abs is None and mode.max_rel is None
        assert mode.min_cosine is not None and mode.max_rel_l2 is not None
    assert fp16.max_abs_rms is not None
    assert fp16.max_rel_l2 < hybrid.max_rel_l2 < int8.max_rel_l2
    assert fp16.min_cosine > hybrid.min_cosine > int8.min_cosine
    assert Bounds.for_mode("w8a8") == int8 == Bounds.for_mode("int8-mmse")
    with pytest.raises(
        ValueError, match="no default tolerance bounds for quantization mode 'int4'"
    ):
        Bounds.for_mode("int4")


def test_bounds_from_ini_and_replace() -> None:
    base = Bounds.for_mode("fp16")
    ini = Bounds.from_ini("max_abs=5e-3, min_cosine=0.999\nmax_rel_l2=2%  mean_abs=none", base)
    assert ini == base.replace(max_abs=5e-3, mean_abs=None, min_cosine=0.999, max_rel_l2=0.02)
    assert Bounds.from_ini(["max_abs=1", "max_rel = 0.5"]) == Bounds(max_abs=1.0, max_rel=0.5)
    assert base.replace(max_abs_rms=None, max_rel="10%") == Bounds(
        max_rel=0.1,
        min_cosine=base.min_cosine,
        max_rel_l2=base.max_rel_l2,
        mean_abs_rms=base.mean_abs_rms,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_abs", "is not name=value"),
        ("max_err=1", r"unknown tolerance bound\(s\) \['max_err'\]"),
        ("max_abs=small", "is not a number"),
        ("max_abs=-1", "must be a finite number >= 0"),
        ("min_cosine=1.5", "must be at most 1"),
    ],
)
def test_bad_bounds_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Bounds.from_ini(text)


def test_violation_signature_is_stable_and_ordered() -> None:
    y = np.ones((2, 8))
    far = compute_metrics(y, -y)
    names = violation_signature(check({"a": far, "b": far}, Bounds.for_mode("fp16")))
    assert names == "tolerance: cosine, rel_l2, max_abs_rms, mean_abs_rms"
    assert violation_signature([]) == "tolerance exceeded"


def test_metrics_are_keyed_by_the_graphs_output_names_with_their_index() -> None:
    from pytest_rknn.results.cell import CellRecord
    from pytest_rknn.verdict.judge import judge_outputs, output_metrics
    from pytest_rknn.views.dashdata import metric_rows

    rng = np.random.default_rng(0)
    ref = [rng.standard_normal((2, 8)), rng.standard_normal((2, 4))]
    names = ["last_hidden_state", "pooler_output"]
    actual = [r.astype(np.float32) for r in ref]
    verdict = judge_outputs(ref, actual, Bounds(max_abs=0.01), names=names)
    assert list(verdict.metrics) == names
    assert [m["index"] for m in verdict.metrics.values()] == [0, 1]
    assert output_metrics(verdict.metrics, 1) is verdict.metrics["pooler_output"]
    assert "output last_hidden_state (2, 8): ok" in verdict.report
    unnamed = judge_outputs(ref, ref, Bounds(max_abs=0.01), names=["", ""])
    assert list(unnamed.metrics) == ["output0", "output1"]
    older = {"output0": {"cosine": 1.0}}  # a matrix written before outputs had names
    assert output_metrics(older, 0) == {"cosine": 1.0}
    cell = CellRecord("v", "rk3588", "2.5.0", "fp16", "pass", metrics=verdict.metrics)
    rows = metric_rows(cell)
    assert {r["output"] for r in rows} == set(names)
    assert "index" not in {r["metric"] for r in rows}
