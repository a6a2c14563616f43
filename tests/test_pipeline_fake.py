"""The whole pipeline in seconds: plugin -> cells -> worker protocol -> matrix, FAKE toolkit.

Each test runs a pytester suite in a subprocess with ``-p fake_toolkits``: every toolkit version
is this interpreter running the FAKE ``rknn`` of ``tests/fake_toolkit`` (``simulate`` computes
the right answer with onnxruntime; other modes fail on purpose). Only the toolkit is fake: the
workers, the protocol, the verdicts, the cache, the recorder and the matrix are the real ones.
Real-toolkit runs of the same pipeline are in test_plugin_runs.py.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import onnx
import pytest
from fake_support import SELECTION, fake_suite
from onnx import TensorProto, helper

from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status
from pytest_rknn.verdict.judge import output_metrics

BASE = (*SELECTION, "--rknn-matrix=m.json")


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return fake_suite(pytester, monkeypatch)


def run(suite: pytest.Pytester, *args: str) -> pytest.RunResult:
    return suite.runpytest_subprocess(*BASE, *args)


def cells(suite: pytest.Pytester, name: str = "m.json") -> dict[tuple[str, ...], object]:
    matrix = Matrix.load(suite.path / name)
    return {cell.key: cell for cell in matrix.cells}


def item_ids(result: pytest.RunResult) -> set[str]:
    found = set()
    for line in result.outlines:
        if "test_cell[" in line and (" PASSED" in line or " FAILED" in line or " SKIPPED" in line):
            found.add(line.split("test_cell[", 1)[1].split("]", 1)[0])
    return found


def test_cells_run_through_the_real_workers_into_the_matrix(suite: pytest.Pytester) -> None:
    result = run(suite, "-v")
    result.assert_outcomes(passed=8)
    found = cells(suite)
    assert len(found) == 8
    assert {"-".join(key) for key in found} == item_ids(result)
    job_ids = [cell.job_id for cell in found.values()]
    assert all(job_ids) and len(set(job_ids)) == 8, "each cell holds its own job's answer"
    for cell in found.values():
        assert cell.status is Status.PASS and not cell.cached
        assert output_metrics(cell.metrics, 0)["cosine"] > 0.9999
        assert cell.bounds is not None
    meta = json.loads((suite.path / "m.json").read_text())["meta"]
    assert {env["kind"] for env in meta["toolkit_envs"]} == {"FAKE toolkit"}
    assert not (suite.path / "m.json.journal").exists()


def test_a_warm_run_reuses_answers_and_judges_them_again(suite: pytest.Pytester) -> None:
    run(suite).assert_outcomes(passed=8)
    cold = cells(suite)
    result = run(suite, "--rknn-matrix=warm.json")
    result.assert_outcomes(passed=8)
    warm = cells(suite, "warm.json")
    assert set(warm) == set(cold)
    for key, cell in warm.items():
        assert cell.cached and cell.status is cold[key].status
        assert cell.job_id == cold[key].job_id
    tight = run(suite, "--rknn-matrix=tight.json", "-o", "rknn_bounds_fp16=max_rel_l2=0")
    tight.assert_outcomes(failed=8)
    for cell in cells(suite, "tight.json").values():
        assert cell.cached and cell.status is Status.TOLERANCE_FAIL
        assert cell.bounds["max_rel_l2"] == 0 and cell.signature == "tolerance: rel_l2"


def test_no_cache_neither_reads_nor_writes(suite: pytest.Pytester) -> None:
    run(suite, "--rknn-no-cache").assert_outcomes(passed=8)
    assert not list((suite.path / ".pytest_cache").rglob("conversions"))
    run(suite).assert_outcomes(passed=8)
    run(suite, "--rknn-no-cache", "--rknn-matrix=again.json").assert_outcomes(passed=8)
    assert not any(cell.cached for cell in cells(suite, "again.json").values())


def test_failures_are_statuses_with_signatures(suite: pytest.Pytester, monkeypatch) -> None:
    """A toolkit that dies in build the same way in two fresh processes failed to convert:
    ``convert-fail``, its reason naming the signal, the call and both jobs, and cached."""
    monkeypatch.setenv(
        "FAKE_RKNN_MODES", "2.3.2=by-platform:rk3566=build-fail,rk3588=abort;2.5.0=runtime-fail"
    )
    result = run(suite)
    result.assert_outcomes(failed=8)
    found = cells(suite)
    statuses = {(k[1], k[2]): c.status for k, c in found.items()}
    assert statuses == {
        ("rk3566", "2.3.2"): Status.CONVERT_FAIL,
        ("rk3588", "2.3.2"): Status.CONVERT_FAIL,
        ("rk3566", "2.5.0"): Status.RUNTIME_FAIL,
        ("rk3588", "2.5.0"): Status.RUNTIME_FAIL,
    }
    sigs = {(k[1], k[2]): c.signature for k, c in found.items()}
    assert sigs[("rk3566", "2.3.2")] == "REGTASK bit width exceeds limit"
    assert sigs[("rk3588", "2.3.2")] == "invalid tensor malloc size"
    for key, cell in found.items():
        if key[1:3] == ("rk3588", "2.3.2"):
            reason = re.fullmatch(
                r"the toolkit died with SIGABRT in build, the same way in two fresh processes "
                r"\(jobs (\w+) and (\w+)\)",
                cell.reason,
            )
            assert reason is not None, cell.reason
            assert reason[2] == cell.job_id and reason[1] != reason[2]
            assert "invalid tensor malloc size" in cell.log_excerpt
    result.stdout.fnmatch_lines(["*convert-fail: invalid tensor malloc size*"])
    again = run(suite, "--rknn-matrix=again.json")
    again.assert_outcomes(failed=8)
    for key, cell in cells(suite, "again.json").items():
        assert cell.cached and cell.status is found[key].status, key
        assert (cell.reason, cell.job_id) == (found[key].reason, found[key].job_id), key


def test_a_crash_that_a_second_run_does_not_repeat_is_a_crash_never_cached(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first job dies in build, the same job run again converts: that is no answer of the
    toolkit's, so the cell is a crash (its reason says so), run again next time."""
    monkeypatch.setenv("FAKE_RKNN_MODES", "2.3.2=by-platform:rk3588=crash-once+simulate")
    monkeypatch.setenv("FAKE_RKNN_ONCE", str(suite.path / "crashed-once"))
    result = run(suite)
    result.assert_outcomes(passed=7, failed=1)
    crashed = [c for c in cells(suite).values() if c.status is not Status.PASS]
    assert [(c.platform, c.toolkit, c.status) for c in crashed] == [
        ("rk3588", "2.3.2", Status.CRASH)
    ]
    assert crashed[0].reason == (
        "worker died with SIGSEGV in build; the same job run again in a fresh process "
        "converted and ran: not reproducible"
    )
    again = run(suite, "--rknn-matrix=again.json")
    again.assert_outcomes(passed=8)
    rerun = cells(suite, "again.json")[crashed[0].key]
    assert rerun.status is Status.PASS and not rerun.cached


def test_a_build_that_succeeds_over_an_exception_passes_with_a_warning(suite, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_RKNN_MODES", "2.5.0=by-platform:rk3588=silent+simulate")
    first = run(suite)
    first.assert_outcomes(passed=8)
    first.stdout.fnmatch_lines(
        [
            "2 cell(s) whose log shows an exception the toolkit survived:",
            "     2  silent: KeyError in api._quantize_layer: '<path>'",
        ]
    )
    again = run(suite, "--rknn-matrix=again.json")
    again.assert_outcomes(passed=8)
    for found in (cells(suite), cells(suite, "again.json")):
        warned = {k: c for k, c in found.items() if c.warning}
        assert {(k[1], k[2]) for k in warned} == {("rk3588", "2.5.0")}
        for cell in warned.values():
            assert cell.warning == "silent: KeyError in api._quantize_layer: '<path>'"
            assert "Exception in thread quant-worker" in cell.log_excerpt
        assert all(c.warning is None for k, c in found.items() if k not in warned)
    assert all(c.cached for c in cells(suite, "again.json").values())


def test_config_options_fan_out_into_cells_that_reach_the_toolkit(suite) -> None:
    result = run(
        suite,
        "--rknn-toolkits=2.2.0,2.5.0",
        "--rknn-config=optimization_level=2|3",
        "--rknn-config=disable_rules=fuse_a",
        "-v",
    )
    result.assert_outcomes(passed=8, skipped=8)
    found = cells(suite)
    assert {c.quant for c in found.values()} == {
        "fp16+disable_rules:fuse_a+optimization_level:2",
        "fp16+disable_rules:fuse_a+optimization_level:3",
    }
    for cell in found.values():
        if cell.toolkit == "2.2.0":
            assert cell.status is Status.UNSUPPORTED
            assert cell.reason == "rknn-toolkit2 2.2.0's config() does not accept disable_rules"
            continue
        assert cell.status is Status.PASS
        identity = json.loads((Path(cell.artifact).parent / "FAKE-identity.json").read_text())
        level = int(cell.quant.rsplit(":", 1)[1])
        assert identity["config"] == {
            "float_dtype": "float16",
            "disable_rules": ["fuse_a"],
            "optimization_level": level,
        }
    again = run(
        suite,
        "--rknn-matrix=again.json",
        "--rknn-toolkits=2.5.0",
        "--rknn-config=optimization_level=3",
        "--rknn-config=disable_rules=fuse_a",
    )
    again.assert_outcomes(passed=4)
    assert all(c.cached for c in cells(suite, "again.json").values())


def test_a_broken_environment_is_env_error_with_its_reason(suite, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_RKNN_BROKEN", "2.5.0")
    result = run(suite)
    result.assert_outcomes(passed=4, failed=4)
    for key, cell in cells(suite).items():
        if key[2] == "2.5.0":
            assert cell.status is Status.ENV_ERROR
            assert "FAKE_RKNN_BROKEN" in cell.reason and cell.job_id is None


def test_xdist_gives_every_cell_once_with_the_serial_statuses(suite, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_RKNN_MODES", "2.5.0=by-platform:rk3588=build-fail")
    run(suite, "--rknn-no-cache", "--rknn-matrix=serial.json")
    result = run(suite, "--rknn-no-cache", "-n", "2", "--rknn-matrix=parallel.json")
    result.assert_outcomes(passed=6, failed=2)
    serial, parallel = cells(suite, "serial.json"), cells(suite, "parallel.json")
    assert {k: c.status for k, c in parallel.items()} == {k: c.status for k, c in serial.items()}
    assert len({c.job_id for c in parallel.values()}) == 8
    meta = json.loads((suite.path / "parallel.json").read_text())["meta"]
    assert [env["version"] for env in meta["toolkit_envs"]] == ["2.3.2", "2.5.0"], (
        "the xdist controller provisions the collected cells' toolkits"
    )


def _model(path: Path, op: str = "Relu", domain: str = "", dims=(1, 4, 8)) -> Path:
    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    graph = helper.make_graph(
        [node],
        "user",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=8), path)
    return path


def test_identical_models_under_two_names_stay_two_cells(suite: pytest.Pytester) -> None:
    first = _model(suite.path / "encoder_a.onnx")
    (suite.path / "encoder_b.onnx").write_bytes(first.read_bytes())
    args = ("--rknn-examples=0", "--rknn-toolkits=2.3.2", "--rknn-platforms=rk3588")
    models = ("--rknn-model=encoder_a.onnx", "--rknn-model=encoder_b.onnx")
    run(suite, *args, *models).assert_outcomes(passed=2)
    run(suite, *args, *models, "--rknn-matrix=warm.json").assert_outcomes(passed=2)
    for name in ("m.json", "warm.json"):
        found = list(cells(suite, name).values())
        assert len(found) == 2
        paths = sorted(Path(c.variant["path"]).name for c in found)
        assert paths == ["encoder_a.onnx", "encoder_b.onnx"]
        for cell in found:
            assert Path(cell.variant["path"]).stem.replace("_", "") in cell.variant_id.replace(
                "_", ""
            )
    assert all(c.cached for c in cells(suite, "warm.json").values())


def test_a_reference_that_cannot_be_computed_keeps_the_conversion(
    suite: pytest.Pytester, monkeypatch
) -> None:
    monkeypatch.setenv("FAKE_RKNN_MODE", "ok")
    _model(suite.path / "custom.onnx", op="Mystery", domain="com.example")
    _model(suite.path / "huge.onnx", dims=(1, 100000, 100000))
    args = ("--rknn-examples=0", "--rknn-toolkits=2.3.2", "--rknn-platforms=rk3588")
    result = run(suite, *args, "--rknn-model=custom.onnx", "--rknn-model=huge.onnx")
    result.assert_outcomes(failed=2)
    by_model = {Path(c.variant["path"]).stem: c for c in cells(suite).values()}
    custom, huge = by_model["custom"], by_model["huge"]
    assert custom.status is Status.REFERENCE_ERROR
    assert "the reference run failed" in custom.reason and "Mystery" in custom.reason
    assert custom.job_id and custom.timings.get("build") is not None, "the conversion is kept"
    assert huge.status is Status.REFERENCE_ERROR
    assert "over --rknn-max-memory" in huge.reason and huge.job_id is None
    assert "INTERNALERROR" not in "\n".join(result.outlines + result.errlines)


def test_a_harness_bug_is_a_crash_cell_not_a_lost_one(suite: pytest.Pytester) -> None:
    suite.makeconftest(
        """
import pytest_rknn.pipeline.run as run


def broken(*args, **kwargs):
    raise RuntimeError("judge exploded")


run.judge_outputs = broken
"""
    )
    result = run(suite, "--rknn-toolkits=2.3.2")
    result.assert_outcomes(failed=4)
    for cell in cells(suite).values():
        assert cell.status is Status.CRASH and cell.signature == "internal error"
        assert "RuntimeError: judge exploded" in cell.reason
        assert "Traceback" in cell.log_excerpt
    (suite.path / "conftest.py").unlink()
    run(suite, "--rknn-toolkits=2.3.2", "--rknn-matrix=fixed.json").assert_outcomes(passed=4)
    assert all(c.status is Status.PASS and c.cached for c in cells(suite, "fixed.json").values())


def test_a_bad_bound_on_a_marker_fails_that_test_in_one_line(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_rknn_cells="""
import pytest


@pytest.mark.rknn(max_abs=float("nan"))
def test_cell(rknn_cell):
    rknn_cell.check()
"""
    )
    result = run(suite, "--rknn-toolkits=2.3.2", "--rknn-platforms=rk3588")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*@pytest.mark.rknn on test_cell*max_abs=nan*finite number*"])
    assert "Traceback" not in result.stdout.str()


def test_a_stored_judgement_that_is_not_one_is_made_again(suite: pytest.Pytester) -> None:
    """Judgements are stored per (outputs, reference, bounds): the FAKE toolkit gives every
    target the same outputs, so six variants make six of them."""
    six = ("--rknn-examples=6", "--rknn-toolkits=2.3.2", "--rknn-platforms=rk3588")
    run(suite, *six).assert_outcomes(passed=6)
    folder = suite.path / ".pytest_cache" / "v" / "pytest-rknn" / "verdicts"
    entries = sorted(folder.iterdir())
    assert len(entries) == 6
    damage = [
        lambda e: "{not json",
        lambda e: json.dumps({**e, "status": "crash"}),
        lambda e: json.dumps({**e, "metrics": {}}),
        lambda e: json.dumps({**e, "signature": "tolerance: rel_l2"}),
        lambda e: json.dumps({**e, "metrics": {"output0": {"shape": "big"}}}),
        lambda e: json.dumps({**e, "key": "another"}),
    ]
    for path, change in zip(entries, damage, strict=False):
        path.write_text(change(json.loads(path.read_text())))
    run(suite, *six, "--rknn-matrix=again.json").assert_outcomes(passed=6)
    for cell in cells(suite, "again.json").values():
        assert cell.status is Status.PASS and output_metrics(cell.metrics, 0)["cosine"] > 0.9999
        assert cell.signature is None
    assert all(json.loads(p.read_text())["status"] == "pass" for p in folder.iterdir())


def test_a_failing_cell_shows_a_short_block_and_a_rerun_command_that_works(
    suite: pytest.Pytester, monkeypatch
) -> None:
    monkeypatch.setenv("FAKE_RKNN_MODES", "2.5.0=by-platform:rk3588=raise")
    result = run(suite)
    result.assert_outcomes(passed=6, failed=2)
    text = result.stdout.str()
    block = text.split("FAILURES", 1)[1].split("rknn compatibility matrix", 1)[0]
    assert "IndexError in build" in block and "Traceback" not in block
    # After the FAILED lines, the matrix's headline again, last before pytest's own line.
    assert (
        result.outlines[-2]
        == "rknn matrix: 8 cells: 6 pass, 2 fail (convert-fail 2); matrix: m.json"
    )
    reruns = [line for line in block.splitlines() if line.startswith("re-run: ")]
    assert len(reruns) == 2
    assert len(block.strip().splitlines()) <= 2 * 7, block
    command = shlex.split(reruns[0].removeprefix("re-run: "))
    assert command[-1] == "--rknn-matrix=rknn-rerun.json" and "--rknn-matrix=m.json" not in command
    again = suite.runpytest_subprocess("-p", "fake_toolkits", *command[1:])
    again.assert_outcomes(failed=1)
    (cell,) = cells(suite, "rknn-rerun.json").values()
    assert command[1].endswith(f"[{cell.id}]") and cell.status is Status.CONVERT_FAIL
    assert len(cells(suite)) == 8, "the run's own matrix is untouched"

    monkeypatch.setenv("CI", "true")  # pytest then prints summary messages whole
    verbose = run(suite, "-v", "--rknn-matrix=v.json", "-k", cell.id)
    summary = verbose.stdout.str().split("short test summary info", 1)[1].splitlines()[1:]
    assert summary[0].endswith(" - convert-fail: IndexError in api.build: list index out of range")
    assert len(summary) == 3, summary  # the FAILED line, the matrix's headline, pytest's
    assert summary[1] == "rknn matrix: 1 cell: 0 pass, 1 fail (convert-fail 1); matrix: v.json"
    log = verbose.stdout.str().split("toolkit log (excerpt):", 1)[1]
    assert log.count("Traceback (most recent call last)") == 1
    assert "pytest_rknn" not in log.split("rknn compatibility matrix", 1)[0]
