"""Export one variant with the real torch exporter; run as a script by a torch interpreter.

Standalone on purpose: it imports only the standard library, torch (plus onnxscript,
which torch's ``dynamo=True`` exporter needs) and ``export_registry`` beside it, so any
toolkit environment can run it without pytest-rknn installed. Usage::

    python torch_export_script.py JOBS_JSON RESULT_JSON

``JOBS_JSON`` lists ``{"spec": VariantSpec.to_dict(), "out": path, "exporter": name}``; one
result per job (``error`` set when that export failed) is written after each job, so a
crash still leaves the finished ones. One torch import serves the whole batch.

The module mirrors how models call ``F.scaled_dot_product_attention``: ``bshd`` inputs are
split into heads with ``reshape`` + ``transpose(1, 2)`` and merged back afterwards; grouped
kv heads are repeated the way Hugging Face's ``repeat_kv`` does (torch's TorchScript
exporter cannot export ``enable_gqa=True``). The result JSON records the torch version.
"""

import gc
import json
import sys
import time


def build_module(spec, torch):
    F = torch.nn.functional
    b, h, hkv, d = spec["batch"], spec["num_heads"], spec["num_kv_heads"], spec["head_dim"]
    lq, lk = spec["q_len"], spec["kv_len"]
    groups = h // hkv
    bshd = spec["layout"] == "bshd"
    causal = spec["mask"] == "causal"
    scale = spec["scale"]

    class Sdpa(torch.nn.Module):
        def forward(self, q, k, v, mask=None):
            if bshd:
                q = q.reshape(b, lq, h, d).transpose(1, 2)
                k = k.reshape(b, lk, hkv, d).transpose(1, 2)
                v = v.reshape(b, lk, hkv, d).transpose(1, 2)
            if groups > 1:
                k = k[:, :, None, :, :].expand(b, hkv, groups, lk, d).reshape(b, h, lk, d)
                v = v[:, :, None, :, :].expand(b, hkv, groups, lk, d).reshape(b, h, lk, d)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=causal, scale=scale
            )
            if bshd:
                out = out.transpose(1, 2).reshape(b, lq, h * d)
            return out

    return Sdpa().eval()


def example_inputs(spec, torch):
    dtype = {"float32": torch.float32, "float16": torch.float16}[spec["dtype"]]
    b, h, hkv, d = spec["batch"], spec["num_heads"], spec["num_kv_heads"], spec["head_dim"]
    lq, lk = spec["q_len"], spec["kv_len"]
    if spec["layout"] == "bshd":
        shapes = [(b, lq, h * d), (b, lk, hkv * d), (b, lk, hkv * d)]
    else:
        shapes = [(b, h, lq, d), (b, hkv, lk, d), (b, hkv, lk, d)]
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    names = ["q", "k", "v"]
    if spec["mask"] in ("key-padding", "additive"):
        sizes = {"b": b, "h": h, "q": lq, "k": lk}
        mshape = tuple(sizes.get(c, 1) for c in spec["mask_shape"])
        if spec["mask"] == "key-padding":
            args.append(torch.ones(mshape, dtype=torch.bool))
        else:
            args.append(torch.zeros(mshape, dtype=dtype))
        names.append("mask")
    return tuple(args), names


def export_one(spec, out_path, exporter, torch):
    module = build_module(spec, torch)
    args, names = example_inputs(spec, torch)
    opset = 23 if exporter == "dynamo-opset23" else 17
    started = time.monotonic()
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            out_path,
            input_names=names,
            output_names=["out"],
            opset_version=opset,
            dynamo=exporter != "torchscript",
        )
    return {"opset": opset, "seconds": round(time.monotonic() - started, 3)}


def machine_failure(exc, depth=0):
    """Whether the machine failed the export (an OSError or MemoryError, raised or wrapped)."""
    if exc is None or depth > 20:
        return False
    cause = exc.__cause__ or exc.__context__
    return isinstance(exc, (OSError, MemoryError)) or machine_failure(cause, depth + 1)


def main(argv):
    jobs_path, result_path = argv[1:3]
    with open(jobs_path) as fh:
        jobs = json.load(fh)
    import torch

    # Small modules, traced: a second thread only spins, on a core a toolkit needs; and the
    # collector need not walk torch's own objects again and again (4 of 18 CPU s, perf), nor
    # keep a batch's garbage when the export server runs the next.
    torch.set_num_threads(1)
    if not gc.get_freeze_count():
        gc.freeze()
    try:  # beside this script; not on sys.path under -P / PYTHONSAFEPATH: then no reuse
        from export_registry import reuse_torchlib_registry
    except ImportError:
        pass
    else:
        reuse_torchlib_registry()
    results = []
    for job in jobs:
        result = {"torch_version": torch.__version__, "exporter": job["exporter"]}
        try:
            result.update(export_one(job["spec"], job["out"], job["exporter"], torch))
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
            result["machine"] = machine_failure(exc)
        results.append(result)
        with open(result_path, "w") as fh:
            json.dump(results, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
