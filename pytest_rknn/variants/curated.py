"""Curated variants: explicit cases that always run, each with the reason it is there.

The seed report gives no shapes; its case uses a common small-transformer attention
(batch 1, 8 heads, 64 tokens, head dim 64, float32 ONNX as torch exports it) and is listed
both as the real TorchScript export (needs a torch interpreter) and as its replica (always
buildable), so the matrix shows the report's graph even where torch is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .families import GQA_FAMILIES, TEXT_FAMILIES, FamilySpec
from .spec import VariantSpec


@dataclass(frozen=True)
class CuratedCase:
    """One curated variant: a short name, the spec, and why it must always run."""

    name: str
    spec: VariantSpec | FamilySpec
    reason: str

    @property
    def id(self) -> str:
        return self.spec.id


BASE_SHAPE: dict[str, object] = {
    "form": "torch-sdpa",
    "batch": 1,
    "num_heads": 8,
    "num_kv_heads": 8,
    "q_len": 64,
    "kv_len": 64,
    "head_dim": 64,
}


def _sdpa(**fields: object) -> VariantSpec:
    """The curated base shape (1 x 8 heads x 64 tokens x 64), torch-sdpa unless ``form`` says."""
    return VariantSpec(**{**BASE_SHAPE, **fields})  # type: ignore[arg-type]


SEED_REPORT = (
    "seed report: torch-exported F.scaled_dot_product_attention(q, k, v) converts for RK3566 "
    "but fails for RK3588 (REGTASK bit width, 'failed to config argb mode layer')"
)

CURATED: tuple[CuratedCase, ...] = (
    CuratedCase(
        "seed-report-torchscript",
        _sdpa(form="torch-export", exporter="torchscript"),
        SEED_REPORT + "; the real TorchScript export",
    ),
    CuratedCase("seed-report-replica", _sdpa(), SEED_REPORT + "; its replica, built without torch"),
    CuratedCase(
        "seed-report-dynamo",
        _sdpa(form="torch-export", exporter="dynamo"),
        "the seed report's module through torch.export (dynamo=True): a different graph",
    ),
    CuratedCase(
        "seed-report-dynamo-opset23",
        _sdpa(form="torch-export", exporter="dynamo-opset23"),
        "the seed report's module as newer torch exports it: one ONNX Attention node",
    ),
    CuratedCase(
        "decode",
        _sdpa(q_len=1, kv_len=512),
        "single-token decode against a 512-token cache: a 1-row softmax",
    ),
    CuratedCase(
        "gqa",
        _sdpa(num_kv_heads=2, mask="causal"),
        "grouped-query attention (4 q heads per kv head) with repeat_kv's Expand/Reshape",
    ),
    CuratedCase(
        "mqa",
        _sdpa(num_kv_heads=1, q_len=1, kv_len=256),
        "multi-query attention in decode: one kv head shared by 8 q heads",
    ),
    CuratedCase(
        "long-sequence",
        _sdpa(q_len=2048, kv_len=2048, mask="causal"),
        "a 2048-token causal prefill: 8 x 2048 x 2048 scores, where register limits bite",
    ),
    CuratedCase(
        "fp16-model",
        _sdpa(dtype="float16", mask="causal"),
        "a float16 ONNX model; torch's export promotes the masked softmax to float32",
    ),
    CuratedCase(
        "key-padding-mask",
        _sdpa(batch=2, mask="key-padding", mask_shape="b11k"),
        "a boolean key-padding mask (B, 1, 1, S): Where(-inf), Softmax, IsNaN guard",
    ),
    CuratedCase(
        "additive-mask",
        _sdpa(batch=2, mask="additive", mask_shape="b1qk"),
        "an additive float mask (B, 1, L, S) as Hugging Face builds it",
    ),
    CuratedCase(
        "bshd-layout",
        _sdpa(layout="bshd"),
        "(B, S, H*D) hidden states with the head split/merge Reshape and Transpose",
    ),
    CuratedCase(
        "manual",
        _sdpa(form="manual", mask="causal"),
        "the vendor-recommended hand decomposition (constant scale and causal mask)",
    ),
    CuratedCase(
        "onnx-attention",
        _sdpa(form="onnx-attention", mask="causal"),
        "the ONNX Attention operator (opset 23)",
    ),
    CuratedCase(
        "mha-block",
        _sdpa(form="mha-block", layout="bshd"),
        "a whole attention layer: Q/K/V/O projections around the attention core",
    ),
)


_FAMILY_REASONS = {
    "bert": "a BERT encoder: the additive mask built from attention_mask inside the graph",
    "vit": "a ViT encoder: Conv patch embedding and a CLS token, no mask",
    "whisper": "a Whisper encoder: Conv front end over mel features, sinusoidal positions",
    "llama": "a LLaMA decoder: grouped-query attention, rotary embeddings, RMSNorm, causal mask",
    "gpt2": "a GPT-2 decoder: fused QKV projection split into heads, causal mask in the graph",
    "t5": "a T5 encoder: relative position buckets, unscaled scores",
}


def _family(family: str, attn: str, exporter: str = "torchscript") -> CuratedCase:
    """A curated whole model: one layer, hidden 64, 4 heads (2 kv heads for llama), 16 tokens,
    peaked attention, a right-padded attention mask where the family takes one."""
    spec = FamilySpec(
        family=family,
        attn=attn,
        hidden=64,
        heads=4,
        kv_heads=2 if family in GQA_FAMILIES else 4,
        seq_len=16,
        mask="pad" if family in TEXT_FAMILIES else "none",
        init="sharp",
        exporter=exporter,
    )
    dynamo = exporter == "dynamo"
    return CuratedCase(
        f"hf-{family}-{attn}" + ("-dynamo" if dynamo else ""),
        spec,
        f"{_FAMILY_REASONS[family]}; transformers' {attn} attention"
        + (", exported by torch.export (dynamo)" if dynamo else ""),
    )


CURATED_FAMILIES: tuple[CuratedCase, ...] = (
    *(_family(f, attn) for f in _FAMILY_REASONS for attn in ("eager", "sdpa")),
    _family("llama", "sdpa", exporter="dynamo"),
    _family("gpt2", "sdpa", exporter="dynamo"),
)


def curated_cases() -> list[CuratedCase]:
    """The curated attention variants, in a fixed order."""
    return list(CURATED)


DYNAMIC_LENGTHS: dict[str, tuple[int, ...]] = {
    "ci": (16, 32, 128),
    "full": (16, 64, 128, 256, 512),
}
"""The lengths a dynamic-length row is served at, per ``--rknn-profile``."""


def _dynamic_family(family: str, lengths: tuple[int, ...]) -> CuratedCase:
    """A curated whole model exported with a free ``seq`` axis and served at ``lengths``
    (one cell, ``dynamic_input`` listing each, as ``--rknn-dims`` makes it)."""
    spec = _family(family, "eager").spec.replace(seq_len=lengths[-1], lengths=lengths)
    return CuratedCase(
        f"hf-{family}-eager-dynamic",
        spec,
        f"{_FAMILY_REASONS[family]}; exported with a free sequence length and served at "
        f"{', '.join(map(str, lengths))} from one conversion",
    )


def curated_families(profile: str = "ci") -> list[CuratedCase]:
    """The curated whole models (the ``hf`` form): each family x attention implementation with
    the TorchScript exporter, two dynamo exports, and one dynamic-length row per text family
    (its lengths by ``profile``, :data:`DYNAMIC_LENGTHS`)."""
    lengths = DYNAMIC_LENGTHS.get(profile, DYNAMIC_LENGTHS["ci"])
    dynamic = [_dynamic_family(f, lengths) for f in _FAMILY_REASONS if f in TEXT_FAMILIES]
    return [*CURATED_FAMILIES, *dynamic]
