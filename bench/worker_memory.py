"""Benchmark: the memory a toolkit worker needs to start, per rknn-toolkit2 version.

Starts one worker per version (no job), and prints the peak RSS of its process tree while it
imported the toolkit and the RSS it rests at once ready. ``MIN_MEMORY`` in
``pytest_rknn/toolkit/protocol.py`` (the smallest ``--rknn-max-memory`` accepted) must stay above
the largest peak. Usage: ``python bench/worker_memory.py [--toolkits 2.2.0,2.3.0,2.3.2,2.5.0]``;
the environments are created on first use like the suite does.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import psutil

from pytest_rknn.envs import get_envs
from pytest_rknn.envs.recipes import parse_toolkits
from pytest_rknn.toolkit.process_tree import tree_rss
from pytest_rknn.toolkit.protocol import MIN_MEMORY, Limits
from pytest_rknn.toolkit.supervisor import ToolkitWorker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toolkits", default="2.2.0,2.3.0,2.3.2,2.5.0")
    args = parser.parse_args()
    worst = 0
    for env in get_envs(parse_toolkits(args.toolkits)):
        with tempfile.TemporaryDirectory() as root:
            limits = Limits(max_memory=8 << 30)
            worker = ToolkitWorker(env.python, env.label, Path(root), limits)
            worker.start()
            proc = psutil.Process(worker.proc.pid)
            resting = tree_rss(proc, proc.children(recursive=True))
            peak = worker._peak
            worker.stop()
        worst = max(worst, peak)
        mib = f"peak {peak / 2**20:.0f} MiB starting, {resting / 2**20:.0f} MiB at rest"
        print(f"{env.label}: {mib}")
    verdict = "above" if worst < MIN_MEMORY else "NOT above"
    print(f"MIN_MEMORY {MIN_MEMORY >> 20} MiB is {verdict} the largest peak ({worst >> 20} MiB)")


if __name__ == "__main__":
    main()
