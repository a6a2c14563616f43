"""Reference outputs: a float64 numpy model of the spec, and onnxruntime's run of a model.

``reference_outputs`` computes the spec's mathematics in float64 from the inputs as given
(already rounded to the model's dtype); ``onnxruntime_outputs`` runs the built ONNX model on
the CPU provider; ``float16_outputs`` runs it once more with every float computed in float16
(onnxruntime's own ``convert_float_to_float16``, inputs and outputs kept in their types): what
float16 arithmetic alone does to the model, the measure fp16 bounds scale with. All return the
model's outputs as a list, in output order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from .forms import mha_weights
from .spec import VariantSpec


def _split(x: np.ndarray, heads: int) -> np.ndarray:
    b, length, width = x.shape
    return x.reshape(b, length, heads, width // heads).transpose(0, 2, 1, 3)


def _softmax_in_place(scores: np.ndarray) -> np.ndarray:
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def _attention(spec: VariantSpec, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, float, float]:
    """(output, max |scaled score|, max |value|), all in float64.

    The scores are masked and turned into probabilities in place: a long sequence's score
    matrix (268 MB in float64 at 8 heads x 2048 x 2048) exists once, not six times, and every
    value is the one the same operations on fresh arrays give."""
    missing = {"q", "k", "v", *(["mask"] if spec.mask_is_input else [])} - set(inputs)
    if missing:
        raise ValueError(f"inputs lack {', '.join(sorted(missing))}: use make_inputs(spec, seed)")
    q, k, v = (inputs[n].astype(np.float64) for n in ("q", "k", "v"))
    weights = None
    if spec.form == "mha-block":
        weights = {n: w.astype(np.float64) for n, w in mha_weights(spec).items()}
        q = q @ weights["w_q"] + weights["b_q"]
        k = k @ weights["w_k"] + weights["b_k"]
        v = v @ weights["w_v"] + weights["b_v"]
    if spec.layout == "bshd":
        q = _split(q, spec.num_heads)
        k, v = _split(k, spec.num_kv_heads), _split(v, spec.num_kv_heads)
    k = np.repeat(k, spec.kv_groups, axis=1)
    v = np.repeat(v, spec.kv_groups, axis=1)
    scores = q @ k.swapaxes(-1, -2)
    scores *= spec.effective_scale
    peak_score = float(max(scores.max(), -scores.min()))
    if spec.mask == "causal":
        allowed = np.tril(np.ones((spec.q_len, spec.kv_len), dtype=bool))
        np.copyto(scores, -np.inf, where=~allowed)
    elif spec.mask == "key-padding":
        np.copyto(scores, -np.inf, where=~np.asarray(inputs["mask"], dtype=bool))
    elif spec.mask == "additive":
        scores += inputs["mask"].astype(np.float64)
    out = _softmax_in_place(scores) @ v
    if spec.layout == "bshd":
        out = out.transpose(0, 2, 1, 3).reshape(spec.output_shape())
    if weights is not None:
        out = out @ weights["w_o"] + weights["b_o"]
    return out, peak_score, float(np.abs(v).max())


def reference_outputs(spec: VariantSpec, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The spec's output in float64, as a one-element list."""
    return [_attention(spec, inputs)[0]]


def onnxruntime_bound(spec: VariantSpec, inputs: dict[str, np.ndarray]) -> float:
    """The largest max-abs difference accepted between onnxruntime and the reference.

    Rounding of relative size ``u`` (the dtype's unit roundoff) in a score of size ``S``
    moves the softmax weights by about ``u * S`` and the output by that times ``V``, the
    largest value (after projection for ``mha-block``); the bounds allow twice this
    first-order estimate, ``2 * u * (1 + S) * V``:

    - float32 models (``u = 2**-24``): ``max(1e-4 * max(1, max|reference|), 2**-23 * (1 + S)
      * V)``: 1e-4 absolute, or relative to the output's magnitude, unless the scores are
      so large (thousands, from the ``large`` inputs with scale 1) that float32's own
      rounding exceeds it;
    - float16 models (``u = 2**-11``): ``2**-10 * (1 + S) * V``.

    Measured on 2000 drawn ``ci`` variants (all host forms, all input distributions):
    the largest error was 0.21 of the float16 bound; of the float32 bound, 0.07 for unit and
    LayerNorm-like inputs and 0.37 for ``large`` ones.
    """
    out, peak_score, peak_value = _attention(spec, inputs)
    rounding = 1.0 + peak_score
    if spec.dtype == "float32":
        return max(1e-4 * max(1.0, float(np.abs(out).max())), 2.0**-23 * rounding * peak_value)
    return 2.0**-10 * rounding * peak_value


def onnxruntime_outputs(
    model: onnx.ModelProto | bytes | str | Path,
    inputs: dict[str, np.ndarray],
    optimize: bool = True,
) -> list[np.ndarray]:
    """Run ``model`` with onnxruntime's CPU provider on the inputs it declares (``optimize``
    False: none of onnxruntime's graph rewrites)."""
    import onnxruntime

    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(
        model, sess_options=options, providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(f"the model needs input(s) {', '.join(missing)} that were not given")
    return session.run(None, {n: inputs[n] for n in names})


def float16_outputs(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``model`` computed in float16 on onnxruntime's CPU provider (a copy converted by
    ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``).

    Without graph rewrites: the CPU provider computes most float16 ops in float32 between
    Casts, and its extended rewrites remove those Casts, which computes the whole graph in
    float32 (measured: rel_l2 1e-7 against float64 on a causal core, where rounding the output
    alone to float16 costs 2e-4); unrewritten, every op's result is rounded to float16.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    half = convert_float_to_float16(copy, keep_io_types=True, disable_shape_infer=True)
    return onnxruntime_outputs(half, inputs, optimize=False)
