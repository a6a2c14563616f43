"""What recording placement costs a conversion: the same jobs quiet and verbose, paired.

``python bench/placement_cost.py [--toolkit 2.5.0] [--rounds 3] [--envs DIR]`` converts the
curated variants that build without torch (the seed report's replica, decode, gqa, mqa, a
2048-token causal prefill, the masks, bshd, manual, mha-block) for rk3566 and rk3588 in fp16
through the project's own worker, each job once with ``verbose=False`` and once with
``verbose=True`` in turn (the order alternating by round), and adds to the verbose one what the
host does with its log (reading it without the debug lines, and the layer table into
``placement``). It prints, per round, the summed wall time of the quiet and of the verbose jobs
(as the host measures a job: from sending it to reading its answer), their ratio and the sums of
``build()`` alone, then the median ratios and the host's parse time. The machine's speed
drifts; pairing each job with itself keeps the ratio meaningful.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_rknn.envs.base import default_root  # noqa: E402
from pytest_rknn.toolkit.pool import WorkerPool  # noqa: E402
from pytest_rknn.toolkit.protocol import Job, Limits  # noqa: E402
from pytest_rknn.toolkit.supervisor import read_log  # noqa: E402
from pytest_rknn.variants.curated import CURATED  # noqa: E402
from pytest_rknn.variants.forms import build_model  # noqa: E402
from pytest_rknn.verdict.placement import read_placement_file  # noqa: E402


def _feeds(model: onnx.ModelProto, rng: np.random.Generator) -> list[np.ndarray]:
    feeds = []
    for i in model.graph.input:
        dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
        if i.type.tensor_type.elem_type == onnx.TensorProto.BOOL:
            feeds.append(np.ones(dims, dtype=bool))
        elif i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16:
            feeds.append(rng.standard_normal(dims).astype(np.float16))
        else:
            feeds.append(rng.standard_normal(dims).astype(np.float32))
    return feeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toolkit", default="2.5.0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--envs", type=Path, default=None)
    args = parser.parse_args()
    root = args.envs or default_root()
    python = root / f"rknn-{args.toolkit}-cp311" / "bin" / "python"
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="placement-cost-") as tmp:
        work = Path(tmp)
        models = []
        for case in CURATED:
            if case.spec.form == "torch-export" or case.spec.form == "onnx-attention":
                continue
            model = build_model(case.spec)
            path = work / f"{case.name}.onnx"
            onnx.save(model, path)
            models.append((case.name, path, _feeds(model, rng)))
        ratios, build_ratios, parse_s = [], [], 0.0
        with WorkerPool(work / "pool", Limits(timeout=600)) as pool:
            pool.add(args.toolkit, python)
            warm = Job.create(models[0][1], "rk3588", work / "jobs", models[0][2])
            pool.run(args.toolkit, warm)
            for round_ in range(args.rounds):
                walls = {False: 0.0, True: 0.0}
                builds = {False: 0.0, True: 0.0}
                for _name, path, feeds in models:
                    for platform in ("rk3566", "rk3588"):
                        order = (False, True) if round_ % 2 == 0 else (True, False)
                        for verbose in order:
                            job = Job.create(path, platform, work / "jobs", feeds, verbose=verbose)
                            job.config = {"float_dtype": "float16"}
                            result = pool.run(args.toolkit, job)
                            walls[verbose] += result.timings.get("wall", 0.0)
                            builds[verbose] += result.timings.get("build", 0.0)
                            if verbose:
                                start = time.perf_counter()
                                read_log(job.log)
                                placement = read_placement_file(job.log)
                                elapsed = time.perf_counter() - start
                                walls[True] += elapsed
                                parse_s += elapsed
                                if "error" in placement and result.ok:
                                    print(f"  {_name} {platform}: {placement['error']}")
                ratio = walls[True] / walls[False]
                ratios.append(ratio)
                build_ratios.append(builds[True] / builds[False])
                print(
                    f"round {round_ + 1}: {2 * len(models)} jobs each way, quiet "
                    f"{walls[False]:.2f} s, verbose+placement {walls[True]:.2f} s, ratio "
                    f"{ratio:.3f}; build() alone {builds[False]:.2f} s vs {builds[True]:.2f} s",
                    flush=True,
                )
    print(f"median ratio verbose/quiet: {statistics.median(ratios):.3f} over {len(ratios)} rounds")
    print(f"median ratio of build() alone: {statistics.median(build_ratios):.3f}")
    print(f"host time reading logs and placement: {parse_s:.3f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
