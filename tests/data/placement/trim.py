"""Trim captured verbose build logs to what the placement parser reads.

``python tests/data/placement/trim.py SRC DST`` writes, for each ``SRC/*.log``, the toolkit's
version line, every Network Layer Information Table block (title to closing rule) and the
``Total ... Memory Size`` lines, unchanged (prefixes, timestamps and colour codes kept).
"""

from __future__ import annotations

import sys
from pathlib import Path


def trim(text: str) -> str:
    kept: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if "rknn-toolkit2 version" in line or "Memory Size:" in line:
            kept.append(line)
        elif "Network Layer Information Table" in line:
            kept.append(lines[i - 1])
            rules = 0
            while i < len(lines) and rules < 3:
                kept.append(lines[i])
                rules += set(lines[i].split("] ", 1)[-1].strip()) <= {"-"}
                i += 1
            continue
        i += 1
    return "\n".join(kept) + "\n"


if __name__ == "__main__":
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    for path in sorted(src.glob("*.log")):
        (dst / path.name).write_text(trim(path.read_text()))
