"""How fast the default matrix runs from this checkout: one table of ratios, one run each.

``python bench/matrix_speed.py [--envs DIR] [--keep DIR] [--skip-xdist] [--pairs N]`` runs,
with the interpreter it is started with and from the checkout it lies in:

1. the default matrix cold (an empty pytest cache), serially: the whole command's wall time
   against the summed in-worker toolkit time the matrix records (``meta.toolkit_s``);
2. the same command again, warm (the cache of step 1), three times: the whole command's median
   wall time (one second or two: a busy moment of the machine would move a single one);
3. the default matrix cold with ``-n 2`` (pytest-xdist): its wall time against step 1's;
4. with ``--pairs N`` (N > 1), N - 1 more pairs of cold runs, serial then ``-n 2``, each with
   empty caches: the ``-n 2`` speed-up of each pair and their median. The machine's speed
   drifts by 10 % and more from minute to minute here, so one pair's ratio is a sample; the
   table's other rows are those of the first pair.

It prints the figures, the ratios (overhead = cold wall ÷ toolkit time, warm speed-up = cold
wall ÷ warm wall, ``-n 2`` speed-up = cold serial wall ÷ cold ``-n 2`` wall), how many cores
each cold run kept busy (the CPU seconds of the command and all it started ÷ its wall time; the
machine's cores ÷ the serial run's is what ``-n 2`` gains when every CPU second of the serial
run is needed, more when some of it is threads spinning on the idle core), the ``-n 2`` run's summed
toolkit time (conversions two at a time are slower than one at a time: two xdist workers gain
at most twice the serial toolkit time ÷ this), the peak RSS per
toolkit worker of step 1 and the machine's load average (1 min) before and after each step.
Absolute times on a shared machine are noisy: compare ratios from one run. The toolkit
environments are the default ones unless ``--envs`` (``PYTEST_RKNN_ENVS``) names others. The
runs write Python's bytecode caches (``PYTHONDONTWRITEBYTECODE`` is dropped, as on a user's
machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
WARM_RUNS = 3
COMMAND = ["-m", "pytest", "cases/", "-p", "no:randomly", "-q", "--no-header", "-rN"]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def run(cache: Path, matrix: Path, extra: list[str], env: dict[str, str]) -> dict[str, object]:
    """One whole ``pytest cases/`` command: its wall time, the loads and the matrix."""
    before = _load()
    args = [sys.executable, *COMMAND, "-o", f"cache_dir={cache}", f"--rknn-matrix={matrix}"]
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        args + extra, cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    meta: dict[str, object] = {}
    cells: list[dict[str, object]] = []
    if matrix.exists():
        data = json.loads(matrix.read_text())
        meta, cells = data["meta"], data["cells"]
    return {
        "wall": wall,
        "cpu": cpu,
        "load": (before, _load()),
        "summary": last,
        "toolkit_s": float(meta.get("toolkit_s") or 0.0),
        "cells": cells,
        "exit": proc.returncode,
    }


def peak_rss(cells: list[dict[str, object]]) -> dict[str, float]:
    """The largest peak RSS (MB) a cell recorded, per toolkit version."""
    peaks: dict[str, float] = {}
    for cell in cells:
        value = cell.get("peak_rss_mb")
        if isinstance(value, (int, float)):
            version = str(cell["toolkit"])
            peaks[version] = max(peaks.get(version, 0.0), float(value))
    return dict(sorted(peaks.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", help="the toolkit environments' folder (PYTEST_RKNN_ENVS)")
    parser.add_argument("--keep", type=Path, help="a folder to keep the caches and matrices in")
    parser.add_argument("--skip-xdist", action="store_true", help="leave out the -n 2 run")
    parser.add_argument(
        "--pairs", type=int, default=1, help="cold serial and -n 2 pairs to run (default 1)"
    )
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.envs:
        env["PYTEST_RKNN_ENVS"] = args.envs
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        # A user's Python writes its bytecode caches (pytest's rewritten plugin modules too):
        # without them every run compiles pytest-rknn's modules again.
        print("PYTHONDONTWRITEBYTECODE is set here: the runs go without it, as a user's would")
    work = args.keep or Path(tempfile.mkdtemp(prefix="rknn-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(f"checkout {ROOT} at {head or '?'}; {os.cpu_count()} cpus; work in {work}", flush=True)

    cold = run(work / "cache-serial", work / "cold.json", [], env)
    print(f"cold serial: {cold['wall']:.1f} s ({cold['summary']})", flush=True)
    warms = [run(work / "cache-serial", work / "warm.json", [], env) for _ in range(WARM_RUNS)]
    warm = sorted(warms, key=lambda step: step["wall"])[WARM_RUNS // 2]
    walls = ", ".join(f"{step['wall']:.2f}" for step in warms)
    print(f"warm serial: median {warm['wall']:.2f} s of {walls} ({warm['summary']})", flush=True)
    xdist = None
    if not args.skip_xdist:
        xdist = run(work / "cache-xdist", work / "xdist.json", ["-n", "2"], env)
        print(f"cold -n 2: {xdist['wall']:.1f} s ({xdist['summary']})", flush=True)

    def load(step: dict[str, object]) -> str:
        a, b = step["load"]  # type: ignore[misc]
        return f"{a} -> {b}"

    rows = [
        ("cold serial wall (s)", f"{cold['wall']:.1f}", load(cold)),
        ("summed toolkit time (s)", f"{cold['toolkit_s']:.1f}", ""),
        ("overhead: cold wall / toolkit time", f"{cold['wall'] / cold['toolkit_s']:.2f}", ""),
        ("warm serial wall, whole command, median of 3 (s)", f"{warm['wall']:.2f}", load(warm)),
        ("warm speed-up: cold wall / warm wall", f"{cold['wall'] / warm['wall']:.1f}x", ""),
    ]
    busy = cold["cpu"] / cold["wall"]
    rows.append(("cold serial: cores busy (CPU s / wall s)", f"{busy:.2f}", ""))
    if xdist is not None:
        rows += [
            ("cold -n 2 wall (s)", f"{xdist['wall']:.1f}", load(xdist)),
            ("cold -n 2: cores busy (CPU s / wall s)", f"{xdist['cpu'] / xdist['wall']:.2f}", ""),
            ("-n 2 speed-up: serial / -n 2", f"{cold['wall'] / xdist['wall']:.2f}x", ""),
            ("cold -n 2: summed toolkit time (s)", f"{xdist['toolkit_s']:.1f}", ""),
            (
                "-n 2 ceiling from the toolkit alone: 2 x serial / -n 2 toolkit time",
                f"{2 * cold['toolkit_s'] / xdist['toolkit_s']:.2f}x" if xdist["toolkit_s"] else "-",
                "",
            ),
            (
                f"-n 2 if each CPU s of the serial run were needed: {os.cpu_count()} / cores busy",
                f"{min(2.0, (os.cpu_count() or 1) / busy):.2f}x",
                "",
            ),
        ]
    if xdist is not None and args.pairs > 1:
        ratios = [cold["wall"] / xdist["wall"]]
        for i in range(2, args.pairs + 1):
            serial = run(work / f"cache-serial{i}", work / f"cold{i}.json", [], env)
            parallel = run(work / f"cache-xdist{i}", work / f"xdist{i}.json", ["-n", "2"], env)
            ratios.append(serial["wall"] / parallel["wall"])
            print(
                f"pair {i}: cold serial {serial['wall']:.1f} s, cold -n 2 {parallel['wall']:.1f} s"
                f" ({ratios[-1]:.2f}x)",
                flush=True,
            )
        listed = ", ".join(f"{r:.2f}" for r in ratios)
        rows.append(
            (f"-n 2 speed-up, median of {len(ratios)} pairs", f"{median(ratios):.2f}x", listed)
        )
    for version, mb in peak_rss(cold["cells"]).items():  # type: ignore[arg-type]
        rows.append((f"peak RSS per job, toolkit {version} (MB)", f"{mb:.0f}", ""))
    width = max(len(r[0]) for r in rows)
    print(f"\n| {'measure':<{width}} | value | load (1 min) before -> after; the pairs |")
    print(f"|{'-' * (width + 2)}|-------|-------------------------------------------|")
    for name, value, loads in rows:
        print(f"| {name:<{width}} | {value} | {loads} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
