"""A pytester suite's conftest: provision the toolkit environments (like cases/conftest.py).

It also appends the node id of every item that finished (its call report, or a setup that did
not pass) to ``finished.txt``, after pytest-rknn's recorder has taken the report (trylast).
"""

from pathlib import Path

import pytest

from pytest_rknn.plugin import provision

FINISHED = Path(__file__).with_name("finished.txt")


def pytest_sessionstart(session):
    provision(session.config)


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and not report.passed):
        with FINISHED.open("a", encoding="utf-8") as log:
            log.write(report.nodeid + "\n")
