"""Benchmark: 50 small attention conversions on one persistent worker vs a fresh process each.

Prints both rates (conversions per second, simulator inference included) and their ratio,
measured in one run. Usage: ``python bench/persistent_workers.py [--toolkit 2.3.2] [-n 50]``;
the toolkit environment is created on first use like the suite does.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from pytest_rknn.envs.smoke import tiny_attention
from pytest_rknn.toolkit.protocol import Job, Limits
from pytest_rknn.toolkit.supervisor import ToolkitWorker


def graphs(root: Path, n: int) -> list[Job]:
    jobs = []
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = (1, 1 + i % 4, 8 * (1 + i % 8), 16 * (1 + i % 4))
        model = tiny_attention(root / f"g{i}.onnx", shape)
        arrays = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
        jobs.append(Job.create(model, "rk3588" if i % 2 else "rk3566", root / f"j{i}", arrays))
    return jobs


def run(python: Path, version: str, jobs: list[Job], root: Path, persistent: bool) -> float:
    limits = Limits(timeout=120)
    start = time.perf_counter()
    worker = ToolkitWorker(python, version, root / "workers", limits)
    for job in jobs:
        if not persistent:
            worker.stop()
        result = worker.run(job)
        if not result.ok:
            raise SystemExit(f"conversion failed ({result.status}): {result.error}")
    worker.stop()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toolkit", default="2.3.2")
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--python", type=Path, help="a toolkit interpreter (default: its env)")
    args = parser.parse_args()
    python = args.python
    if python is None:
        from pytest_rknn.envs import get_envs
        from pytest_rknn.envs.recipes import parse_toolkits

        python = get_envs(parse_toolkits(args.toolkit))[0].python
    with tempfile.TemporaryDirectory(prefix="rknn-bench-") as tmp:
        root = Path(tmp)
        jobs = graphs(root, args.n)
        persistent = run(python, args.toolkit, jobs, root / "p", persistent=True)
        fresh = run(python, args.toolkit, jobs, root / "f", persistent=False)
    print(f"toolkit {args.toolkit}, {args.n} small attention graphs (convert + simulate)")
    print(f"persistent worker : {args.n / persistent:7.2f} conversions/s ({persistent:.1f} s)")
    print(f"fresh process each: {args.n / fresh:7.2f} conversions/s ({fresh:.1f} s)")
    print(f"ratio             : {fresh / persistent:7.1f}x faster with a persistent worker")


if __name__ == "__main__":
    main()
