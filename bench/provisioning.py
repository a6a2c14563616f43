"""Benchmark: cold provisioning of every toolkit environment and the exporter's, then a warm check.

Builds into a fresh folder (given, or a new temporary one kept for inspection) with
``pytest-rknn envs`` and prints one table: installer, cold wall time, disk (hard links counted
once, as ``du`` does), the uv cache's share, the warm check's wall time, and the machine's
load before and after (the numbers mean little without it). Usage:
``python bench/provisioning.py [--root DIR] [--installer auto|uv|pip] [--toolkits LIST]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_rknn.envs.installers import INSTALLER_ENV, UV_CACHE, tree_bytes


def envs(root: Path, toolkits: str, installer: str) -> tuple[float, int]:
    """Run ``pytest-rknn envs`` into ``root``; its wall seconds and exit code."""
    env = {**os.environ, "PYTEST_RKNN_ENVS": str(root), INSTALLER_ENV: installer}
    cmd = [sys.executable, "-m", "pytest_rknn.cli", "envs", "--toolkits", toolkits]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if proc.returncode:
        print(proc.stderr.decode(errors="replace")[-2000:], file=sys.stderr)
    return seconds, proc.returncode


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="a folder that does not exist yet")
    parser.add_argument("--installer", default="auto", choices=("auto", "uv", "pip"))
    parser.add_argument("--toolkits", default="2.2.0,2.3.0,2.3.2,2.5.0")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="rknn-envs-bench-")) / "envs"
    if root.exists() and any(root.iterdir()):
        parser.error(f"{root} is not empty: give a fresh folder, the cold build needs one")
    before = load()
    cold, code = envs(root, args.toolkits, args.installer)
    after = load()
    warm, warm_code = envs(root, args.toolkits, args.installer)
    total = tree_bytes(root)
    cache = tree_bytes(root / UV_CACHE) if (root / UV_CACHE).is_dir() else 0
    rows = [
        ("folder", str(root)),
        ("installer", args.installer),
        ("cold build (s)", f"{cold:.1f}" + ("" if code == 0 else f" (exit {code})")),
        ("disk, hard links once (GB)", f"{total / 2**30:.2f}"),
        ("of which the uv cache (GB)", f"{cache / 2**30:.2f}"),
        ("warm check (s)", f"{warm:.2f}" + ("" if warm_code == 0 else f" (exit {warm_code})")),
        ("load average before", before),
        ("load average after", after),
        ("cpus", str(os.cpu_count())),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return code or warm_code


if __name__ == "__main__":
    raise SystemExit(main())
