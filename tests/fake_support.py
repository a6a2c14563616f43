"""What the tests that run pytester suites on the FAKE toolkit share (``tests/fake_toolkit``).

:data:`SELECTION` is the run's cells: two toolkits, two platforms, two small drawn ``manual``
variants (8 cells), with the FAKE toolkit plugin loaded. :func:`use_fake` sets the environment a
suite's pytest processes need: the FAKE toolkit on ``PYTHONPATH``, every version in ``simulate``
mode (right answers, through onnxruntime), no per-version mode, nothing broken;
:func:`fake_suite` makes a pytester folder of one cell test (:data:`CELLS`) on top of that.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

FAKE_DIR = Path(__file__).with_name("fake_toolkit")
SELECTION = (
    "-p",
    "fake_toolkits",
    "--rknn-toolkits=2.3.2,2.5.0",
    "--rknn-platforms=rk3566,rk3588",
    "--rknn-forms=manual",
    "--rknn-examples=2",
    "--rknn-no-curated",
)


def use_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(FAKE_DIR), path) if p))
    monkeypatch.setenv("FAKE_RKNN_MODE", "simulate")
    names = ("MODES", "BROKEN", "DELAY", "GATE", "GATE_AT", "MARKS", "ANALYSIS", "ONCE")
    names += ("FAIL_SHAPE", "SERVE_UNLISTED")
    names += ("TORCH_PYTHON",)
    for name in (f"FAKE_RKNN_{n}" for n in names):
        monkeypatch.delenv(name, raising=False)


CELLS = """
def test_cell(rknn_cell):
    outcome = rknn_cell.check()
    assert outcome.status == "pass", outcome.message
"""


def fake_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester folder holding one cell test (like ``cases/``) run on the FAKE toolkit."""
    use_fake(monkeypatch)
    pytester.makepyfile(test_rknn_cells=CELLS)
    return pytester


def collected(result: pytest.RunResult) -> list[str]:
    """The cell ids a ``--collect-only -q`` run of a :func:`fake_suite` listed, in order."""
    found = []
    for line in result.outlines:
        match = re.fullmatch(r"test_rknn_cells\.py::test_cell\[(.+)\]", line.strip())
        if match:
            found.append(match.group(1))
    return found
