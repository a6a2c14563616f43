"""Capture the real verbose build logs the placement parser is tested on.

``python tests/data/placement/capture.py OUT`` converts a small attention core (torch SDPA
replica, causal, b2 h8 s32 d32; and an mha-block with a key-padding mask) for rk3566 and rk3588
with every toolkit version (fp16, int8, hybrid) through the project's own worker with
``verbose=True``, and writes each job's whole log to ``OUT``. ``trim.py`` keeps the tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

from pytest_rknn.envs.base import default_root
from pytest_rknn.toolkit.pool import WorkerPool
from pytest_rknn.toolkit.protocol import Job, Limits
from pytest_rknn.variants.forms import build_model
from pytest_rknn.variants.spec import VariantSpec

VERSIONS = ("2.2.0", "2.3.0", "2.3.2", "2.5.0")
SPECS = {
    "sdpa-causal": VariantSpec("torch-sdpa", 2, 8, 8, 32, 32, 32, mask="causal"),
    "mha-padmask": VariantSpec(
        "mha-block", 1, 4, 4, 16, 16, 16, mask="key-padding", mask_shape="b11k", layout="bshd"
    ),
}
W8A8 = {"quantized_dtype": "w8a8"}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    models = {}
    for name, spec in SPECS.items():
        path = out / f"{name}.onnx"
        model = build_model(spec)
        onnx.save(model, path)
        feeds = []
        for i in model.graph.input:
            dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
            if i.type.tensor_type.elem_type == onnx.TensorProto.BOOL:
                feeds.append(np.ones(dims, dtype=bool))
            else:
                feeds.append(rng.standard_normal(dims).astype(np.float32))
        models[name] = (path, feeds)
    root = default_root()
    with WorkerPool(out / "work", Limits(timeout=600)) as pool:
        for version in VERSIONS:
            pool.add(version, root / f"rknn-{version}-cp311" / "bin" / "python")
            for name, (path, feeds) in models.items():
                for platform in ("rk3566", "rk3588"):
                    for quant in ("fp16", "int8", "hybrid"):
                        if name != "sdpa-causal" and quant == "hybrid":
                            continue
                        job = Job.create(path, platform, out / "jobs", feeds, verbose=True)
                        if quant == "fp16":
                            job.config = {"float_dtype": "float16"}
                        else:
                            job.config = dict(W8A8)
                            job.do_quantization = True
                            job.hybrid = quant == "hybrid"
                            job.dataset = str(Path(job.outdir) / "dataset.txt")
                            Path(job.dataset).write_text(
                                " ".join(Path(p).name for p in job.inputs) + "\n"
                            )
                        result = pool.run(version, job)
                        target = out / f"{version}-{platform}-{quant}-{name}.log"
                        target.write_text(result.log)
                        size = Path(result.artifact).stat().st_size if result.artifact else None
                        print(
                            version,
                            platform,
                            quant,
                            name,
                            result.failed_phase,
                            result.fault,
                            result.error,
                            size,
                            flush=True,
                        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
