"""Reading rknn-toolkit2 logs: cleaning, tracebacks, error lines, normalising, excerpts.

The toolkit writes colour codes, ``\\r``-redrawn progress bars, ``E <phase>:`` lines, C++
``E RKNN:`` lines and Python tracebacks (its own ``E build: Traceback`` form included) to one
stream. This module turns that stream into the lines a person would read and the facts
``signatures`` keys on. It knows nothing about particular causes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

MAX_KEY_LENGTH = 80

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Every terminal escape: CSI (colours, cursor), OSC (titles, links) to BEL or ST, two-byte
# escapes, and the C0/C1 controls a terminal acts on (all but tab and newline).
_TERMINAL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?"
    r"|[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]"
)


def plain(text: str) -> str:
    """``text`` without terminal escapes or control characters (``\r`` becomes a newline):
    what a reason or a log excerpt may hold, in a matrix, a terminal or a page."""
    return _TERMINAL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


_PROGRESS_TAIL = re.compile(r"(\[[^\]\n\r]*(?:it/s|s/it)\])(?=\S)")
_PROGRESS_LINE = re.compile(r"\d+%\|.*\|\s*\d+/\d+\s*\[|^\S[^|]*:\s*\d+%\|")
_LEVEL_PREFIX = re.compile(r"^(?:[EWIDF] )?(?:RKNN: )?(?:\[\d\d:\d\d:\d\d(?:\.\d+)?\]\s*)?")

# ---------------------------------------------------------------------------------------------
# Tracebacks
# ---------------------------------------------------------------------------------------------

_TB_HEADER = re.compile(r"Traceback \(most recent call last\):")
_TB_FRAME = re.compile(r'^\s*(?:E(?: \w+:)?\s+)?File "(?P<file>[^"]+)", line \d+, in (?P<func>\S+)')
_E_PREFIX = re.compile(r"^E(?: \w+:)? ")
_EXC_HEAD = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s*(?P<msg>.*))?$")
_STANDALONE_EXC = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Z]\w*(?:Error|Exception): \S")


@dataclass(frozen=True)
class Traceback:
    """A Python traceback found in a log: where it starts and ends, its frames, its exception."""

    start: int
    end: int
    frames: tuple[tuple[str, str], ...]
    exc_type: str
    message: str

    def innermost(self) -> str:
        """``module.function`` of the innermost frame that is not the toolkit's logger."""
        frames = [f for f in self.frames if "rknn_log" not in f[0]]
        if not frames:
            return ""
        file, func = frames[-1]
        return f"{file.rsplit('/', 1)[-1].removesuffix('.py')}.{leaf(func)}"


def tracebacks(text: str) -> Iterator[Traceback]:
    """Each Python traceback in ``text``, including the ``E build:``-prefixed toolkit form."""
    for header in _TB_HEADER.finditer(text):
        frames: list[tuple[str, str]] = []
        pos = text.find("\n", header.end())
        while pos != -1:
            line_end = text.find("\n", pos + 1)
            end = line_end if line_end != -1 else len(text)
            line = text[pos + 1 : end]
            frame = _TB_FRAME.match(line)
            if frame:
                frames.append((frame["file"], frame["func"]))
            elif frames and line.strip() and not line[:1].isspace():
                head = _EXC_HEAD.match(_E_PREFIX.sub("", line.strip()))
                if head is not None:
                    exc_type = head["type"].rsplit(".", 1)[-1]
                    yield Traceback(header.start(), end, tuple(frames), exc_type, head["msg"] or "")
                break
            elif not frames and line.strip() and not line[:1].isspace():
                break
            pos = line_end


def leaf(func: str) -> str:
    """The function's own name from a dotted Cython frame name (``a.b.C.fuse_x`` -> ``fuse_x``)."""
    return func.rsplit(".", 1)[-1]


# ---------------------------------------------------------------------------------------------
# Cleaning and normalising
# ---------------------------------------------------------------------------------------------


def clean_log(text: str) -> str:
    """The log as a person reads it: colour codes stripped, progress bars dropped.

    tqdm bars are redrawn in place with ``\\r`` and sometimes have the next log line glued to
    their end (``... 240.65it/s]E build: ...``); both are undone here.
    """
    text = _ANSI.sub("", text.replace("\r\n", "\n"))
    text = _PROGRESS_TAIL.sub(r"\1\n", text)
    lines: list[str] = []
    for raw in text.split("\n"):
        pieces = [piece for piece in raw.split("\r") if piece.strip()]
        line = pieces[-1] if pieces else ""
        if _PROGRESS_LINE.search(line) or (not line.strip() and lines and not lines[-1]):
            continue
        lines.append(line.rstrip())
    return "\n".join(lines)


_NORMALISERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\[\d\d:\d\d:\d\d(?:\.\d+)?\]\s*"), ""),
    (re.compile(r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S*"), "<time>"),
    (re.compile(r"0x[0-9a-fA-F]+"), "<hex>"),
    (re.compile(r"(?:[A-Za-z]:)?(?:[\w.~-]*/)+[\w.-]+"), "<path>"),
    (re.compile(r"[(\[]\s*-?\d+(?:\.\d+)?(?:\s*,\s*-?\d+(?:\.\d+)?)*\s*,?\s*[)\]]"), "<shape>"),
    (re.compile(r"'[^'\n]*\d[^'\n]*'"), "'<name>'"),
    (re.compile(r"(?<![\w<])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w>])"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def normalise(line: str, limit: int = MAX_KEY_LENGTH) -> str:
    """A message with run-specific details (numbers, addresses, paths, shapes) replaced."""
    text = _LEVEL_PREFIX.sub("", line.strip(), count=1)
    for regex, replacement in _NORMALISERS:
        text = regex.sub(replacement, text)
    return shorten(text.strip(), limit)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, ending in ``...``
    (mid-word only when a single word fills two thirds of it)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 2]
    space = cut.rfind(" ")
    if space > limit // 3:
        cut = cut[:space]
    return cut[: limit - 3].rstrip(" ,;:") + "..."


_NOISE = re.compile(
    r"^E (?:rknn-toolkit2 version:|\w+: Catch exception when|Please feedback|You can also check"
    r"|Current device id is|Devices connected)"
    r"|^E \w+: =+ WARN"
)
_ERROR_LINE = re.compile(r"^E \S|^Fatal:")
# Error lines that builds with correct outputs print (FINDINGS.md): never the first one shown.
_HARMLESS = re.compile(
    r"Unkown op target: \d+|transpose: infos length != step_size length"
    r"|channel is too large.*fallback to cpu"
)
# Warnings of the toolkit about the precision of what it built: shown on an accuracy failure.
_PRECISION = re.compile(
    r"^W .*(?:has been corrected to -?10000|may cause precision|precision (?:issue|loss))", re.I
)
_ABORT_LINE = re.compile(r"^(?:Aborted|Segmentation fault)\b")


def error_lines(text: str, aborts: bool = False) -> Iterator[tuple[int, str]]:
    """``(offset, message)`` of each error line; a traceback becomes its exception."""
    found = {tb.start: tb for tb in tracebacks(text)}
    skip_until = -1
    offset = 0
    for line in text.split("\n"):
        start, offset = offset, offset + len(line) + 1
        if start < skip_until:
            continue
        header = _TB_HEADER.search(line)
        tb = found.get(start + header.start()) if header else None
        if tb is not None:
            where = tb.innermost()
            location = f" in {where}" if where else ""
            yield start, f"{tb.exc_type}{location}: {tb.message}".rstrip(": ")
            skip_until = tb.end
        elif _NOISE.match(line):
            continue
        elif (
            _ERROR_LINE.match(line)
            or _STANDALONE_EXC.match(line)
            or (aborts and _ABORT_LINE.match(line))
        ):
            yield start, line


def harmless(line: str) -> bool:
    """Whether an error line is one that good builds print too."""
    return _HARMLESS.search(line) is not None


def first_error(text: str, aborts: bool = True) -> tuple[int, str] | None:
    """The error line to show first: the first one that is not known to be harmless (a
    harmless one only when there is nothing else)."""
    found = list(error_lines(text, aborts=aborts))
    return next((e for e in found if not harmless(e[1])), found[0] if found else None)


def precision_warnings(text: str) -> list[str]:
    """The toolkit's warnings about precision (a constant corrected to -10000, a fusion that
    "may cause precision issue"), each once, in order."""
    found = (line.strip() for line in text.split("\n") if _PRECISION.match(line.strip()))
    return list(dict.fromkeys(found))


_HARNESS_FRAME = re.compile(r'^\s*File "[^"]*[/\\]pytest_rknn[/\\][^"]*", line \d+, in ')


def without_harness_frames(text: str) -> str:
    """The text with the traceback frames of pytest-rknn's own code (and their source lines)
    removed: what is left is the toolkit's."""
    lines = text.split("\n")
    kept: list[str] = []
    skipping = False
    for line in lines:
        if _HARNESS_FRAME.match(line):
            skipping = True
            indent = len(line) - len(line.lstrip())
            continue
        if skipping and line.strip() and len(line) - len(line.lstrip()) > indent:
            continue
        skipping = False
        kept.append(line)
    return "\n".join(kept)


def log_excerpt(log: str, limit: int = 4000, context: int = 5) -> str:
    """The part of a log worth keeping in a matrix cell.

    Cleaned (see ``clean_log``), starting ``context`` lines before the first error line (known
    harmless ones aside), cut to ``limit`` characters by keeping the head and the tail. The
    toolkit's precision warnings from before that point come first.
    """
    text = clean_log(log or "")
    first = first_error(text)
    if first is not None:
        lines = text.split("\n")
        index = text.count("\n", 0, first[0])
        kept = "\n".join(lines[max(0, index - context) :])
        earlier = [w for w in precision_warnings(text) if w not in kept]
        text = "\n".join([*earlier, kept])
    body = text.strip("\n")
    if len(body) <= limit:
        return body
    marker = "\n[... cut ...]\n"
    head = (limit - len(marker)) // 2
    return body[:head] + marker + body[len(body) - (limit - len(marker) - head) :]
