"""Whether a job's crash is the toolkit's answer: the same death, in the same call, twice.

A job whose process dies of a fatal signal of its own (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL)
inside a toolkit call is run once more, as a new job (a fresh folder, a fresh process). When the
second run dies the same way (the same signal, in the same call, with the same signature in its
log), the death is what the toolkit does with these inputs: that call failed as surely as if it
had returned an error, so the answer is a failed call (``convert-fail`` or ``runtime-fail``, which
the cache keeps), its reason naming both jobs. Every other ending stays a ``crash``, an accident of
one run that is never cached: a death between calls, a kill (by this host or anyone), a broken
protocol, or a second run that ended otherwise (its ending is named in the reason).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from pytest_rknn.results.status import Status
from pytest_rknn.toolkit.protocol import JobResult
from pytest_rknn.verdict.signatures import classify

FATAL_SIGNALS: tuple[str, ...] = ("SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL")
_DEATHS = frozenset(f"worker died with {name}" for name in FATAL_SIGNALS)


def reproducible(result: JobResult) -> bool:
    """Whether ``result`` is a death that a second run may show to be the toolkit's answer."""
    return result.fault is Status.CRASH and result.died_in is not None and result.error in _DEATHS


def _signature(result: JobResult) -> str | None:
    return classify(result.log, result.error, Status.CRASH)


def _walls(first: JobResult, second: JobResult) -> float:
    return round(first.timings.get("wall", 0.0) + second.timings.get("wall", 0.0), 6)


def _ending(result: JobResult) -> str:
    if result.ok:
        return "converted and ran"
    status = result.status
    assert status is not None
    where = f" in {result.died_in}" if result.died_in else ""
    return f"ended in {status.value} ({result.error}{where})"


def confirmed(first: JobResult, again: Callable[[], JobResult]) -> JobResult:
    """``first``, or when it is a :func:`reproducible` death, the answer that ``again()`` (the
    same job, new) shows it to be: a failed call when it died the same way, else ``first``
    (still a crash) with the second run's ending in its error."""
    if not reproducible(first):
        return first
    second = again()
    same = (
        reproducible(second)
        and (second.error, second.died_in) == (first.error, first.died_in)
        and _signature(second) == _signature(first)
    )
    if not same:
        return dataclasses.replace(
            first,
            error=(
                f"{first.error} in {first.died_in}; the same job run again in a fresh process "
                f"{_ending(second)}: not reproducible"
            ),
            timings={**first.timings, "wall": _walls(first, second)},
        )
    assert second.error is not None
    died = second.error.removeprefix("worker ")
    return dataclasses.replace(
        second,
        fault=None,
        failed_phase=second.died_in,
        error=(
            f"the toolkit {died} in {second.died_in}, the same way in two fresh processes "
            f"(jobs {first.id} and {second.id})"
        ),
        timings={**second.timings, "wall": _walls(first, second)},
    )
