"""The plugin's options, ini keys and cell ids, tested with ``pytester`` (no toolkit needed).

Bad values must end the run with one ``ERROR:`` line that names the fix and pytest's usage-error
exit code; cells must be pytest items whose ids are the variant ids of the seeded draw, the same
in every process for a seed.
"""

from __future__ import annotations

import json
import re

import pytest
from fake_support import CELLS, collected

from pytest_rknn.variants.strategies import draw_variants

# A small, fully specified selection; no toolkit runs in this file.
BASE = (
    "--rknn-toolkits=2.3.2",
    "--rknn-platforms=rk3588",
    "--rknn-forms=manual",
    "--rknn-examples=2",
    "--rknn-no-curated",
)


@pytest.fixture
def cells(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_rknn_cells=CELLS)
    return pytester


def usage_error(result: pytest.RunResult) -> str:
    """The run's single ``ERROR:`` line, after checking it was a usage error and nothing else."""
    tail = "\n".join((result.outlines + result.errlines)[-4:])
    assert result.ret == pytest.ExitCode.USAGE_ERROR, f"exit {result.ret!r}, not 4:\n{tail}"
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.errlines
    text = "\n".join(result.outlines + result.errlines)
    assert "Traceback" not in text
    assert "INTERNALERROR" not in text
    return errors[0]


BAD_VALUES = [
    ("--rknn-platforms=rk9999", ["unknown platform rk9999", "rk3566", "rk3588"]),
    ("--rknn-platforms=", ["--rknn-platforms is empty", "e.g. rk3566,rk3588"]),
    ("--rknn-toolkits=9.9.9", ["'9.9.9'", "2.2.0, 2.3.0, 2.3.2, 2.5.0", "VERSION=PATH.whl"]),
    ("--rknn-max-memory=lots", ["--rknn-max-memory", "'lots'", "e.g. 8G"]),
    ("--rknn-max-memory=-1G", ["--rknn-max-memory", "e.g. 8G"]),
    ("--rknn-timeout=-3", ["--rknn-timeout '-3'", "seconds > 0", "e.g. 300"]),
    ("--rknn-timeout=soon", ["--rknn-timeout 'soon'", "seconds > 0"]),
    ("--rknn-quant=int4", ["int4", "fp16, int8, int8-mmse, int8-kl, hybrid"]),
    ("--rknn-calibration=0", ["--rknn-calibration '0'", "whole number >= 1"]),
    ("--rknn-calibration=lots", ["--rknn-calibration 'lots'", "whole number >= 1"]),
    ("--rknn-examples=many", ["--rknn-examples 'many'", "whole number >= 0"]),
    ("--rknn-seed=-1", ["--rknn-seed '-1'", "whole number >= 0"]),
    ("--rknn-profile=huge", ["--rknn-profile 'huge'", "ci, full"]),
    ("--rknn-forms=nope", ["unknown form nope", "--rknn-forms", "manual", "onnx-attention"]),
    ("--rknn-model=missing.onnx", ["--rknn-model missing.onnx", "no such file"]),
    ("--rknn-baseline=old.json", ["--rknn-baseline old.json", "no such file"]),
    ("--rknn-matrix=.", ["--rknn-matrix . is a folder", "give a file path"]),
    ("--rknn-html=/proc/none/m.html", ["--rknn-html /proc/none/m.html", "cannot create"]),
    ("--rknn-variant=sdpa-b1", ["--rknn-variant", "is not a variant id"]),
    ("--rknn-timeout=nan", ["--rknn-timeout 'nan'", "finite number of seconds > 0"]),
    ("--rknn-timeout=inf", ["--rknn-timeout 'inf'", "finite number of seconds > 0"]),
    ("--rknn-max-memory=100M", ["--rknn-max-memory '100M' is below 640M", "e.g. 8G"]),
    (
        "--rknn-html=rknn-matrix.json",
        ["--rknn-html rknn-matrix.json", "same file as --rknn-matrix"],
    ),
    ("--rknn-model=.", ["--rknn-model . is a folder", "an .onnx file in it"]),
]


@pytest.mark.parametrize(("option", "fix"), BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_value_is_a_one_line_usage_error(
    cells: pytest.Pytester, option: str, fix: list[str]
) -> None:
    result = cells.runpytest_inprocess(*BASE, option)
    line = usage_error(result)
    for words in fix:
        assert words in line


def test_html_over_the_baseline_is_refused(cells: pytest.Pytester, tmp_path) -> None:
    from pytest_rknn.results.matrix import Matrix

    Matrix(meta={}).write(cells.path / "old.json")
    line = usage_error(
        cells.runpytest_inprocess(*BASE, "--rknn-baseline=old.json", "--rknn-html=old.json")
    )
    assert "same file as --rknn-baseline" in line


def test_an_environments_folder_that_cannot_be_written_is_one_line(
    cells: pytest.Pytester,
) -> None:
    """Out of space (or any write error) before building environments: no INTERNALERROR."""
    line = usage_error(cells.runpytest_inprocess(*BASE, "--rknn-envs=/proc/rknn-envs"))
    assert "cannot write the environments folder /proc/rknn-envs" in line
    assert "point --rknn-envs" in line


def test_html_over_an_earlier_matrix_is_refused(cells: pytest.Pytester) -> None:
    from pytest_rknn.results.matrix import Matrix

    Matrix(meta={}).write(cells.path / "old.json")
    line = usage_error(cells.runpytest_inprocess(*BASE, "--rknn-html=old.json"))
    assert "--rknn-html old.json exists and is not an HTML page" in line
    assert (cells.path / "old.json").read_text().startswith("{")


def test_malformed_model_file_is_a_usage_error(cells: pytest.Pytester) -> None:
    (cells.path / "x.onnx").write_bytes(b"\x08\x07garbage\x00\xff not a protobuf")
    line = usage_error(cells.runpytest_inprocess(*BASE, "--rknn-model=x.onnx"))
    assert "x.onnx" in line
    assert "not a valid ONNX model" in line
    assert "export it again" in line


@pytest.mark.parametrize(
    ("content", "fix"),
    [
        ("{not json", ["not valid JSON", "regenerate"]),
        (json.dumps({"cells": []}), ["not a pytest-rknn matrix", "--rknn-matrix"]),
        (
            json.dumps({"schema": "pytest-rknn/matrix", "version": 1, "meta": {}, "cells": [{}]}),
            ["invalid at cells[0]", "regenerate"],
        ),
    ],
    ids=["not-json", "not-a-matrix", "bad-cell"],
)
def test_corrupt_baseline_is_a_usage_error(
    cells: pytest.Pytester, content: str, fix: list[str]
) -> None:
    (cells.path / "old.json").write_text(content)
    line = usage_error(cells.runpytest_inprocess(*BASE, "--rknn-baseline=old.json"))
    assert line.startswith("ERROR: --rknn-baseline:")
    for words in fix:
        assert words in line


def test_bad_ini_value_is_a_usage_error(cells: pytest.Pytester) -> None:
    cells.makeini("[pytest]\nrknn_timeout = soon\n")
    line = usage_error(cells.runpytest_inprocess(*BASE[:1], "--collect-only"))
    assert "'soon'" in line
    assert "e.g. 300" in line


def test_ini_key_is_honoured_and_the_flag_wins(cells: pytest.Pytester) -> None:
    cells.makeini("[pytest]\nrknn_platforms = rk3566\nrknn_examples = 3\n")
    args = ("--rknn-toolkits=2.3.2", "--rknn-forms=manual", "--rknn-no-curated")
    from_ini = collected(cells.runpytest_inprocess(*args, "--collect-only", "-q"))
    assert len(from_ini) == 3
    assert all(cell.endswith("-rk3566-2.3.2-fp16") for cell in from_ini)

    flagged = collected(
        cells.runpytest_inprocess(*args, "--rknn-platforms=rk3588", "--collect-only", "-q")
    )
    assert [c.replace("-rk3588-", "-rk3566-") for c in flagged] == from_ini


def test_cells_are_items_named_by_variant_and_target(cells: pytest.Pytester) -> None:
    result = cells.runpytest_inprocess(
        "--rknn-toolkits=2.3.2,2.5.0",
        "--rknn-platforms=rk3566,rk3588",
        "--rknn-forms=manual,onnx-attention",
        "--rknn-examples=3",
        "--rknn-no-curated",
        "--collect-only",
        "-q",
    )
    assert result.ret == pytest.ExitCode.OK
    specs = draw_variants(3, 0, "ci", forms=["manual", "onnx-attention"])
    expected = [
        f"{spec.id}-{platform}-{toolkit}-fp16"
        for toolkit in ("2.3.2", "2.5.0")
        for spec in specs
        for platform in ("rk3566", "rk3588")
    ]
    assert collected(result) == expected
    result.stdout.fnmatch_lines([f"{len(expected)} tests collected*"])
    for cell in expected:
        assert re.fullmatch(r"[A-Za-z0-9.\-]+", cell), cell


def test_k_selects_a_subset_of_cells(cells: pytest.Pytester) -> None:
    args = (*BASE[:1], "--rknn-platforms=rk3566,rk3588", *BASE[2:], "--collect-only", "-q")
    every = collected(cells.runpytest_inprocess(*args))
    chosen = collected(cells.runpytest_inprocess(*args, "-k", "rk3566"))
    assert len(every) == 4
    assert chosen == [c for c in every if "rk3566" in c]
    assert len(chosen) == 2
    one = every[0]
    assert collected(cells.runpytest_inprocess(*args, "-k", one)) == [one]


def test_same_seed_same_cells_in_separate_processes(cells: pytest.Pytester) -> None:
    args = (*BASE[:3], "--rknn-examples=6", "--rknn-no-curated", "--collect-only", "-q")
    first = collected(cells.runpytest_subprocess(*args, "--rknn-seed=0"))
    again = collected(cells.runpytest_subprocess(*args, "--rknn-seed=0"))
    other = collected(cells.runpytest_subprocess(*args, "--rknn-seed=1"))
    assert len(first) == 6
    assert again == first
    assert len(other) == 6
    assert set(other) != set(first)


def test_rknn_markers_are_registered(cells: pytest.Pytester) -> None:
    result = cells.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.rknn(*", "@pytest.mark.rknn_cell:*"])
