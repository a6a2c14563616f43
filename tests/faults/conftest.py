"""The fault tests' fixtures: the pytester suite they run, and the tally printed at the end.

The helpers (runs to kill, the invariants) are in ``faults_support.py`` beside this file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from fake_support import use_fake
from faults_support import CELLS, CONFTEST, TALLY


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the tally once a module's tests are done (the counts of this process so far)."""
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\nfault suite: {TALLY.line()}", flush=True)


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    use_fake(monkeypatch)
    marks = pytester.path / "marks"
    marks.mkdir()
    monkeypatch.setenv("FAKE_RKNN_MARKS", str(marks))
    pytester.makepyfile(test_rknn_cells=CELLS)
    pytester.makeconftest(CONFTEST)
    return pytester
