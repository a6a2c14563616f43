"""A pytester suite's conftest: appends the node id of every finished item to ``finished.txt``.

It runs after pytest-rknn's recorder has taken the report (trylast): a finished item (its call
report, or a setup that did not pass) is one whose cell the matrix must hold. The plugin itself
provisions the toolkit environments; nothing here asks it to.
"""

from pathlib import Path

import pytest

FINISHED = Path(__file__).with_name("finished.txt")


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and not report.passed):
        with FINISHED.open("a", encoding="utf-8") as log:
            log.write(report.nodeid + "\n")
