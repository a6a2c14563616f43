"""Small BERT-like ONNX graphs written with onnx.helper, for the tests of users' model inputs.

:func:`bert_like`: ``input_ids`` -> Gather on a (vocab, hidden) table, ``token_type_ids`` ->
Gather, ``position_ids`` -> Gather, their sum ``x``; ``attention_mask`` -> Unsqueeze -> Cast ->
``Sub(1, .)`` -> ``Mul(., -10000)``, the additive mask of one self-attention of ``x`` (scores
scaled by ``scale``) whose output ``y`` is the graph's output. Inputs named in ``drop`` are left
out (their Gather too).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BERT_INPUTS = ("input_ids", "token_type_ids", "attention_mask", "position_ids")


def bert_like(
    vocab: int = 50,
    types: int = 2,
    positions: int = 16,
    hidden: int = 8,
    batch: int | str = 2,
    length: int | str = 6,
    scale: float = 1.0,
    drop: tuple[str, ...] = (),
    seed: int = 0,
) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def table(name: str, rows: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal((rows, hidden)).astype(np.float32), name)

    initializers = [
        table("word_embeddings", vocab),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(-10000.0, np.float32), "large_negative"),
        numpy_helper.from_array(np.array(scale, np.float32), "scale"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "mask_axes"),
        numpy_helper.from_array(np.array([1], np.int64), "head_axis"),
    ]
    nodes = [helper.make_node("Gather", ["word_embeddings", "input_ids"], ["words"])]
    total = "words"
    for name, rows, tensor in (
        ("token_type_ids", types, "types"),
        ("position_ids", positions, "positions"),
    ):
        if name in drop:
            continue
        initializers.append(table(f"{tensor}_table", rows))
        nodes += [
            helper.make_node("Cast", [name], [f"{name}_64"], to=TensorProto.INT64),
            helper.make_node("Gather", [f"{tensor}_table", f"{name}_64"], [tensor]),
            helper.make_node("Add", [total, tensor], [f"{total}_{tensor}"]),
        ]
        total = f"{total}_{tensor}"
    nodes += [
        helper.make_node("Transpose", [total], ["x_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", [total, "x_t"], ["raw_scores"]),
        helper.make_node("Mul", ["raw_scores", "scale"], ["scores3"]),
        helper.make_node("Unsqueeze", ["scores3", "head_axis"], ["scores"]),
    ]
    if "attention_mask" in drop:
        nodes.append(helper.make_node("Identity", ["scores"], ["masked"]))
    else:
        nodes += [
            helper.make_node("Unsqueeze", ["attention_mask", "mask_axes"], ["mask4"]),
            helper.make_node("Cast", ["mask4"], ["mask_float"], to=TensorProto.FLOAT),
            helper.make_node("Sub", ["one", "mask_float"], ["inverted"]),
            helper.make_node("Mul", ["inverted", "large_negative"], ["bias"]),
            helper.make_node("Add", ["scores", "bias"], ["masked"]),
        ]
    nodes += [
        helper.make_node("Softmax", ["masked"], ["probs4"], axis=-1),
        helper.make_node("Squeeze", ["probs4", "head_axis"], ["probs"]),
        helper.make_node("MatMul", ["probs", total], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, [batch, length])
        for name in BERT_INPUTS
        if name not in drop
    ]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, length, hidden])
    graph = helper.make_graph(nodes, "bert_like", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model
