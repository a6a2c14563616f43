"""Error signatures: a short, stable key for why a cell failed.

This module owns the mapping from the captured toolkit log (stdout + stderr, C++ included) and
the worker's error text to a signature such as ``REGTASK bit width exceeds limit`` or
``IndexError in fusion rule fuse_xxx``, so that a thousand failures group into a handful of
causes. Known causes live in one table, ``PATTERNS``; anything else gets a deterministic key from
its first error line with numbers, addresses, paths and shapes normalised away.

How a signature is chosen (the first rule that yields a key wins):

1. ``pass`` has no signature (``None``).
2. ``tolerance-fail``: the first line of the error text (``tolerance.violation_signature`` makes
   one), else ``tolerance exceeded``. The log holds no numerical verdict.
3. A *decisive* ``PATTERNS`` entry, looked for in the error text, then in the log. When several
   entries match, the one listed first in the table wins: the table runs from the most specific
   cause (an environment fault, a platform that refuses the build, a named fusion rule) to the
   most generic (memory, a signal). So the seed report's ``failed to config argb mode layer``
   abort wins over the ``REGTASK`` lines printed before it.
4. ``timeout`` and ``oom`` cells are keyed by their status: what the log shows before the harness
   stopped the worker is not why it was stopped.
5. The first unexplained error line of the log (an ``E ...:`` line, a traceback's exception with
   its innermost toolkit frame) after every *survivable* match. Survivable entries are messages
   the toolkit also prints in runs that succeed (``REGTASK`` lines remain after the 2.1.0 fix of
   the seed report; ``channel is too large ... fallback to cpu`` appears in good builds), so an
   error after them explains the failure better.
6. The error text's first line, unless it only reports a return code (``build returned -1``,
   the worker's wording when the toolkit logged the cause instead of raising).
7. The first survivable entry, in table order.
8. The return-code error text, then ``Aborted``/``Segmentation fault`` lines of the log (a
   consequence, never a cause).
9. The status itself (``crash`` -> ``worker crashed``), or ``unknown failure``.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from dataclasses import dataclass

from pytest_rknn.results.status import Status
from pytest_rknn.verdict.logtext import (
    MAX_KEY_LENGTH,
    clean_log,
    error_lines,
    harmless,
    leaf,
    normalise,
    shorten,
    tracebacks,
)


def _is_optimiser(frame: tuple[str, str]) -> bool:
    return any(part in frame[0] for part in ("graph_optimizer", "optimize", "fuse"))


_RULE_NAME = re.compile(
    r"^(?:_p_)?(?:fuse|convert|remove|swap|expand|replace|squeeze|unsqueeze|reduce|merge|split"
    r"|bypass|insert|eliminate|move|sink|transform)_\w+$"
)


def _is_rule(name: str) -> bool:
    return bool(_RULE_NAME.match(name)) and not name.endswith("_ops")


_RULE_LINE = re.compile(r"^Rule:\s*(?P<rule>\w+)\s*$", re.M)
_DISABLE_RULES = re.compile(r"disable_rules=\[\s*'(?P<rule>\w+)'")
_FUSE_MATCH = re.compile(r"Show op fuse match nodes:")


def _find_fusion_rule(text: str) -> tuple[int, str] | None:
    """An exception raised while the graph optimiser applied a named fusion rule.

    The rule's name comes from the innermost traceback frame that is itself a rule
    (``fuse_xxx`` / ``_p_fuse_xxx``), else from the ``Rule: <name>`` block that the 2.x toolkits
    print before their traceback ("Show op fuse match nodes"), else from a
    ``disable_rules=['<name>']`` hint. Such a block without any traceback is keyed ``error``.
    """
    announced = _FUSE_MATCH.search(text)
    hint: str | None = None
    if announced:
        named = _RULE_LINE.search(text, announced.end())
        hint = named["rule"] if named else None
    if hint is None:
        suggested = _DISABLE_RULES.search(text)
        hint = suggested["rule"] if suggested else None
    found_any = False
    for tb in tracebacks(text):
        found_any = True
        rules = [leaf(f[1]) for f in tb.frames if _is_optimiser(f) and _is_rule(leaf(f[1]))]
        if rules:
            return tb.start, f"{tb.exc_type} in fusion rule {rules[-1]}"
        if hint and any(_is_optimiser(f) for f in tb.frames):
            return tb.start, f"{tb.exc_type} in fusion rule {hint}"
    if announced and hint and not found_any:
        return announced.start(), f"error in fusion rule {hint}"
    return None


def _find_optimiser_exception(text: str) -> tuple[int, str] | None:
    for tb in tracebacks(text):
        inside = [f for f in tb.frames if _is_optimiser(f)]
        if inside:
            return tb.start, f"{tb.exc_type} in graph optimiser {leaf(inside[-1][1])}"
    return None


_INIT_RUNTIME = re.compile(r"^E init_runtime: (?!Traceback)(?P<msg>\S.*)$", re.M)


def _find_init_runtime(text: str) -> tuple[int, str] | None:
    match = _INIT_RUNTIME.search(text)
    if match is None:
        return None
    return match.start(), f"init_runtime failed: {normalise(match['msg'], 50)}"


_SIGNAL_TEXT = re.compile(
    r"(?:killed by|died (?:with|of|from)|terminated by|exited (?:with|by|on)) "
    r"(?:signal (?P<num>\d+)|(?P<name>SIG[A-Z0-9]+))"
    r"|(?:return ?code|exit code|exit status)\s*[=:]?\s*-(?P<neg>\d+)",
    re.I,
)


def _find_signal(text: str) -> tuple[int, str] | None:
    """A worker ended by a signal (``died with SIGSEGV``, ``signal 9``, ``exit code -6``)."""
    match = _SIGNAL_TEXT.search(text)
    if match is None:
        return None
    if match["name"]:
        return match.start(), f"worker died with {match['name'].upper()}"
    number = int(match["num"] or match["neg"])
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return match.start(), f"worker died with {name}"


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """One known cause: how to find it in cleaned text and the key it produces.

    ``template`` is formatted with the regex's named groups; a group named ``op2`` fills
    ``{op}`` when ``op`` did not take part in the match (alternatives share one field).
    ``finder`` replaces the regex for causes spanning several lines.
    """

    name: str
    template: str
    regex: re.Pattern[str] | None = None
    finder: Callable[[str], tuple[int, str] | None] | None = None
    survivable: bool = False

    def search(self, text: str) -> tuple[int, str] | None:
        """``(offset, key)`` of the first occurrence in ``text``, or ``None``."""
        if self.finder is not None:
            return self.finder(text)
        if self.regex is None:
            raise ValueError(f"pattern {self.name!r} has neither a regex nor a finder")
        match = self.regex.search(text)
        if match is None:
            return None
        fields: dict[str, str] = {}
        for group, value in match.groupdict().items():
            if value is not None:
                fields.setdefault(group.rstrip("0123456789"), value.strip().strip("'\""))
        return match.start(), self.template.format(**fields)


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.M)


PATTERNS: tuple[Pattern, ...] = (
    Pattern(
        "onnx-mapping",
        "onnx.mapping missing (onnx too new)",
        _rx(r"module 'onnx' has no attribute 'mapping'|No module named 'onnx\.mapping'"),
    ),
    Pattern(
        "missing-module",
        "python module {module} missing",
        _rx(r"(?:ModuleNotFoundError|ImportError): No module named '(?P<module>[\w.]+)'"),
    ),
    Pattern(
        "platform-needs-quant",
        "platform {platform} requires quantization",
        _rx(r"target_platform\((?P<platform>\w+)\) not support do_quantization ?= ?False"),
    ),
    Pattern(
        "onnx-opset",
        "onnx opset {opset} unsupported (toolkit needs <= {max})",
        _rx(r"Unsupport onnx opset (?P<opset>\d+), need <= ?(?P<max>\d+)"),
    ),
    Pattern("fusion-rule", "{exc} in fusion rule {rule}", finder=_find_fusion_rule),
    Pattern(
        "dynamic-graph",
        "{op} input not constant (dynamic graph)",
        _rx(r"The input \d+ of (?P<op>\w+)\(.*?\) need to be constant"),
    ),
    Pattern(
        "unsupported-op",
        "unsupported op {op}",
        _rx(
            r"Meet unsupported operator: (?P<op>\w+)"
            r"|unsupport (?:cpu )?(?P<op2>\w+) op\b"
            r"|Could not find an implementation for (?P<op3>\w+)\("
            r"|[Oo]p type '?(?P<op4>\w+)'? (?:is )?not support"
        ),
    ),
    Pattern(
        "unknown-domain",
        "unsupported op domain {domain}",
        _rx(r"No opset import for domain '(?P<domain>[^']+)'"),
    ),
    Pattern(
        "optimiser-exception", "{exc} in graph optimiser {func}", finder=_find_optimiser_exception
    ),
    Pattern(
        "infer-shape",
        "inference input shape wrong (expects {layout})",
        _rx(r"The input\(ndarray\) shape .*? is wrong, expect '(?P<layout>\w+)'"),
    ),
    Pattern(
        "infer-set-inputs",
        "inference set inputs failed ({code})",
        _rx(r"Set inputs failed\. error code: (?P<code>\w+)"),
    ),
    Pattern(
        "init-runtime-code",
        "init_runtime failed ({code})",
        _rx(r"RKNN init failed\. error code: (?P<code>\w+)"),
    ),
    Pattern(
        "init-runtime-device",
        "init_runtime failed (no device)",
        _rx(r"Get board target failed|no devices/emulators found"),
    ),
    Pattern("init-runtime", "init_runtime failed", finder=_find_init_runtime),
    Pattern("malloc-size", "invalid tensor malloc size", _rx(r"invalid tensor malloc size")),
    Pattern("argb", "failed to config argb mode layer", _rx(r"failed to config argb mode layer")),
    Pattern(
        "cpp-exception",
        "C++ {exc}",
        _rx(r"terminate called after throwing an instance of '(?P<exc>[\w:]+)'"),
    ),
    Pattern(
        "memory",
        "out of memory ({what})",
        _rx(r"(?P<what>MemoryError|std::bad_alloc|bad allocation|Cannot allocate memory)"),
    ),
    Pattern("signal", "worker died with {sig}", finder=_find_signal),
    Pattern(
        "regtask",
        "REGTASK bit width exceeds limit",
        _rx(r"REGTASK: The bit width of field value exceeds the limit"),
        survivable=True,
    ),
    Pattern(
        "channel-too-large",
        "channel too large, fallback to cpu",
        _rx(r"channel is too large, may produce thousands of regtask"),
        survivable=True,
    ),
    Pattern(
        "dataconvert",
        "dataconvert type unsupported",
        _rx(r"dataconvert type -?\d+ is unsupport"),
        survivable=True,
    ),
    Pattern(
        "no-lowering",
        "no NPU lowering for {op} (cpu fallback)",
        _rx(r"No lowering found for: .*?node type = (?P<op>\w+)"),
        survivable=True,
    ),
)

_RETURN_CODE_ONLY = re.compile(
    r"^[\w.]+(?:\(\))? (?:returned|failed with|ret(?:urn)? code)\W*\S{0,12}$"
)


def _status_key(status: Status | None) -> str:
    key = status.info.default_signature if status is not None else None
    return key or "unknown failure"


def classify(log: str, error: str | None = None, status: Status | str | None = None) -> str | None:
    """The signature of a finished cell: ``None`` when it passed, else a short stable key."""
    if isinstance(status, str):
        status = Status.parse(status)
    if status is Status.PASS:
        return None
    err = clean_log(error or "")
    text = clean_log(log or "")

    if status is Status.TOLERANCE_FAIL:
        first = next((line.strip() for line in err.split("\n") if line.strip()), "")
        return shorten(first, MAX_KEY_LENGTH) if first else "tolerance exceeded"

    stopped_by_harness = status in (Status.TIMEOUT, Status.OOM)
    for pattern in PATTERNS:
        if pattern.survivable or (stopped_by_harness and pattern.name == "signal"):
            continue
        for source in (err, text):
            hit = pattern.search(source)
            if hit is not None:
                return hit[1]
    if stopped_by_harness:
        return _status_key(status)

    survivable = [p for p in PATTERNS if p.survivable]
    found = [hit for p in survivable if (hit := p.search(text)) is not None]
    last = max((offset for offset, _ in found), default=-1)
    for start, line in error_lines(text):
        if start > last and not harmless(line) and not any(p.search(line) for p in survivable):
            return normalise(line)

    first = next((line for line in err.split("\n") if line.strip()), None)
    first_error = next(error_lines(err, aborts=True), (0, first))[1]
    if first_error is not None and not _RETURN_CODE_ONLY.match(first_error.strip()):
        return normalise(first_error)
    if found:
        return found[0][1]
    if first_error is not None:
        return normalise(first_error)
    for _, line in error_lines(text, aborts=True):
        return normalise(line)
    return _status_key(status)


_THREAD_EXCEPTION = re.compile(r"^Exception (?:in|ignored in) thread (?P<thread>[^:\n]*)", re.M)


def silent_failure(log: str) -> str | None:
    """The warning signature of a job whose toolkit calls all returned success while its log
    shows an exception (a traceback, or an exception in one of the toolkit's threads); ``None``
    for a clean log.

    ``E `` lines are no such sign: good builds print them (every rk3566 build of 2.3.2 and 2.5.0
    logs ``E RKNN: Unkown op target: 0``, 2.3.0 on rk3588 ``transpose: infos length !=
    step_size length``, large graphs ``channel is too large ... fallback to cpu``, all with
    outputs that match the reference).
    """
    text = clean_log(log or "")
    found = next(tracebacks(text), None)
    if found is not None:
        where = found.innermost()
        location = f" in {where}" if where else ""
        return normalise(f"silent: {found.exc_type}{location}: {found.message}".rstrip(": "))
    thread = _THREAD_EXCEPTION.search(text)
    if thread is not None:
        return normalise(f"silent: exception in thread {thread['thread'].strip()}")
    return None
