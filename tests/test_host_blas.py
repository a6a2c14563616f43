"""The host's BLAS threads: one while a cold run converts, the process's own before and after
(pytester suites on the FAKE toolkit of ``tests/fake_toolkit``; the host side is the real one)."""

from __future__ import annotations

import json

import pytest
from fake_support import SELECTION, fake_suite

RECORDER = """
import json

import threadpoolctl

seen = []


def blas_threads():
    return sorted({lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                   if lib["user_api"] == "blas"})


def pytest_configure(config):
    threadpoolctl.threadpool_limits(limits=3, user_api="blas")


def pytest_runtest_teardown(item):
    seen.append(blas_threads())


def pytest_unconfigure(config):
    with open("blas.json", "w") as fh:
        json.dump({"cells": seen, "after": blas_threads()}, fh)
"""


def run(suite: pytest.Pytester) -> dict[str, list]:
    suite.runpytest_subprocess(*SELECTION, "--rknn-matrix=m.json").assert_outcomes(passed=8)
    return json.loads((suite.path / "blas.json").read_text())


def test_a_cold_run_holds_the_hosts_blas_at_one_thread_and_gives_it_back(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = fake_suite(pytester, monkeypatch)
    suite.makeconftest(RECORDER)
    cold = run(suite)
    assert cold == {"cells": [[1]] * 8, "after": [3]}, "one thread from the first miss to the end"
    warm = run(suite)
    assert warm == {"cells": [[3]] * 8, "after": [3]}, "a warm run converts nothing: no limit"
