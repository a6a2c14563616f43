"""When a job's death is the toolkit's answer: ``pipeline/reproduce.py`` on results made here.

No worker runs: each test hands :func:`confirmed` a first result and the second one its rerun
would bring, and checks what the cell gets (and whether the rerun was asked for at all).
"""

from __future__ import annotations

import pytest

from pytest_rknn.pipeline.reproduce import FATAL_SIGNALS, confirmed, reproducible
from pytest_rknn.results.status import Status
from pytest_rknn.toolkit.protocol import JobResult

MALLOC = "E RKNN: [12:00:00.000] invalid tensor malloc size, tensor name: , target: CPU, size: 0\n"


def died(job: str, signal: str = "SIGSEGV", call: str | None = "build", log: str = MALLOC):
    return JobResult(
        id=job,
        fault=Status.CRASH,
        error=f"worker died with {signal}",
        died_in=call,
        log=log,
        timings={"wall": 0.25},
    )


class Rerun:
    """The second run's result, handed over once, and whether it was asked for."""

    def __init__(self, result: JobResult) -> None:
        self.result, self.calls = result, 0

    def __call__(self) -> JobResult:
        self.calls += 1
        return self.result


@pytest.mark.parametrize("signal", FATAL_SIGNALS)
def test_the_same_death_twice_is_the_failed_call(signal: str) -> None:
    rerun = Rerun(died("second", signal))
    result = confirmed(died("first", signal), rerun)
    assert rerun.calls == 1
    assert result.fault is None and result.failed_phase == "build"
    assert result.status is Status.CONVERT_FAIL and result.id == "second"
    assert result.error == (
        f"the toolkit died with {signal} in build, the same way in two fresh processes "
        "(jobs first and second)"
    )
    assert result.log == MALLOC and result.timings["wall"] == 0.5


def test_a_death_in_inference_twice_is_a_runtime_fail() -> None:
    result = confirmed(died("a", call="inference"), Rerun(died("b", call="inference")))
    assert result.status is Status.RUNTIME_FAIL


@pytest.mark.parametrize(
    ("second", "ending"),
    [
        (died("b", "SIGABRT"), "ended in crash (worker died with SIGABRT in build)"),
        (died("b", call="export_rknn"), "ended in crash (worker died with SIGSEGV in export_rknn)"),
        (died("b", log="E RKNN: Segmentation fault in fold_constant\n"), None),
        (JobResult(id="b", timings={"wall": 0.25}), "converted and ran"),
        (
            JobResult(id="b", failed_phase="build", error="build returned -1"),
            "ended in convert-fail (build returned -1)",
        ),
        (
            JobResult(id="b", fault=Status.TIMEOUT, error="no result within 5 s; worker killed"),
            "ended in timeout (no result within 5 s; worker killed)",
        ),
    ],
)
def test_any_other_second_ending_leaves_a_crash(second: JobResult, ending: str | None) -> None:
    result = confirmed(died("a"), Rerun(second))
    assert result.status is Status.CRASH and result.id == "a"
    assert result.error.startswith("worker died with SIGSEGV in build; the same job run again")
    assert result.error.endswith(": not reproducible")
    if ending is not None:
        assert ending in result.error


@pytest.mark.parametrize(
    "first",
    [
        died("a", "SIGKILL"),
        died("a", call=None),
        JobResult(id="a", fault=Status.CRASH, error="protocol violation: a line that is not JSON"),
        JobResult(id="a", fault=Status.OOM, error="passed 8G", died_in=None),
        JobResult(id="a", failed_phase="build", error="build returned -1"),
        JobResult(id="a"),
    ],
)
def test_only_a_death_of_its_own_in_a_call_is_run_again(first: JobResult) -> None:
    rerun = Rerun(died("b"))
    assert confirmed(first, rerun) is first and not reproducible(first)
    assert rerun.calls == 0
