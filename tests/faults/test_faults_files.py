"""Faults in the files a run is given: aliases, replaced models, files that never end, names
that are not UTF-8, stale journals, baselines of harness faults, long names, external data.

A file's identity is the file itself (a link to a matrix another run writes is refused by the
one-writer lock; a model replaced after collection does not change what its cells convert); a
file is read only if it is a regular file within its bound (a pipe, ``/dev/zero`` behind a link,
a huge document or a ``.npz`` that unpacks past ``--rknn-max-memory`` are one line each, and a
merge or a run goes on or stops cleanly); a path that is not UTF-8 is one line and leaves no
file behind. Each run ends in a matrix that :func:`faults_support.check` finds whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from fake_support import FAKE_DIR
from faults_support import (
    SELECTION,
    TALLY,
    Run,
    at,
    check,
    marks,
    merge,
    run,
    start,
    wait_until,
)
from onnx import TensorProto, helper

from pytest_rknn.results.cell import CellRecord
from pytest_rknn.results.journal import Journal
from pytest_rknn.results.matrix import Matrix
from pytest_rknn.results.status import Status

NOT_UTF8 = os.fsdecode(b"m\xe9")


def _model(path: Path, op: str = "Relu", external: bool = False) -> Path:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node(op, ["h"], ["y"])]
    initial = []
    if external:
        weight = np.eye(8, dtype=np.float32) * 0.5
        initial = [onnx.numpy_helper.from_array(weight, "w")]
    else:
        nodes = [helper.make_node(op, ["x"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "user",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        initial,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save(
            model,
            path,
            save_as_external_data=True,
            location=f"{path.stem}.weights",
            size_threshold=0,
        )
    else:
        onnx.save(model, path)
    return path


def _halfway(suite: pytest.Pytester, matrix: str, jobs: int = 1) -> Run:
    pending = start(
        suite,
        f"--rknn-matrix={matrix}",
        FAKE_RKNN_MODE="slow",
        FAKE_RKNN_GATE=str(suite.path / "gate"),
        FAKE_RKNN_GATE_AT=str(jobs),
    )
    wait_until(lambda: len(marks(suite)) >= jobs, pending, f"job {jobs} started")
    return pending


def _one_error(result: pytest.RunResult | Run) -> str:
    if isinstance(result, Run):
        lines = (result.out + result.err).splitlines()
    else:
        lines = result.outlines + result.errlines
    text = "\n".join(lines)
    errors = [line for line in lines if line.startswith("ERROR:")]
    assert len(errors) == 1, text[-2000:]
    assert "Traceback" not in text and "INTERNALERROR" not in text, text[-2000:]
    return errors[0]


# ---------------------------------------------------------------------------------------------
# 1. A file's identity is the file
# ---------------------------------------------------------------------------------------------

ALIASES = {
    "a-link": lambda root: (root / "alias.json").symlink_to("m.json"),
    "a-linked-folder": lambda root: (root / "linked").symlink_to(root),
    "a-dotted-path": lambda root: (root / "sub").mkdir(),
    "a-link-to-a-link": lambda root: (
        (root / "hop.json").symlink_to("m.json"),
        (root / "alias.json").symlink_to("hop.json"),
    ),
}
ALIAS_PATHS = {
    "a-link": "alias.json",
    "a-linked-folder": "linked/m.json",
    "a-dotted-path": "sub/../m.json",
    "a-link-to-a-link": "alias.json",
}


@pytest.mark.parametrize("alias", list(ALIASES))
def test_an_alias_of_a_matrix_another_run_writes_is_refused(suite, alias: str) -> None:
    ALIASES[alias](suite.path)
    first = _halfway(suite, "m.json")
    second = run(suite, f"--rknn-matrix={ALIAS_PATHS[alias]}")
    TALLY.faults += 1
    (suite.path / "gate").touch()
    first.wait()
    assert second.ret == pytest.ExitCode.USAGE_ERROR, second.out[-2000:] + second.err
    error = _one_error(second)
    assert f"--rknn-matrix {ALIAS_PATHS[alias]}" in error and "is being written" in error
    assert second.finished == []
    first.clean()
    assert first.ret == 0, first.out[-2000:]
    found = check(suite, suite.path / "m.json", first.finished)
    assert len(found) == 8 and Matrix.load(suite.path / "m.json").meta["complete"] is True
    assert not list(suite.path.glob("*.journal")) and not list(suite.path.glob("*.interrupted*"))


REPLACE = '''
import os
import shutil


def pytest_collection_finish(session):
    """Replace the model file once the cells are collected (the model was read and hashed)."""
    source = os.environ.get("FAULTS_REPLACE")
    if source:
        shutil.copyfile(source, os.environ["FAULTS_REPLACED"])
'''


def test_a_model_replaced_after_collection_converts_the_bytes_that_were_hashed(suite) -> None:
    conftest = suite.path / "conftest.py"
    conftest.write_text(conftest.read_text() + REPLACE)
    model = _model(suite.path / "user.onnx", "Relu")
    replacement = _model(suite.path / "other" / "user.onnx", "Sigmoid")
    hashed = hashlib.sha256(model.read_bytes()).hexdigest()
    result = run(
        suite,
        "--rknn-examples=0",
        "--rknn-model=user.onnx",
        "--rknn-matrix=m.json",
        FAULTS_REPLACE=str(replacement),
        FAULTS_REPLACED=str(model),
    )
    TALLY.faults += 1
    result.clean()
    assert model.read_bytes() == replacement.read_bytes(), "the file was replaced mid-run"
    found = check(suite, suite.path / "m.json", result.finished)
    assert len(found) == 4
    converted = list(suite.path.rglob("models/model-user-*.onnx"))
    assert converted, "the run wrote the model it converts into its models folder"
    for path in converted:
        ops = [node.op_type for node in onnx.load(path).graph.node]
        assert ops == ["Relu"], f"{path} holds {ops}: the replacement, not the bytes hashed"
    for cell in found.values():
        assert cell.variant["sha256"] == hashed


def test_a_long_model_file_name_gives_short_derived_names(suite) -> None:
    name = "m" * 235 + ".onnx"  # 240 characters: legal on every usual filesystem
    _model(suite.path / name)
    result = run(suite, "--rknn-examples=0", f"--rknn-model={name}", "--rknn-matrix=m.json")
    TALLY.bad_inputs += 1
    result.clean()
    assert result.ret == 0, result.out[-2000:]
    found = check(suite, suite.path / "m.json", result.finished)
    assert len(found) == 4
    for cell in found.values():
        assert len(cell.variant_id) <= 90 and cell.variant["path"].endswith(name)


def test_a_model_with_external_data_is_read_from_its_own_folder(suite) -> None:
    _model(suite.path / "models" / "ext.onnx", "Relu", external=True)
    assert (suite.path / "models" / "ext.weights").is_file()
    result = run(suite, "--rknn-examples=0", "--rknn-model=models/ext.onnx", "--rknn-matrix=m.json")
    TALLY.bad_inputs += 1
    result.clean()
    assert result.ret == 0, result.out[-2000:]
    assert len(check(suite, suite.path / "m.json", result.finished)) == 4


# ---------------------------------------------------------------------------------------------
# 2. Reads within a bound, of regular files only; 3. names that are not UTF-8
# ---------------------------------------------------------------------------------------------


def _npz_bomb(path: Path, unpacked: int) -> None:
    """A .npz of one float32 array of zeros that unpacks to ``unpacked`` bytes (written in
    blocks: the test itself never holds it)."""
    header = np.lib.format
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("x.npy", "w", force_zip64=True) as member,
    ):
        shape = (unpacked // 4,)
        header.write_array_header_1_0(
            member, {"descr": "<f4", "fortran_order": False, "shape": shape}
        )
        block = bytes(16 << 20)
        left = unpacked
        while left > 0:
            member.write(block[: min(left, len(block))])
            left -= len(block)


def _setup_files(root: Path) -> None:
    (root / "pipe.json").unlink(missing_ok=True)
    os.mkfifo(root / "pipe.json")
    os.mkfifo(root / "pipe.onnx")
    (root / "zero.json").symlink_to("/dev/zero")
    (root / "zero.onnx").symlink_to("/dev/zero")
    _model(root / "piped.onnx")
    os.mkfifo(root / "piped.npz")
    _model(root / "zeroed.onnx")
    (root / "zeroed.npz").symlink_to("/dev/zero")
    _model(root / "bomb.onnx")
    _npz_bomb(root / "bomb.npz", 1 << 30)
    _model(root / NOT_UTF8 / "m.onnx")


BAD_FILES = [
    ("--rknn-baseline=pipe.json", "pipe.json is a pipe, not a regular file"),
    ("--rknn-baseline=zero.json", "zero.json is a character device, not a regular file"),
    ("--rknn-shard-costs=zero.json", "zero.json is a character device"),
    ("--rknn-model=pipe.onnx", "pipe.onnx is a pipe"),
    ("--rknn-model=zero.onnx", "is a character device, not a regular file"),
    ("--rknn-model=piped.onnx", "piped.npz is a pipe"),
    ("--rknn-model=zeroed.onnx", "zeroed.npz is a character device"),
    ("--rknn-model=bomb.onnx", "bomb.npz unpacks to 1.0 GiB"),
    (f"--rknn-matrix={NOT_UTF8}.json", "the path is not valid UTF-8"),
    (f"--rknn-html={NOT_UTF8}.html", "the path is not valid UTF-8"),
    (f"--rknn-markdown={NOT_UTF8}.md", "the path is not valid UTF-8"),
    (f"--rknn-baseline={NOT_UTF8}.json", "the path is not valid UTF-8"),
    (f"--rknn-model={NOT_UTF8}/m.onnx", "the path is not valid UTF-8"),
    (f"--rknn-envs={NOT_UTF8}", "the path is not valid UTF-8"),
]


@pytest.mark.parametrize(("option", "says"), BAD_FILES, ids=[o for o, _ in BAD_FILES])
def test_a_file_that_is_no_regular_file_or_too_big_is_one_error_line(
    suite, monkeypatch, option: str, says: str
) -> None:
    monkeypatch.syspath_prepend(str(FAKE_DIR))
    _setup_files(suite.path)
    TALLY.bad_inputs += 1
    args = [*SELECTION, "--rknn-matrix=m.json", "--rknn-max-memory=700M"]
    if option.startswith("--rknn-shard-costs"):
        args.append("--rknn-shard=1/2")
    if option.startswith("--rknn-matrix"):
        args.remove("--rknn-matrix=m.json")

    def listed() -> list[str]:
        skipped = (".pytest_cache", "__pycache__")  # pytest's and Python's, not the run's
        return sorted(n for n in os.listdir(suite.path) if n not in skipped)

    before = listed()
    for _attempt in range(2):  # a retry leaves nothing behind either
        result = suite.runpytest_inprocess(*args, option)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, "\n".join(result.outlines)[-2000:]
        error = _one_error(result)
        assert says in error, error
    assert listed() == before, "the refused run left files behind"


def _matrix(suite: pytest.Pytester) -> Run:
    good = run(suite, "--rknn-matrix=good.json")
    assert good.ret == 0, good.out[-2000:]
    return good


MERGE_FAULTS = {
    "a-pipe-in-history": ("history", lambda p: os.mkfifo(p / "stuck.json"), "stuck.json is a pipe"),
    "dev-zero-in-history": (
        "history",
        lambda p: (p / "zero.json").symlink_to("/dev/zero"),
        "zero.json is a character device",
    ),
    "a-pipe-as-input": ("input", lambda p: os.mkfifo(p / "stuck.json"), "stuck.json is a pipe"),
    "dev-zero-as-input": (
        "input",
        lambda p: (p / "zero.json").symlink_to("/dev/zero"),
        "zero.json is a character device",
    ),
    "a-journal-that-is-dev-zero": (
        "input",
        lambda p: (p / "z.json.journal").symlink_to("/dev/zero"),
        "z.json.journal is a character device",
    ),
    "over-the-document-bound": (
        "input",
        lambda p: (p / "huge.json").write_text(" " * (80 << 10) + "{}"),
        "over the limit of",
    ),
    "a-name-not-utf8": (
        "history",
        lambda p: shutil.copyfile(p.parent / "good.json", p / f"{NOT_UTF8}.json"),
        "its name is not UTF-8",
    ),
}


@pytest.mark.parametrize("fault", list(MERGE_FAULTS))
def test_merge_leaves_out_a_file_it_must_not_read_in_one_line(suite, fault: str) -> None:
    good = _matrix(suite)
    where, make, says = MERGE_FAULTS[fault]
    folder = suite.path / "runs"
    folder.mkdir()
    shutil.copyfile(suite.path / "good.json", folder / "earlier.json")
    make(folder)
    TALLY.bad_inputs += 1
    if where == "history":
        args = ["good.json", "--history", "runs", "-o", "out.json"]
    else:
        bad = next(p.name for p in folder.iterdir() if p.name != "earlier.json")
        args = ["good.json", f"runs/{bad}", "-o", "out.json"]
    env_bound = {"PYTEST_RKNN_MAX_DOCUMENT": "64K"} if fault.startswith("over") else {}
    os.environ.update(env_bound)
    try:
        merged = merge(suite, *args)
    finally:
        for name in env_bound:
            os.environ.pop(name)
    lines = [line for line in merged.stderr.splitlines() if says in line]
    assert len(lines) == 1, merged.stderr
    assert lines[0].startswith("pytest-rknn merge: left out"), lines[0]
    assert "Traceback" not in merged.stderr
    assert merged.returncode == (0 if where == "history" else 1), merged.stderr
    check(suite, suite.path / "out.json", good.finished)


def test_merge_refuses_an_output_path_that_is_not_utf8(suite) -> None:
    _matrix(suite)
    TALLY.bad_inputs += 1
    merged = merge(suite, "good.json", "-o", f"{NOT_UTF8}.json")
    assert merged.returncode == 2 and "is not valid UTF-8" in merged.stderr, merged.stderr
    assert len(merged.stderr.splitlines()) == 1 and "Traceback" not in merged.stderr


# ---------------------------------------------------------------------------------------------
# 6. Stale journals and baselines of harness faults
# ---------------------------------------------------------------------------------------------


def test_merge_does_not_join_another_runs_stale_journal_to_a_matrix(suite) -> None:
    good = _matrix(suite)
    first = Matrix.load(suite.path / "good.json").cells[0]
    stale = CellRecord.from_dict({**first.to_dict(), "status": "crash", "reason": "stale"})
    with Journal(suite.path / "good.json.journal", meta={"run_id": "someone-else"}) as journal:
        journal.append(stale)
    TALLY.faults += 1
    merged = merge(suite, "good.json", "-o", "out.json")
    assert merged.returncode == 0, merged.stderr
    assert "it is the journal of another run" in merged.stderr, merged.stderr
    check(suite, suite.path / "out.json", good.finished)
    out = Matrix.load(suite.path / "out.json")
    assert "journal" not in out.meta and not out.meta.get("conflicts")
    alone = merge(suite, "good.json.journal", "-o", "alone.json")  # named: merged on purpose
    assert alone.returncode == 0 and len(Matrix.load(suite.path / "alone.json")) == 1


HARNESS = ["crash", "timeout", "oom", "env-error", "reference-error"]


@pytest.mark.parametrize("status", HARNESS)
def test_a_harness_fault_in_the_baseline_is_no_expectation(suite, status: str) -> None:
    """A baseline whose 2.5.0/rk3588 cells were harness faults (a crash, a timeout...) that do
    not recur: the next run passes them, and is not failed by a strict xfail."""
    faulty = at("2.5.0", "rk3588")
    before = run(suite, "--rknn-matrix=base.json")
    check(suite, suite.path / "base.json", before.finished)
    data = json.loads((suite.path / "base.json").read_text())
    for cell in data["cells"]:
        if (cell["toolkit"], cell["platform"]) == ("2.5.0", "rk3588"):
            cell.update(status=status, reason=f"a {status} of the harness", metrics={})
    (suite.path / "base.json").write_text(json.dumps(data))
    assert sum(faulty(c) for c in Matrix.load(suite.path / "base.json").cells) == 2
    TALLY.faults += 2
    again = run(suite, "--rknn-matrix=m.json", "--rknn-baseline=base.json")
    again.clean()
    assert again.ret == 0, again.out[-3000:]
    assert "XPASS" not in again.out and "xfail" not in again.out.lower()
    check(suite, suite.path / "m.json", again.finished)


def test_a_toolkit_finding_in_the_baseline_stays_an_expectation(suite) -> None:
    faulty = at("2.5.0", "rk3588")
    modes = "2.5.0=by-platform:rk3588=build-fail"
    before = run(suite, "--rknn-matrix=base.json", FAKE_RKNN_MODES=modes)
    found = check(suite, suite.path / "base.json", before.finished, faulty)
    assert all(c.status is Status.CONVERT_FAIL for c in found.values() if faulty(c))
    TALLY.faults += 2
    again = run(suite, "--rknn-matrix=m.json", "--rknn-baseline=base.json", "-rX")
    assert again.ret == 1 and again.out.count("XPASS(strict)") >= 2, again.out[-3000:]


# ---------------------------------------------------------------------------------------------
# 4. Memory caps below what a worker needs, and terminal escapes in reasons
# ---------------------------------------------------------------------------------------------


def test_a_worker_over_the_memory_cap_while_starting_is_oom_not_env_error(suite) -> None:
    faulty = lambda cell: cell.toolkit == "2.5.0"  # noqa: E731
    result = run(
        suite,
        "--rknn-matrix=m.json",
        "--rknn-max-memory=700M",
        FAKE_RKNN_MODES="2.5.0=import-hog",
        FAKE_RKNN_HOG_MB="900",
    )
    result.clean()
    found = check(suite, suite.path / "m.json", result.finished, faulty)
    hit = [cell for cell in found.values() if faulty(cell)]
    TALLY.faults += len(hit)
    assert len(hit) == 4
    for cell in hit:
        assert cell.status is Status.OOM, (cell.status, cell.reason)
        assert "while importing the toolkit" in cell.reason and "rebuild" not in cell.reason


def test_terminal_escapes_never_reach_a_reason_or_a_log_excerpt(suite) -> None:
    faulty = at("2.5.0", "rk3588")
    modes = "2.5.0=by-platform:rk3588=ansi-fail"
    result = run(suite, "--rknn-matrix=m.json", FAKE_RKNN_MODES=modes)
    result.clean()
    found = check(suite, suite.path / "m.json", result.finished, faulty)
    hit = [cell for cell in found.values() if faulty(cell)]
    TALLY.faults += len(hit)
    assert hit and all(cell.status is Status.CONVERT_FAIL for cell in hit)
    text = (suite.path / "m.json").read_text()
    assert "\\u001b" not in text and "\x1b" not in text and "\\u0007" not in text
    for cell in hit:
        assert "bit width" in (cell.log_excerpt or "") + (cell.reason or ""), cell.to_dict()
    data = json.loads(text)
    assert data["cells"]
