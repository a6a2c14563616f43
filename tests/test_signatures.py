"""Tests of the error-signature classifier and log reading, against real rknn-toolkit2 logs.

The logs under tests/data/logs are real (see SOURCES.md there): captured from rknn-toolkit2
2.3.2 on this project's machine, or log lines from public issue reports.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_rknn.verdict.logtext import (
    clean_log,
    error_lines,
    first_error,
    log_excerpt,
    normalise,
    precision_warnings,
    shorten,
    tracebacks,
)
from pytest_rknn.verdict.signatures import PATTERNS, classify, silent_failure

LOGS = Path(__file__).parent / "data" / "logs"


def log(name: str) -> str:
    """The sample exactly as written (no newline translation: the toolkit's ``\\r`` stay)."""
    return (LOGS / name).read_bytes().decode("utf-8")


REAL_LOGS = [
    ("tk232_rv1106_fp16_build.txt", "convert-fail", "platform rv1106 requires quantization"),
    ("tk232_rv1103_fp16_build.txt", "convert-fail", "platform rv1103 requires quantization"),
    (
        "tk232_onnx_attention_opset23.txt",
        "convert-fail",
        "onnx opset 23 unsupported (toolkit needs <= 19)",
    ),
    (
        "tk232_unique_dynamic_graph.txt",
        "convert-fail",
        "Unique input not constant (dynamic graph)",
    ),
    ("tk232_custom_domain_op.txt", "convert-fail", "unsupported op domain my.domain"),
    ("tk232_rk3588_infer_nhwc.txt", "runtime-fail", "inference input shape wrong (expects nhwc)"),
    ("tk232_infer_shape_nchw.txt", "runtime-fail", "inference input shape wrong (expects nchw)"),
    (
        "tk232_infer_input_count.txt",
        "runtime-fail",
        "IndexError in simulator._get_inputs: list index out of range",
    ),
    ("tk232_init_runtime_no_device.txt", "runtime-fail", "init_runtime failed (no device)"),
    ("issue_rknn-llm_417_regtask.txt", "convert-fail", "REGTASK bit width exceeds limit"),
    ("issue_rknn-toolkit2_193_regtask_malloc.txt", "crash", "invalid tensor malloc size"),
    ("issue_rockchip-rknn-toolkit2_272_argb.txt", "crash", "failed to config argb mode layer"),
    (
        "issue_rknn-toolkit2_256_fusion_keyerror.txt",
        "convert-fail",
        "KeyError in fusion rule convert_identity_to_reshape",
    ),
    (
        "issue_rknn-toolkit2_298_sdpa_rule.txt",
        "convert-fail",
        "error in fusion rule fuse_matmul_softmax_matmul_to_sdpa",
    ),
    (
        "issue_rknn-toolkit2_409_fuse_ops_typeerror.txt",
        "convert-fail",
        "TypeError in graph optimiser fuse_ops",
    ),
    (
        "issue_rknpu2_132_quant_indexerror.txt",
        "convert-fail",
        "IndexError in quant_utils._set_b_scale: list index out of range",
    ),
    (
        "issue_rknn-toolkit2_477_onnx_mapping.txt",
        "convert-fail",
        "onnx.mapping missing (onnx too new)",
    ),
    ("issue_rknn-toolkit2_387_einsum.txt", "crash", "unsupported op Einsum"),
    ("issue_rockchip-rknn-toolkit2_10_sqrt.txt", "convert-fail", "unsupported op Sqrt"),
    ("page_zzycbzc_cpp_out_of_range.txt", "crash", "C++ std::out_of_range"),
    (
        "issue_rockchip-rknn-toolkit2_163_prefixed_traceback.txt",
        "convert-fail",
        "AttributeError in ir_graph._clean_model...",
    ),
    (
        "repo_ei-ai-HAT_set_inputs.txt",
        "runtime-fail",
        "inference set inputs failed (RKNN_ERR_PARAM_INVALID)",
    ),
    (
        "repo_ei-ai-HAT_mean_values.txt",
        "convert-fail",
        "load_onnx: The len of mean_values (<shape>) for input <n> is wrong, expect <n>!",
    ),
]


@pytest.mark.parametrize(("name", "status", "expected"), REAL_LOGS, ids=[n for n, *_ in REAL_LOGS])
def test_real_log_gets_its_signature(name: str, status: str, expected: str) -> None:
    assert classify(log(name), None, status) == expected


def test_every_sample_is_documented_and_tested() -> None:
    sources = (LOGS / "SOURCES.md").read_text(encoding="utf-8")
    samples = sorted(p.name for p in LOGS.glob("*.txt"))
    assert [s for s in samples if f"`{s}`" not in sources] == []
    tested = {n for n, *_ in REAL_LOGS} | {
        "tk232_rk3588_sdpa_causal_pass.txt",
        "repo_ei-ai-HAT_benign_errors_build.txt",
    }
    assert sorted(set(samples) - tested) == []


def test_signatures_are_short_and_free_of_run_details() -> None:
    for name, status, _ in REAL_LOGS:
        key = classify(log(name), None, status)
        assert key is not None and len(key) <= 80
        assert not re.search(r"0x[0-9a-f]+|\d\d:\d\d:\d\d|/tmp/", key), (name, key)


def test_pass_has_no_signature_even_with_error_lines() -> None:
    assert classify(log("tk232_rk3588_sdpa_causal_pass.txt"), None, "pass") is None
    assert classify(log("issue_rknn-llm_417_regtask.txt"), "anything", "pass") is None


GOOD_BUILD_E_LINES = (
    "I rknn building ...\n\x1b[1;31mE\x1b[0m RKNN: [20:59:01.412] Unkown op target: 0\n"
    "E RKNN: [20:59:01.530] transpose: infos length != step_size length.\nI rknn building done.\n"
)


def test_a_good_builds_error_lines_are_no_silent_failure() -> None:
    assert silent_failure(log("tk232_rk3588_sdpa_causal_pass.txt")) is None
    assert silent_failure(log("repo_ei-ai-HAT_benign_errors_build.txt")) is None
    assert silent_failure(GOOD_BUILD_E_LINES) is None


def test_an_exception_in_a_successful_builds_log_is_a_silent_failure() -> None:
    thread = (
        "I rknn building ...\nException in thread Thread-2 (_calibrate):\n"
        "Traceback (most recent call last):\n"
        '  File "rknn/api/quantizer.py", line 88, in _calibrate\n'
        "ValueError: operands could not be broadcast together with shapes (1,8,64) (1,4,64)\n"
        "I rknn building done.\n"
    )
    assert silent_failure(thread).startswith(
        "silent: ValueError in quantizer._calibrate: operands could not be broadcast"
    )
    assert silent_failure("Exception in thread quant:\nno traceback here\n") == (
        "silent: exception in thread quant"
    )
    toolkit_logged = log("tk232_unique_dynamic_graph.txt")
    assert silent_failure(toolkit_logged).startswith("silent: ")


def test_same_cause_in_other_runs_gives_the_same_key() -> None:
    # rv1106 build log as captured, and re-timed/re-coloured text of the same failure
    original = log("tk232_rv1106_fp16_build.txt")
    variant = original.replace("rknn-toolkit2 version: 2.3.2", "rknn-toolkit2 version: 2.5.0")
    assert classify(original, None, "convert-fail") == classify(variant, None, "convert-fail")
    first = log("issue_rknn-llm_417_regtask.txt")
    second = log("issue_rknn-toolkit2_193_regtask_malloc.txt").split("E RKNN: [16:50:26")[0]
    assert classify(first) == classify(second) == "REGTASK bit width exceeds limit"


def test_seed_report_abort_wins_over_earlier_regtask_lines() -> None:
    combined = log("issue_rknn-llm_417_regtask.txt") + log(
        "issue_rockchip-rknn-toolkit2_272_argb.txt"
    )
    assert classify(combined, "worker died with SIGABRT", "crash") == (
        "failed to config argb mode layer"
    )


def test_unexplained_error_after_regtask_lines_explains_the_failure() -> None:
    text = log("issue_rknn-llm_417_regtask.txt") + (
        "E RKNN: [08:13:22.001] emit conv failed, node /blocks.3/attn/MatMul_1 "
        "shape (1, 8, 64, 64)\n"
    )
    assert classify(text, "build returned -1", "convert-fail") == (
        "emit conv failed, node <path> shape <shape>"
    )


def test_unexplained_error_before_regtask_lines_does_not_hide_them() -> None:
    text = "E RKNN: [08:13:20.000] some earlier complaint\n" + log("issue_rknn-llm_417_regtask.txt")
    assert classify(text, "build returned -1", "convert-fail") == "REGTASK bit width exceeds limit"


def test_benign_error_lines_of_a_good_build_yield_to_the_workers_exception() -> None:
    benign = log("repo_ei-ai-HAT_benign_errors_build.txt")
    error = "RuntimeError in inference: outputs missing for tensor 'o_17'"
    assert classify(benign, error, "runtime-fail") == (
        "RuntimeError in inference: outputs missing for tensor '<name>'"
    )
    assert classify(benign, "inference returned -1", "runtime-fail") == (
        "channel too large, fallback to cpu"
    )


def test_indexerror_outside_the_optimiser_is_not_a_fusion_rule() -> None:
    key = classify(log("tk232_infer_input_count.txt"), None, "runtime-fail")
    assert key is not None and "fusion rule" not in key


def test_rule_frame_in_traceback_names_the_rule() -> None:
    text = (
        "E build: Traceback (most recent call last):\n"
        '  File "rknn/api/rknn_base.py", line 1990, in rknn.api.rknn_base.RKNNBase.build\n'
        '  File "rknn/api/graph_optimizer.py", line 2108, in '
        "rknn.api.graph_optimizer.GraphOptimizer.fuse_ops\n"
        '  File "rknn/api/graph_optimizer.py", line 5120, in '
        "rknn.api.graph_optimizer._p_fuse_matmul_softmax_matmul_to_sdpa\n"
        "IndexError: list index out of range\n"
    )
    assert classify(text, "build returned -1", "convert-fail") == (
        "IndexError in fusion rule _p_fuse_matmul_softmax_matmul_to_sdpa"
    )


@pytest.mark.parametrize(
    ("error", "status", "expected"),
    [
        ("worker died with SIGSEGV", "crash", "worker died with SIGSEGV"),
        ("worker killed by signal 6", "crash", "worker died with SIGABRT"),
        ("process exit code -9", "crash", "worker died with SIGKILL"),
        (
            "worker exited with code 1 in the middle of a job",
            "crash",
            "worker exited with code <n> in the middle of a job",
        ),
        (
            "worker memory 11.2 GiB passed the cap of 10.0 GiB; worker killed",
            "oom",
            "memory cap exceeded",
        ),
        ("no result within 600 s; worker killed", "timeout", "timeout"),
        (None, "crash", "worker crashed"),
        (None, "env-error", "toolkit environment broken"),
        ("MemoryError in build: ", "convert-fail", "out of memory (MemoryError)"),
        ("build returned -1", "convert-fail", "build returned <n>"),
    ],
)
def test_error_text_and_status(error: str | None, status: str, expected: str) -> None:
    assert classify("", error, status) == expected


def test_harness_stopped_cells_are_keyed_by_status_not_by_log() -> None:
    regtask = log("issue_rknn-llm_417_regtask.txt")
    assert classify(regtask, "worker killed by signal 9", "oom") == "memory cap exceeded"
    assert classify(regtask, None, "timeout") == "timeout"
    assert classify(log("tk232_rv1106_fp16_build.txt"), None, "timeout") == (
        "platform rv1106 requires quantization"
    )


def test_tolerance_failure_uses_the_violation_text() -> None:
    good_log = log("tk232_rk3588_sdpa_causal_pass.txt")
    assert classify(good_log, "tolerance: max_abs, rel_l2", "tolerance-fail") == (
        "tolerance: max_abs, rel_l2"
    )
    assert classify(good_log, None, "tolerance-fail") == "tolerance exceeded"


def test_every_table_entry_is_exercised_and_survivable_ones_come_last() -> None:
    names = [p.name for p in PATTERNS]
    assert len(names) == len(set(names))
    flags = [p.survivable for p in PATTERNS]
    assert flags == sorted(flags), "survivable entries must follow the decisive ones"


def test_clean_log_strips_colour_and_progress_bars() -> None:
    raw = log("tk232_rk3588_infer_nhwc.txt")
    assert "\x1b[" in raw and "\r" in raw
    text = clean_log(raw)
    assert "\x1b[" not in text and "\r" not in text and "it/s]" not in text
    assert "E inference: The input(ndarray) shape (1, 2, 16, 32) is wrong" in text
    assert "I rknn building done." in text


def test_clean_log_unglues_a_line_from_a_progress_bar() -> None:
    text = clean_log(log("issue_rknn-toolkit2_298_sdpa_rule.txt"))
    assert "E build: inputs or 'outputs' must be set!" in text.split("\n")


def test_tracebacks_are_parsed_with_frames_and_exception() -> None:
    found = list(tracebacks(clean_log(log("tk232_unique_dynamic_graph.txt"))))
    assert found, "the toolkit's E build: Traceback block"
    first = found[0]
    assert first.exc_type == "ValueError"
    assert first.message.startswith("The input 0 of Unique('y') need to be constant!")
    assert (
        "rknn/api/graph_optimizer.py",
        "rknn.api.graph_optimizer._dynamic_check",
    ) in first.frames
    assert first.innermost() == "graph_optimizer._dynamic_check"


def test_bare_exception_line_ends_a_traceback() -> None:
    found = list(tracebacks(clean_log(log("tk232_init_runtime_no_device.txt"))))
    assert [tb.exc_type for tb in found][:1] == ["RuntimeError"]


def test_error_lines_skip_toolkit_noise() -> None:
    lines = [line for _, line in error_lines(clean_log(log("tk232_rv1106_fp16_build.txt")))]
    assert lines == [
        "E build: Current target_platform(rv1106) not support do_quantization = False!"
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "E RKNN: [10:21:33.123] REGTASK: The bit width of field value exceeds the limit, "
            "target: v2, offset: 0x4038, shift = 0, limit: 0x1fff, value: 0x2010",
            "REGTASK: The bit width of field value exceeds the limit, target: v2, offset: <hex>, "
            "shift = <n>, limit: <hex>, value: <hex>",
        ),
        (
            "E load_onnx: Catch exception when loading onnx model: /home/u/models/a.onnx!",
            "load_onnx: Catch exception when loading onnx model: <path>!",
        ),
        (
            "E inference: bad shape [1, 16, 32, 4] at step 12",
            "inference: bad shape <shape> at step <n>",
        ),
        ("E build: tensor 'onnx::MatMul_2211' missing", "build: tensor '<name>' missing"),
        ("E build: scale 1.5e-03 too small", "build: scale <n> too small"),
    ],
)
def test_normalise(line: str, expected: str) -> None:
    assert normalise(line, limit=200) == expected
    cut = expected if len(expected) <= 80 else shorten(expected, 80)
    assert normalise(line) == cut


def test_log_excerpt_starts_near_the_first_error_and_is_bounded() -> None:
    raw = log("tk232_rk3588_infer_nhwc.txt")
    excerpt = log_excerpt(raw, limit=4000, context=2)
    assert excerpt.split("\n")[2].startswith("E inference: The input(ndarray) shape")
    short = log_excerpt(raw, limit=300)
    assert len(short) <= 300 and "[... cut ...]" in short
    assert short.rstrip().endswith("expect 'nhwc' like (1, 16, 32, 2)!")


def test_a_harmless_error_line_never_comes_first() -> None:
    log_text = GOOD_BUILD_E_LINES + "E build: REGTASK: bit width exceeds limit\n"
    assert first_error(clean_log(log_text))[1] == "E build: REGTASK: bit width exceeds limit"
    only_harmless = first_error(clean_log(GOOD_BUILD_E_LINES))
    assert only_harmless is not None and "Unkown op target" in only_harmless[1]
    assert classify(log_text, None, "convert-fail") == "build: REGTASK: bit width exceeds limit"


def test_precision_warnings_are_found_and_kept_in_the_excerpt() -> None:
    raw = log("tk232_rk3588_sdpa_causal_pass.txt") + "\nE RKNN: Unkown op target: 0\n"
    warnings = precision_warnings(clean_log(raw))
    assert len(warnings) == 1 and "has been corrected to -10000" in warnings[0]
    fusion = "W build: fuse_cast_and_where: this fusion may cause precision issue"
    assert precision_warnings(f"I a\n{fusion}\nE x") == [fusion]
    assert warnings[0] in log_excerpt(raw, context=0)


@pytest.mark.parametrize("limit", [20, 40, 80])
def test_shorten_cuts_at_a_word_boundary(limit: int) -> None:
    text = "onnx model ir_version 10 is higher than the toolkit's onnx reads, export it again"
    short = shorten(text, limit)
    assert len(short) <= limit and short.endswith("...")
    assert text.startswith(short[:-3]) and text[len(short) - 3] in " ,"
