"""Build, export and run tiny transformers models; run as a script by the exporter's python.

Standalone on purpose: it imports only the standard library, numpy, torch and transformers
(plus onnxscript for ``dynamo=True``) and ``export_registry`` beside it, never pytest-rknn.
Usage::

    python hf_export_script.py JOBS_JSON RESULT_JSON

``JOBS_JSON`` lists ``{"spec": FamilySpec.to_dict(), "inputs": npz, "out": onnx, "eager": npz}``.
Per job the model is built from its config with weights seeded by ``weights_seed``, exported
with the job's exporter (opset 17, the inputs as example arguments, so shapes are static, unless
the spec asks for a free ``seq`` axis with ``dynamic_seq``),
then run eagerly in torch on the same inputs: ``eager`` gets its ``last_hidden_state``. How
peaked the attention is comes from an ``eager``-implementation twin of the model (the same
seed, the same weights) run with ``output_attentions=True``. One result per job (``error``
set when it failed) is written after each job, so a crash still leaves the finished ones.
Nothing is ever downloaded: the hub is switched off before transformers is imported.
"""

import gc
import inspect
import json
import os
import sys
import time

SHARP = {"initializer_range": 0.2}
SHARP_T5 = {"initializer_factor": 2.0}
CAUSAL = ("llama", "gpt2")


def config_of(spec, transformers, attn):
    t = transformers
    h, heads, kv, length = spec["hidden"], spec["heads"], spec["kv_heads"], spec["seq_len"]
    layers, family, sharp = spec["layers"], spec["family"], spec["init"] == "sharp"
    common = {"attn_implementation": attn}
    ffn = 2 * h
    positions = max(64, length)
    if family == "bert":
        return t.BertConfig(
            vocab_size=spec["vocab"],
            hidden_size=h,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=ffn,
            max_position_embeddings=positions,
            **common,
            **(SHARP if sharp else {}),
        )
    if family == "vit":
        side = spec["patch"] * int(round(length**0.5))
        return t.ViTConfig(
            hidden_size=h,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=ffn,
            image_size=side,
            patch_size=spec["patch"],
            num_channels=3,
            **common,
            **(SHARP if sharp else {}),
        )
    if family == "whisper":
        return t.WhisperConfig(
            vocab_size=spec["vocab"],
            d_model=h,
            encoder_layers=layers,
            decoder_layers=1,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
            encoder_ffn_dim=ffn,
            decoder_ffn_dim=ffn,
            num_mel_bins=spec["mel_bins"],
            max_source_positions=length,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
            **common,
            **({"init_std": SHARP["initializer_range"]} if sharp else {}),
        )
    if family == "llama":
        return t.LlamaConfig(
            vocab_size=spec["vocab"],
            hidden_size=h,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            intermediate_size=ffn,
            max_position_embeddings=positions,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            **common,
            **(SHARP if sharp else {}),
        )
    if family == "gpt2":
        return t.GPT2Config(
            vocab_size=spec["vocab"],
            n_embd=h,
            n_layer=layers,
            n_head=heads,
            n_positions=positions,
            bos_token_id=1,
            eos_token_id=2,
            **common,
            **(SHARP if sharp else {}),
        )
    if family == "t5":
        return t.T5Config(
            vocab_size=spec["vocab"],
            d_model=h,
            d_kv=h // heads,
            d_ff=ffn,
            num_layers=layers,
            num_heads=heads,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
            **common,
            **(SHARP_T5 if sharp else {}),
        )
    raise ValueError(f"unknown family {family!r}")


def build(spec, torch, transformers, attn):
    config = config_of(spec, transformers, attn)
    torch.manual_seed(spec["weights_seed"])
    family = spec["family"]
    if family == "bert":
        model = transformers.BertModel(config, add_pooling_layer=False)
    elif family == "vit":
        model = transformers.ViTModel(config, add_pooling_layer=False)
    elif family == "whisper":
        model = transformers.WhisperModel(config).get_encoder()
    elif family == "llama":
        model = transformers.LlamaModel(config)
    elif family == "gpt2":
        model = transformers.GPT2Model(config)
    else:
        model = transformers.T5EncoderModel(config)
    return model.eval()


def wrapper(model, names, torch):
    accepts = inspect.signature(model.forward).parameters
    extra = {"use_cache": False} if "use_cache" in accepts else {}

    class LastHidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            out = self.model(**dict(zip(names, args, strict=True)), return_dict=True, **extra)
            return out.last_hidden_state

    return LastHidden().eval()


def attention_peak(spec, feeds, torch, transformers):
    """Mean over layers, batch rows, heads and attending positions of the largest attention
    probability, and the same figure for uniform attention over the allowed keys."""
    twin = build(spec, torch, transformers, "eager")
    with torch.no_grad():
        out = twin(**feeds, output_attentions=True, return_dict=True)
    probs = [a.double() for a in (out.attentions or ()) if a is not None]
    if not probs:
        return None
    stacked = torch.stack(probs)
    length = stacked.shape[-1]
    mask = feeds.get("attention_mask")
    batch = stacked.shape[1]
    keys = mask.double() if mask is not None else torch.ones(batch, length, dtype=torch.double)
    if spec["family"] in CAUSAL:
        keys = keys[:, None, :] * torch.ones(length, length, dtype=torch.double).tril()
    else:
        keys = keys[:, None, :].expand(batch, length, length)
    allowed = keys.sum(-1).clamp(min=1)[None, :, None, :].expand(stacked.shape[:-1])
    rows = torch.ones(stacked.shape[:-1], dtype=torch.bool)
    if mask is not None:
        rows = mask.bool()[None, :, None, :].expand(stacked.shape[:-1])
    peak = stacked.max(-1).values[rows].mean()
    uniform = (1.0 / allowed)[rows].mean()
    return {"peak": round(float(peak), 6), "uniform": round(float(uniform), 6), "source": "torch"}


def dynamic_axes(spec, names):
    """With ``dynamic_seq`` in the spec (a TorchScript export), the token inputs' length axis
    is left free as ``seq``; otherwise nothing (static shapes)."""
    if not spec.get("dynamic_seq"):
        return {}
    return {"dynamic_axes": {n: {1: "seq"} for n in names} | {"out": {1: "seq"}}}


def export_one(job, torch, transformers, numpy):
    spec = job["spec"]
    with numpy.load(job["inputs"]) as data:
        arrays = {name: data[name] for name in data.files}
    names = list(spec["input_names"])
    args = tuple(torch.from_numpy(arrays[n]) for n in names)
    model = build(spec, torch, transformers, spec["attn"])
    module = wrapper(model, names, torch)
    started = time.monotonic()
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            job["out"],
            input_names=names,
            output_names=["out"],
            opset_version=17,
            dynamo=spec["exporter"] == "dynamo",
            **dynamic_axes(spec, names),
        )
    seconds = time.monotonic() - started
    with torch.no_grad():
        eager = module(*args).numpy()
    numpy.savez(job["eager"], out=eager)
    feeds = dict(zip(names, args, strict=True))
    return {
        "opset": 17,
        "seconds": round(seconds, 3),
        "attention": attention_peak(spec, feeds, torch, transformers),
    }


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
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import warnings

    warnings.filterwarnings("ignore")
    import numpy
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

    try:
        import transformers
    except ImportError as exc:
        version = "missing"
        failure = f"transformers cannot be imported here: {exc}"
    else:
        version, failure = transformers.__version__, None
    results = []
    for job in jobs:
        result = {"torch_version": torch.__version__, "transformers_version": version}
        try:
            if failure:
                raise RuntimeError(failure)
            result.update(export_one(job, torch, transformers, numpy))
        except Exception as exc:
            text = str(exc).strip().splitlines()
            result["error"] = f"{type(exc).__name__}: {(text[0] if text else '')[:300]}"
            result["machine"] = machine_failure(exc)
        results.append(result)
        with open(result_path, "w") as fh:
            json.dump(results, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
